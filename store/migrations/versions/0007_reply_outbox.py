"""reply_outbox (replies sent over SMTP) and sla_timers.touch_source (where the first touch came from)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reply_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=120), nullable=False),
        sa.Column("enquiry_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("template", sa.String(length=80), nullable=True),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=500), nullable=False),
        sa.Column("in_reply_to", sa.String(length=500), nullable=True),
        sa.Column("reference_ids", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_doubt", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["enquiry_id"], ["enquiries.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("reply_outbox") as batch:
        batch.create_index("ix_reply_outbox_enquiry_id", ["enquiry_id"], unique=False)
        batch.create_index("ix_reply_outbox_status_next", ["status", "next_attempt_at"], unique=False)
    with op.batch_alter_table("sla_timers") as batch:
        batch.add_column(sa.Column("touch_source", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sla_timers") as batch:
        batch.drop_column("touch_source")
    with op.batch_alter_table("reply_outbox") as batch:
        batch.drop_index("ix_reply_outbox_status_next")
        batch.drop_index("ix_reply_outbox_enquiry_id")
    op.drop_table("reply_outbox")
