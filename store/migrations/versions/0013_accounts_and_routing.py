"""accounts and contacts of the local CRM, owner routing (item owner and team, round-robin cursors), language

Revision ID: 0013
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        # Normalised (lower case, no leading www.): the exact-match key, as Domain__c is on Salesforce.
        sa.Column("domain", sa.String(length=253), nullable=False, unique=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("arr", sa.Float(), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=40), nullable=False, server_default=""),
        sa.Column("contacts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "crm_contacts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(length=320), nullable=False, unique=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("crm_accounts.id"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # One row per team: where its round robin stands, shared by every worker (locked while assigning).
    op.create_table(
        "routing_cursors",
        sa.Column("team", sa.String(length=80), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("team", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        # A member's load (open and claimed items they own) is counted on every assignment.
        batch.create_index("ix_review_owner_status", ["owner", "status"], unique=False)
    with op.batch_alter_table("enquiries") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enquiries") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("review_items") as batch:
        batch.drop_index("ix_review_owner_status")
        for column in ("assigned_at", "team", "owner"):
            batch.drop_column(column)
    op.drop_table("routing_cursors")
    op.drop_table("crm_contacts")
    op.drop_table("crm_accounts")
