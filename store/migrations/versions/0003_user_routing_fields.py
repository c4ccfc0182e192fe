"""users carry what owner routing needs: teams, capacity, weight, time zone, e-mail, CRM user id, away

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("teams", sa.String(length=500), nullable=False, server_default=""))
        batch.add_column(sa.Column("capacity", sa.Integer(), nullable=False, server_default="25"))
        batch.add_column(sa.Column("weight", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC"))
        batch.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("crm_user_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("away", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for column in ("away", "crm_user_id", "email", "timezone", "weight", "capacity", "teams"):
            batch.drop_column(column)
