"""Counters that /metrics and `triage status` read instead of counting the tables on every scrape.

Each *family* counts rows of one table by a few of their columns (enquiries by lane, queue and intent;
review items by queue and status; ...). Database triggers (migration 0017) keep them: every INSERT,
DELETE and UPDATE of a counted column appends a delta row (-1 for the old key, +1 for the new) to
`counter_deltas`, in the transaction that made the change. So every path that changes a row (the
pipeline, the review pages, the SLA watch, erasure, a bulk load in SQL) is counted, and a rolled-back
batch takes its deltas with it.

Deltas are only ever inserted, never updated in place: concurrent workers on PostgreSQL never wait on
one hot counter row and never deadlock over two. `fold` moves the deltas into `counters` (one row per
family and key) in a short transaction of its own; the intake run calls it after each pass. A read
sums `counters` and whatever deltas are not folded yet, so it is exact whether or not a fold ran.

`recount` rebuilds everything from the tables (`triage db recount`); `recomputed` computes the same
figures from the tables without writing, which the tests compare with `current`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from store.tables import Counter, CounterDelta

# The bucket edges of the model-confidence histogram (`triage_model_confidence`). The triggers bin
# each enquiry into the smallest edge at or above its confidence, so changing these needs a migration
# that replaces the triggers, then `triage db recount`.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
OVERFLOW_BUCKET = "+Inf"
# PostgreSQL advisory-lock key of fold and recount (any constant unique to this purpose).
ADVISORY_KEY = 7_150_017


def _confidence_bucket(column: str) -> str:
    cases = " ".join(f"WHEN {column} <= {edge!r} THEN '{edge!r}'" for edge in CONFIDENCE_BUCKETS)
    return f"CASE {cases} ELSE '{OVERFLOW_BUCKET}' END"


@dataclass(frozen=True)
class Family:
    """One family of counters: rows of `table` counted by up to three key expressions.

    Key and amount expressions are SQL over the row's columns, written with `{row}.` before each
    column so the same text serves the triggers (`NEW.`/`OLD.`) and the recount (the table's name).
    `where` limits which rows count; `amount` is summed beside the count (the confidence sum).
    """

    name: str
    table: str
    keys: tuple[str, ...]
    where: str | None = None
    amount: str | None = None

    def key_sql(self, row: str) -> list[str]:
        keys = [f"COALESCE(CAST({key.format(row=row)} AS VARCHAR(200)), '')" for key in self.keys]
        return keys + ["''"] * (3 - len(keys))

    def amount_sql(self, row: str) -> str:
        return f"CAST({self.amount.format(row=row)} AS FLOAT)" if self.amount else "0.0"

    def where_sql(self, row: str) -> str:
        return self.where.format(row=row) if self.where else "1 = 1"

    def columns(self) -> list[str]:
        """The table's columns this family reads: an UPDATE touching none of them changes nothing."""
        text = " ".join([*self.keys, self.where or "", self.amount or ""])
        return sorted({part.split()[0].strip("(),") for part in text.split("{row}.")[1:]})


FAMILIES: tuple[Family, ...] = (
    Family("raw_records", "raw_records", ("{row}.channel", "{row}.status")),
    Family("enquiries", "enquiries", ("{row}.lane", "{row}.queue", "{row}.intent")),
    Family(
        "confidence",
        "enquiries",
        (_confidence_bucket("{row}.confidence"),),
        where="{row}.model_version <> 'rule:honeypot'",
        amount="{row}.confidence",
    ),
    Family("review_items", "review_items", ("{row}.queue", "{row}.status")),
    Family("sla_timers", "sla_timers", ("{row}.kind", "{row}.status")),
    Family("crm_outbox", "crm_outbox", ("{row}.operation", "{row}.status")),
)
FAMILY_NAMES = tuple(family.name for family in FAMILIES)


# --- the triggers (used by migration 0017) ------------------------------------------------------------


def _delta_insert(family: Family, row: str, sign: int) -> str:
    keys = ", ".join(family.key_sql(row))
    amount = family.amount_sql(row)
    return (
        "INSERT INTO counter_deltas (family, k1, k2, k3, n, amount) "
        f"SELECT '{family.name}', {keys}, {sign}, {sign} * {amount} WHERE {family.where_sql(row)};"
    )


def _changed(family: Family, *, dialect: str) -> str:
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    return " OR ".join(f"OLD.{column} {differs} NEW.{column}" for column in family.columns())


def _tables() -> dict[str, list[Family]]:
    by_table: dict[str, list[Family]] = defaultdict(list)
    for family in FAMILIES:
        by_table[family.table].append(family)
    return dict(by_table)


def trigger_ddl(dialect: str) -> list[str]:
    """CREATE statements of every counting trigger (and, on PostgreSQL, their functions)."""
    statements: list[str] = []
    for table, families in _tables().items():
        if dialect == "postgresql":
            updates = "\n".join(
                f"    IF {_changed(f, dialect=dialect)} THEN\n"
                f"      {_delta_insert(f, 'OLD', -1)}\n      {_delta_insert(f, 'NEW', 1)}\n    END IF;"
                for f in families
            )
            statements.append(
                f"CREATE OR REPLACE FUNCTION count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                "BEGIN\n"
                "  IF TG_OP = 'INSERT' THEN\n"
                + "\n".join(f"    {_delta_insert(f, 'NEW', 1)}" for f in families)
                + "\n  ELSIF TG_OP = 'DELETE' THEN\n"
                + "\n".join(f"    {_delta_insert(f, 'OLD', -1)}" for f in families)
                + f"\n  ELSE\n{updates}\n  END IF;\n  RETURN NULL;\nEND $$"
            )
            columns = ", ".join(sorted({c for f in families for c in f.columns()}))
            statements.append(
                f"CREATE TRIGGER count_{table} AFTER INSERT OR DELETE OR UPDATE OF {columns} "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION count_{table}()"
            )
            continue
        statements.append(
            f"CREATE TRIGGER count_{table}_insert AFTER INSERT ON {table} BEGIN\n"
            + "\n".join(_delta_insert(f, "NEW", 1) for f in families)
            + "\nEND"
        )
        statements.append(
            f"CREATE TRIGGER count_{table}_delete AFTER DELETE ON {table} BEGIN\n"
            + "\n".join(_delta_insert(f, "OLD", -1) for f in families)
            + "\nEND"
        )
        for f in families:
            statements.append(
                f"CREATE TRIGGER count_{f.name}_update AFTER UPDATE OF {', '.join(f.columns())} "
                f"ON {table} WHEN {_changed(f, dialect=dialect)} BEGIN\n"
                f"{_delta_insert(f, 'OLD', -1)}\n{_delta_insert(f, 'NEW', 1)}\nEND"
            )
    return statements


def drop_trigger_ddl(dialect: str) -> list[str]:
    statements: list[str] = []
    for table, families in _tables().items():
        if dialect == "postgresql":
            statements.append(f"DROP TRIGGER IF EXISTS count_{table} ON {table}")
            statements.append(f"DROP FUNCTION IF EXISTS count_{table}()")
            continue
        statements.append(f"DROP TRIGGER IF EXISTS count_{table}_insert")
        statements.append(f"DROP TRIGGER IF EXISTS count_{table}_delete")
        statements.extend(f"DROP TRIGGER IF EXISTS count_{f.name}_update" for f in families)
    return statements


# --- reading ------------------------------------------------------------------------------------------

Figures = dict[str, dict[tuple[str, str, str], tuple[int, float]]]


def figures(session: Session, names: Sequence[str] = FAMILY_NAMES) -> Figures:
    """Counts (and summed amounts) per family and key: folded counters plus deltas not folded yet.

    Keys whose count is zero are left out (a queue emptied by erasure has no backlog to show).
    """
    combined = sa.union_all(
        sa.select(Counter.family, Counter.k1, Counter.k2, Counter.k3, Counter.n, Counter.amount).where(
            Counter.family.in_(names)
        ),
        sa.select(
            CounterDelta.family,
            CounterDelta.k1,
            CounterDelta.k2,
            CounterDelta.k3,
            CounterDelta.n,
            CounterDelta.amount,
        ).where(CounterDelta.family.in_(names)),
    ).subquery()
    statement = sa.select(
        combined.c.family,
        combined.c.k1,
        combined.c.k2,
        combined.c.k3,
        sa.func.sum(combined.c.n),
        sa.func.sum(combined.c.amount),
    ).group_by(combined.c.family, combined.c.k1, combined.c.k2, combined.c.k3)
    result: Figures = {name: {} for name in names}
    for family, k1, k2, k3, n, amount in session.execute(statement):
        if int(n or 0):
            result[family][(k1, k2, k3)] = (int(n), float(amount or 0.0))
    return result


def counts(session: Session, name: str) -> dict[tuple[str, str, str], int]:
    """One family's counts by key."""
    return {key: n for key, (n, _) in figures(session, [name])[name].items()}


# --- recomputing from the tables ----------------------------------------------------------------------


def _recount_select(family: Family) -> str:
    keys = family.key_sql(family.table)
    return (
        f"SELECT '{family.name}' AS family, {keys[0]} AS k1, {keys[1]} AS k2, {keys[2]} AS k3, "
        f"COUNT(*) AS n, COALESCE(SUM({family.amount_sql(family.table)}), 0.0) AS amount "
        f"FROM {family.table} WHERE {family.where_sql(family.table)} GROUP BY 2, 3, 4"
    )


def recomputed(session: Session, names: Sequence[str] = FAMILY_NAMES) -> Figures:
    """The same figures as `figures`, counted from the tables (slow: a pass over each table)."""
    result: Figures = {name: {} for name in names}
    for family in FAMILIES:
        if family.name not in names:
            continue
        for _, k1, k2, k3, n, amount in session.execute(sa.text(_recount_select(family))):
            result[family.name][(k1, k2, k3)] = (int(n), float(amount or 0.0))
    return result


def differences(kept: Figures, truth: Figures, *, tolerance: float = 1e-6) -> list[str]:
    """Where two sets of figures disagree: counts exactly, summed amounts within `tolerance` (a float
    sum depends on the order it was added in)."""
    found = []
    for name in sorted(set(kept) | set(truth)):
        ours, theirs = kept.get(name, {}), truth.get(name, {})
        for key in sorted(set(ours) | set(theirs)):
            (n, amount), (m, other) = ours.get(key, (0, 0.0)), theirs.get(key, (0, 0.0))
            if n != m or abs(amount - other) > tolerance * max(1.0, abs(other)):
                found.append(f"{name} {key}: kept {n} ({amount:g}), tables {m} ({other:g})")
    return found


def backfill(connection: Connection | Session) -> None:
    """Fill `counters` from the tables (the migration's backfill; `recount` after emptying them)."""
    for family in FAMILIES:
        connection.execute(
            sa.text(f"INSERT INTO counters (family, k1, k2, k3, n, amount) {_recount_select(family)}")
        )


def recount(session: Session) -> dict[str, int]:
    """Rebuild every counter from the tables; returns the keys per family. Commits.

    On SQLite the first write takes the database's one write lock, so nothing changes underneath. On
    PostgreSQL the counting runs in one REPEATABLE READ snapshot, holding the fold lock: rows committed
    after that snapshot have deltas the recount neither deletes nor counts, so they stay exact.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    session.rollback()
    if postgresql:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
    session.execute(sa.delete(CounterDelta))
    session.execute(sa.delete(Counter))
    backfill(session)
    session.commit()
    return {name: len(keys) for name, keys in figures(session).items()}


# --- folding deltas into counters ---------------------------------------------------------------------


def fold(session: Session) -> int:
    """Move the deltas into `counters`; returns how many were folded. Commits.

    PostgreSQL: one statement deletes the deltas and adds what it deleted, so a delta committed by
    another transaction meanwhile is either in both halves or in neither; a fold already running
    elsewhere makes this one a no-op. SQLite: one writer at a time, and later deltas have larger ids.
    """
    if session.get_bind().dialect.name == "postgresql":
        locked = session.scalar(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY})
        if not locked:
            session.rollback()
            return 0
        moved = session.execute(
            sa.text(
                "WITH moved AS (DELETE FROM counter_deltas RETURNING family, k1, k2, k3, n, amount), "
                "summed AS (SELECT family, k1, k2, k3, SUM(n) AS n, SUM(amount) AS amount, "
                "COUNT(*) AS deltas "
                "FROM moved GROUP BY family, k1, k2, k3), "
                "upserted AS (INSERT INTO counters (family, k1, k2, k3, n, amount) "
                "SELECT family, k1, k2, k3, n, amount FROM summed "
                "ON CONFLICT (family, k1, k2, k3) DO UPDATE SET n = counters.n + EXCLUDED.n, "
                "amount = counters.amount + EXCLUDED.amount RETURNING 1) "
                "SELECT COALESCE(SUM(deltas), 0) FROM summed"
            )
        ).scalar_one()
        session.commit()
        return int(moved)
    # Take the write lock first (a no-op write), so the highest id read below is final.
    session.execute(sa.text("UPDATE counters SET n = n WHERE 0 = 1"))
    top = session.scalar(sa.select(sa.func.max(CounterDelta.id)))
    if top is None:
        session.commit()
        return 0
    session.execute(
        sa.text(
            "INSERT INTO counters (family, k1, k2, k3, n, amount) "
            "SELECT family, k1, k2, k3, SUM(n), SUM(amount) FROM counter_deltas WHERE id <= :top "
            "GROUP BY family, k1, k2, k3 "
            "ON CONFLICT (family, k1, k2, k3) DO UPDATE SET n = counters.n + excluded.n, "
            "amount = counters.amount + excluded.amount"
        ),
        {"top": top},
    )
    folded = session.execute(sa.delete(CounterDelta).where(CounterDelta.id <= top)).rowcount
    session.commit()
    return int(folded or 0)
