"""spot checks: automated enquiries also sent to people, the live precision monitor's labels (issue 13)

Revision ID: 0016
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spot_checks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("enquiry_id", sa.String(32), sa.ForeignKey("enquiries.id"), nullable=False, unique=True),
        sa.Column("task", sa.String(80), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("intent", sa.String(80), nullable=False),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("selected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_intent", sa.String(80), nullable=True),
        sa.Column("reviewed_by", sa.String(100), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("correct", sa.Boolean(), nullable=True),
    )
    op.create_index("ix_spot_task_selected", "spot_checks", ["task", "selected_at"])
    op.create_index("ix_spot_task_reviewed", "spot_checks", ["task", "reviewed_at"])


def downgrade() -> None:
    op.drop_index("ix_spot_task_reviewed", table_name="spot_checks")
    op.drop_index("ix_spot_task_selected", table_name="spot_checks")
    op.drop_table("spot_checks")
