"""retention marks, erasure tombstones, and indexes that keep lookups and counts flat as the store grows

Revision ID: 0012
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # When retention emptied a row's body: the row (and what dedupe, the audit and the SLA report read)
    # stays, the bytes go. An index per table finds what is still to prune without a full scan.
    with op.batch_alter_table("raw_records") as batch:
        batch.add_column(sa.Column("payload_pruned_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_raw_prune", ["payload_pruned_at", "imported_at"], unique=False)
        # /metrics counts records by channel and outcome: a covering index, not a pass over the bytes.
        batch.create_index("ix_raw_channel_status", ["channel", "status"], unique=False)
    with op.batch_alter_table("crm_outbox") as batch:
        batch.add_column(sa.Column("payload_pruned_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_outbox_prune", ["payload_pruned_at", "sent_at"], unique=False)
        batch.create_index("ix_outbox_op_status", ["operation", "status"], unique=False)
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("body_pruned_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_enq_prune", ["body_pruned_at", "received_at"], unique=False)
        # Threading looks conversations up by key alone; (source, thread_key) cannot serve that.
        batch.create_index("ix_enq_thread_key_only", ["thread_key"], unique=False)
        batch.create_index("ix_enq_lane", ["lane"], unique=False)
        # Drift reads the active model's last week; the confidence histogram scans this index only.
        batch.create_index(
            "ix_enq_model_created", ["model_version", "created_at", "confidence", "intent"], unique=False
        )
    # The review queue filters by intent: kept on the item (set with the item, changed by a correction)
    # so the filter is one index range instead of a join over every enquiry.
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("intent", sa.String(length=80), nullable=True))
        batch.create_index("ix_review_status_intent_due", ["status", "intent", "due_at"], unique=False)
        batch.create_index("ix_review_status_queue", ["status", "queue"], unique=False)
    op.execute(
        "UPDATE review_items SET intent = "
        "(SELECT enquiries.intent FROM enquiries WHERE enquiries.id = review_items.enquiry_id)"
    )
    with op.batch_alter_table("sla_timers") as batch:
        batch.create_index("ix_timer_kind_status", ["kind", "status"], unique=False)
    with op.batch_alter_table("quarantine") as batch:
        batch.create_index("ix_quarantine_replayed_at", ["replayed_at"], unique=False)
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_hmac", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=100), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("erasures") as batch:
        batch.create_index("ix_erasures_subject_hmac", ["subject_hmac"], unique=False)


def downgrade() -> None:
    op.drop_table("erasures")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_index("ix_quarantine_replayed_at")
    with op.batch_alter_table("sla_timers") as batch:
        batch.drop_index("ix_timer_kind_status")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_index("ix_review_status_queue")
        batch.drop_index("ix_review_status_intent_due")
        batch.drop_column("intent")
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_index("ix_enq_model_created")
        batch.drop_index("ix_enq_lane")
        batch.drop_index("ix_enq_thread_key_only")
        batch.drop_index("ix_enq_prune")
        batch.drop_column("body_pruned_at")
    with op.batch_alter_table("crm_outbox") as batch:
        batch.drop_index("ix_outbox_op_status")
        batch.drop_index("ix_outbox_prune")
        batch.drop_column("payload_pruned_at")
    with op.batch_alter_table("raw_records") as batch:
        batch.drop_index("ix_raw_channel_status")
        batch.drop_index("ix_raw_prune")
        batch.drop_column("payload_pruned_at")
