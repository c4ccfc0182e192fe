"""counters for /metrics and `triage status`, kept by triggers, so a scrape costs the same at any size;
an index for the SLA report's period of timers; partial indexes that read the review queue in due order

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store import counters
from store.tables import OPEN_ITEMS, OPEN_QUEUE_INDEXES

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("family", sa.String(length=40), nullable=False),
        sa.Column("k1", sa.String(length=200), nullable=False),
        sa.Column("k2", sa.String(length=200), nullable=False),
        sa.Column("k3", sa.String(length=200), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("family", "k1", "k2", "k3"),
    )
    op.create_table(
        "counter_deltas",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("family", sa.String(length=40), nullable=False),
        sa.Column("k1", sa.String(length=200), nullable=False),
        sa.Column("k2", sa.String(length=200), nullable=False),
        sa.Column("k3", sa.String(length=200), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The SLA report (and its CSV) streams one period's first-response timers in start order.
    op.create_index("ix_timer_kind_started", "sla_timers", ["kind", "started_at"], unique=False)
    # The review queue reads open items in due order per filter: partial indexes over open items only.
    for name, columns in OPEN_QUEUE_INDEXES.items():
        op.create_index(
            f"ix_review_open_{name}",
            "review_items",
            [*columns, "due_at", "id"],
            unique=False,
            sqlite_where=sa.text(OPEN_ITEMS),
            postgresql_where=sa.text(OPEN_ITEMS),
        )
    dialect = op.get_bind().dialect.name
    # The backfill and the triggers run in the migration's one transaction: no change is missed
    # between counting what is there and counting what comes.
    # The families of this revision only: 0019 adds the rest (and replaces these triggers).
    counters.backfill(op.get_bind(), counters.FAMILIES_0017)
    for statement in counters.trigger_ddl(dialect, counters.families_of(counters.FAMILIES_0017)):
        op.execute(statement)


def downgrade() -> None:
    only = counters.families_of(counters.FAMILIES_0017)
    for statement in counters.drop_trigger_ddl(op.get_bind().dialect.name, only):
        op.execute(statement)
    for name in OPEN_QUEUE_INDEXES:
        op.drop_index(f"ix_review_open_{name}", table_name="review_items")
    op.drop_index("ix_timer_kind_started", table_name="sla_timers")
    op.drop_table("counter_deltas")
    op.drop_table("counters")
