"""more counters, so every /metrics collector costs the same at any store size: drift per day, model,
intent and confidence bin; the reply outbox by state; first touches by source; review items by owner;
intake runs and their stage seconds. Autovacuum settings for the counter tables on PostgreSQL.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from alembic import op

from store import counters

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

NEW = counters.FAMILIES_0019
AT_0019 = counters.families_of(counters.FAMILIES_0017 + counters.FAMILIES_0019)
# `counter_deltas` is emptied by every fold: vacuum it after a fixed number of dead rows, not a share
# of a table that is nearly always small (the default 20% waits for a share of nothing, then of 849k).
AUTOVACUUM = "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000"


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    # The tables counted by 0017's families get triggers that count every family (their old ones
    # dropped); backfill and triggers in the migration's one transaction, so no change is missed.
    for statement in counters.drop_trigger_ddl(dialect, counters.families_of(counters.FAMILIES_0017)):
        op.execute(statement)
    counters.backfill(bind, NEW)
    for statement in counters.trigger_ddl(dialect, AT_0019):
        op.execute(statement)
    if dialect == "postgresql":
        op.execute(f"ALTER TABLE counter_deltas SET ({AUTOVACUUM})")
        op.execute(
            "ALTER TABLE counters SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000)"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in counters.drop_trigger_ddl(dialect, AT_0019):
        op.execute(statement)
    for statement in counters.trigger_ddl(dialect, counters.families_of(counters.FAMILIES_0017)):
        op.execute(statement)
    names = ", ".join(f"'{name}'" for name in NEW)
    op.execute(f"DELETE FROM counter_deltas WHERE family IN ({names})")
    op.execute(f"DELETE FROM counters WHERE family IN ({names})")
    if dialect == "postgresql":
        op.execute(
            "ALTER TABLE counter_deltas RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)"
        )
        op.execute("ALTER TABLE counters RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)")
