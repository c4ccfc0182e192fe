"""indexes for the Salesforce touch poller and the reply figures in /metrics (issue 17)

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The touch poller maps Salesforce Lead Ids (a Task's WhoId) back to enquiries by the CRM id
    # stored when the lead was written.
    with op.batch_alter_table("crm_outbox") as batch:
        batch.create_index("ix_outbox_crm_id", ["crm_id"], unique=False)
    # /metrics: replies by kind and state, first touches by source, each one index range.
    with op.batch_alter_table("reply_outbox") as batch:
        batch.create_index("ix_reply_outbox_kind_status", ["kind", "status", "attempts"], unique=False)
    with op.batch_alter_table("sla_timers") as batch:
        batch.create_index("ix_timer_kind_source", ["kind", "touch_source"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sla_timers") as batch:
        batch.drop_index("ix_timer_kind_source")
    with op.batch_alter_table("reply_outbox") as batch:
        batch.drop_index("ix_reply_outbox_kind_status")
    with op.batch_alter_table("crm_outbox") as batch:
        batch.drop_index("ix_outbox_crm_id")
