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
figures from the tables without writing, which the tests compare with `figures`.

Migration 0019 added the families that made every /metrics collector flat: drift's per-day counts of
each model's predicted intents and confidence bins, the reply outbox by kind and state, first touches
by source, review items by owner and team, and the stage seconds of intake runs. A scrape reads every
family in one query (`snapshot`), shared by its collectors.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from store.tables import Counter, CounterDelta

# The bucket edges of the model-confidence histogram (`triage_model_confidence`). The triggers bin
# each enquiry into the smallest edge at or above its confidence, so changing these needs a migration
# that replaces the triggers, then `triage db recount`.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
OVERFLOW_BUCKET = "+Inf"
# Drift's confidence bins: numpy's rule (the training reference's, models/training.drift_reference)
# over these edges, each bin [edge, next edge) named by its lower edge, the last one closed. A reference
# whose edges are all among these (training's 0.0, 0.1, ..., 1.0 are) is answered from the counters.
DRIFT_EDGES = (0.0, *CONFIDENCE_BUCKETS)
OUTSIDE_BIN = "outside"
# PostgreSQL advisory-lock key of fold and recount (any constant unique to this purpose).
ADVISORY_KEY = 7_150_017
# A fold that deleted more deltas than this vacuums `counter_deltas` on PostgreSQL: the dead rows of a
# large fold otherwise cost every counter read a pass over them until autovacuum comes.
VACUUM_AFTER_DELTAS = 10_000


def _confidence_bucket(column: str) -> str:
    cases = " ".join(f"WHEN {column} <= {edge!r} THEN '{edge!r}'" for edge in CONFIDENCE_BUCKETS)
    return f"CASE {cases} ELSE '{OVERFLOW_BUCKET}' END"


def _drift_bin(column: str) -> str:
    lower, last = DRIFT_EDGES[:-1], DRIFT_EDGES[-1]
    cases = [f"WHEN {column} < {DRIFT_EDGES[0]!r} THEN '{OUTSIDE_BIN}'"]
    cases += [
        f"WHEN {column} < {upper!r} THEN '{edge!r}'"
        for edge, upper in zip(lower, DRIFT_EDGES[1:], strict=True)
    ]
    cases.append(f"WHEN {column} <= {last!r} THEN '{lower[-1]!r}'")  # the last bin is closed
    return f"CASE {' '.join(cases)} ELSE '{OUTSIDE_BIN}' END"


# Pseudo-functions in family expressions, spelled per dialect: DAY(col) is the UTC day 'YYYY-MM-DD' of a
# timestamp (SQLite stores UTC text, PostgreSQL a timestamptz); NUM(col, 'key') a number of a JSON object.
_DIALECT_SQL = {
    "sqlite": {
        "DAY": lambda column: f"substr({column}, 1, 10)",
        "NUM": lambda column, key: f"json_extract({column}, '$.{key}')",
        "EACH": lambda column, key: f"json_each({column}, '$.{key}')",
    },
    "postgresql": {
        "DAY": lambda column: f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "NUM": lambda column, key: f"CAST({column} ->> '{key}' AS FLOAT)",
        "EACH": lambda column, key: f"jsonb_each_text({column} -> '{key}')",
    },
}
_PSEUDO = re.compile(r"\b(DAY|NUM|EACH)\(([\w.]+)(?:, '(\w+)')?\)")


def _spelled(text: str, dialect: str) -> str:
    spelling = _DIALECT_SQL["postgresql" if dialect == "postgresql" else "sqlite"]
    return _PSEUDO.sub(lambda m: spelling[m.group(1)](*[g for g in m.groups()[1:] if g]), text)


@dataclass(frozen=True)
class Family:
    """One family of counters: rows of `table` counted by up to three key expressions.

    Key and amount expressions are SQL over the row's columns, written with `{row}.` before each
    column so the same text serves the triggers (`NEW.`/`OLD.`) and the recount (the table's name).
    `where` limits which rows count; `amount` is summed beside the count (the confidence sum).
    `daily`: k1 is a day ('YYYY-MM-DD'), so a reader asks for the days it needs, not every day kept.
    `each`: a JSON object column and key whose entries are counted, one key per entry: in the keys
    and amount, `{each}.key` and `{each}.value` are the entry's (the stage seconds of a run).
    """

    name: str
    table: str
    keys: tuple[str, ...]
    where: str | None = None
    amount: str | None = None
    daily: bool = False
    each: str | None = None

    def _sql(self, text: str, row: str, dialect: str) -> str:
        return _spelled(text.format(row=row, each="entry"), dialect)

    def key_sql(self, row: str, dialect: str) -> list[str]:
        keys = [f"COALESCE(CAST({self._sql(key, row, dialect)} AS VARCHAR(200)), '')" for key in self.keys]
        return keys + ["''"] * (3 - len(keys))

    def amount_sql(self, row: str, dialect: str) -> str:
        return f"CAST({self._sql(self.amount, row, dialect)} AS FLOAT)" if self.amount else "0.0"

    def where_sql(self, row: str, dialect: str) -> str:
        return self._sql(self.where, row, dialect) if self.where else "1 = 1"

    def from_sql(self, row: str, dialect: str) -> str:
        """What the SELECT of a delta reads from: nothing (the row itself), or the row's JSON entries."""
        return f" FROM {self._sql(self.each, row, dialect)} AS entry" if self.each else ""

    def columns(self) -> list[str]:
        """The table's columns this family reads: an UPDATE touching none of them changes nothing."""
        text = " ".join([*self.keys, self.where or "", self.amount or "", self.each or ""])
        return sorted({re.split(r"[\s(),]", part)[0] for part in text.split("{row}.")[1:]})


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
    # Migration 0019. Drift: the predicted intents and the confidence bins of each model, per UTC day of
    # the decision (two families, not one keyed by both: drift compares each marginal on its own).
    Family(
        "drift_intents",
        "enquiries",
        ("DAY({row}.created_at)", "{row}.model_version", "{row}.intent"),
        where="{row}.model_version <> 'rule:honeypot'",
        daily=True,
    ),
    Family(
        "drift_confidence",
        "enquiries",
        ("DAY({row}.created_at)", "{row}.model_version", _drift_bin("{row}.confidence")),
        where="{row}.model_version <> 'rule:honeypot'",
        daily=True,
    ),
    # The reply outbox by kind and state ("retrying": pending again after a failed attempt).
    Family(
        "reply_outbox",
        "reply_outbox",
        (
            "{row}.kind",
            "CASE WHEN {row}.status = 'pending' AND {row}.attempts > 0 THEN 'retrying' ELSE {row}.status END",
        ),
    ),
    Family(
        "first_touches",
        "sla_timers",
        ("{row}.touch_source",),
        where="{row}.kind = 'first_response' AND {row}.touch_source IS NOT NULL",
    ),
    Family("review_owners", "review_items", ("{row}.owner", "{row}.team", "{row}.status")),
    # Intake runs: how many and the enquiries they opened (the amount); the seconds of each stage.
    Family(
        "intake_runs",
        "flow_runs",
        (),
        where="{row}.name = 'intake'",
        amount="NUM({row}.summary, 'enquiries')",
    ),
    Family(
        "stage_seconds",
        "flow_runs",
        ("{each}.key",),
        where="{row}.name = 'intake'",
        amount="{each}.value",
        each="EACH({row}.summary, 'stage_seconds')",
    ),
)
FAMILY_NAMES = tuple(family.name for family in FAMILIES)
DAILY = frozenset(family.name for family in FAMILIES if family.daily)


# --- the triggers (used by migration 0017) ------------------------------------------------------------


def _delta_insert(family: Family, row: str, sign: int, dialect: str) -> str:
    keys = ", ".join(family.key_sql(row, dialect))
    amount = family.amount_sql(row, dialect)
    return (
        "INSERT INTO counter_deltas (family, k1, k2, k3, n, amount) "
        f"SELECT '{family.name}', {keys}, {sign}, {sign} * COALESCE({amount}, 0.0)"
        f"{family.from_sql(row, dialect)} WHERE {family.where_sql(row, dialect)};"
    )


def _changed(family: Family, *, dialect: str) -> str:
    differs = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    return " OR ".join(f"OLD.{column} {differs} NEW.{column}" for column in family.columns())


def _tables(families: Sequence[Family] = FAMILIES) -> dict[str, list[Family]]:
    by_table: dict[str, list[Family]] = defaultdict(list)
    for family in families:
        by_table[family.table].append(family)
    return dict(by_table)


# What migration 0017 created the triggers for: its downgrade and 0019's must name those, not today's.
FAMILIES_0017 = ("raw_records", "enquiries", "confidence", "review_items", "sla_timers", "crm_outbox")
# ... and what 0019 added: a later migration that adds families must not change what 0019 creates.
FAMILIES_0019 = (
    "drift_intents", "drift_confidence", "reply_outbox", "first_touches", "review_owners", "intake_runs",
    "stage_seconds",
)  # fmt: skip


def families_of(names: Sequence[str]) -> list[Family]:
    return [family for family in FAMILIES if family.name in names]


def trigger_ddl(dialect: str, selected: Sequence[Family] = FAMILIES) -> list[str]:
    """CREATE statements of the counting triggers of `selected` families' tables (and, on PostgreSQL,
    their functions): a table's triggers count every selected family of that table."""
    statements: list[str] = []
    for table, families in _tables(selected).items():
        if dialect == "postgresql":
            updates = "\n".join(
                f"    IF {_changed(f, dialect=dialect)} THEN\n"
                f"      {_delta_insert(f, 'OLD', -1, dialect)}\n      {_delta_insert(f, 'NEW', 1, dialect)}\n"
                "    END IF;"
                for f in families
            )
            statements.append(
                f"CREATE OR REPLACE FUNCTION count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                "BEGIN\n"
                "  IF TG_OP = 'INSERT' THEN\n"
                + "\n".join(f"    {_delta_insert(f, 'NEW', 1, dialect)}" for f in families)
                + "\n  ELSIF TG_OP = 'DELETE' THEN\n"
                + "\n".join(f"    {_delta_insert(f, 'OLD', -1, dialect)}" for f in families)
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
            + "\n".join(_delta_insert(f, "NEW", 1, dialect) for f in families)
            + "\nEND"
        )
        statements.append(
            f"CREATE TRIGGER count_{table}_delete AFTER DELETE ON {table} BEGIN\n"
            + "\n".join(_delta_insert(f, "OLD", -1, dialect) for f in families)
            + "\nEND"
        )
        for f in families:
            statements.append(
                f"CREATE TRIGGER count_{f.name}_update AFTER UPDATE OF {', '.join(f.columns())} "
                f"ON {table} WHEN {_changed(f, dialect=dialect)} BEGIN\n"
                f"{_delta_insert(f, 'OLD', -1, dialect)}\n{_delta_insert(f, 'NEW', 1, dialect)}\nEND"
            )
    return statements


def drop_trigger_ddl(dialect: str, selected: Sequence[Family] = FAMILIES) -> list[str]:
    statements: list[str] = []
    for table, families in _tables(selected).items():
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
# Where a scrape leaves its one read of every family (DatabaseCollector): `figures` answers from it.
SNAPSHOT_KEY = "counter_snapshot"


@dataclass(frozen=True)
class Snapshot:
    """Every family's figures, read once; daily families from `days_from` on (None: every day)."""

    days_from: str | None
    figures: Figures


def _columns(table: type[Counter] | type[CounterDelta]) -> tuple[Any, ...]:
    return (table.family, table.k1, table.k2, table.k3, table.n, table.amount)


@functools.lru_cache(maxsize=64)
def _statement(plain: tuple[str, ...], daily: tuple[str, ...]) -> sa.Select[Any]:
    """The read of `plain` families and of `daily` ones from the `days_from` parameter on; built once
    per set of families (SQLAlchemy then reuses its compiled form)."""
    since = sa.bindparam("days_from", type_=sa.String())
    parts = []
    # `counters`: a branch per family, each an index seek on the primary key (SQLite's planner scans
    # the table for a long IN list once most rows are one family's days); daily families from
    # `days_from` on, so the read is a few days' keys whatever the days kept.
    for name in plain:
        parts.append(sa.select(*_columns(Counter)).where(Counter.family == name))
    for name in daily:
        parts.append(sa.select(*_columns(Counter)).where(Counter.family == name, Counter.k1 >= since))
    # `counter_deltas` holds only what the last fold left: one pass over it is short.
    if plain:
        parts.append(sa.select(*_columns(CounterDelta)).where(CounterDelta.family.in_(plain)))
    if daily:
        parts.append(
            sa.select(*_columns(CounterDelta)).where(CounterDelta.family.in_(daily), CounterDelta.k1 >= since)
        )
    combined = sa.union_all(*parts).subquery()
    return sa.select(
        combined.c.family,
        combined.c.k1,
        combined.c.k2,
        combined.c.k3,
        sa.func.sum(combined.c.n),
        sa.func.sum(combined.c.amount),
    ).group_by(combined.c.family, combined.c.k1, combined.c.k2, combined.c.k3)


def _read(session: Session, names: Sequence[str], days_from: str | None) -> Figures:
    plain = tuple(name for name in names if name not in DAILY or days_from is None)
    daily = tuple(name for name in names if name in DAILY and days_from is not None)
    result: Figures = {name: {} for name in names}
    parameters = {"days_from": days_from} if daily else {}
    # Through the connection, not the ORM: plain rows, a few hundred of them.
    for family, k1, k2, k3, n, amount in session.connection().execute(_statement(plain, daily), parameters):
        if int(n or 0):
            result[family][(k1, k2, k3)] = (int(n), float(amount or 0.0))
    return result


def snapshot(session: Session, *, days_from: date | None = None) -> Snapshot:
    """Every family in one query (daily ones from `days_from`): what one scrape's collectors share."""
    since = days_from.isoformat() if days_from is not None else None
    return Snapshot(since, _read(session, FAMILY_NAMES, since))


def figures(
    session: Session, names: Sequence[str] = FAMILY_NAMES, *, days_from: date | None = None
) -> Figures:
    """Counts (and summed amounts) per family and key: folded counters plus deltas not folded yet.

    Keys whose count is zero are left out (a queue emptied by erasure has no backlog to show). Daily
    families are read from `days_from` on when given. Served from the session's scrape snapshot
    (`SNAPSHOT_KEY` in `session.info`) when it holds what is asked for.
    """
    since = days_from.isoformat() if days_from is not None else None
    kept: Snapshot | None = session.info.get(SNAPSHOT_KEY)
    covers = kept is not None and (
        not DAILY & set(names) or kept.days_from is None or (since is not None and since >= kept.days_from)
    )
    if kept is None or not covers:
        return _read(session, names, since)
    result: Figures = {}
    for name in names:
        rows = kept.figures.get(name, {})
        if name in DAILY and since is not None:
            rows = {key: value for key, value in rows.items() if key[0] >= since}
        result[name] = dict(rows)
    return result


def counts(session: Session, name: str) -> dict[tuple[str, str, str], int]:
    """One family's counts by key."""
    return {key: n for key, (n, _) in figures(session, [name])[name].items()}


# --- recomputing from the tables ----------------------------------------------------------------------


def _dialect(connection: Connection | Session) -> str:
    bind = connection.get_bind() if isinstance(connection, Session) else connection
    return bind.dialect.name


def _recount_select(family: Family, dialect: str) -> str:
    row = family.table
    keys = family.key_sql(row, dialect)
    return (
        f"SELECT '{family.name}' AS family, {keys[0]} AS k1, {keys[1]} AS k2, {keys[2]} AS k3, "
        f"COUNT(*) AS n, COALESCE(SUM({family.amount_sql(row, dialect)}), 0.0) AS amount "
        f"FROM {row}{family.from_sql(row, dialect).replace(' FROM ', ', ')} "
        f"WHERE {family.where_sql(row, dialect)} GROUP BY 2, 3, 4"
    )


def recomputed(session: Session, names: Sequence[str] = FAMILY_NAMES) -> Figures:
    """The same figures as `figures`, counted from the tables (slow: a pass over each table)."""
    dialect = _dialect(session)
    result: Figures = {name: {} for name in names}
    for family in FAMILIES:
        if family.name not in names:
            continue
        for _, k1, k2, k3, n, amount in session.execute(sa.text(_recount_select(family, dialect))):
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


def backfill(connection: Connection | Session, names: Sequence[str] = FAMILY_NAMES) -> None:
    """Fill `counters` from the tables (the migrations' backfill; `recount` after emptying them)."""
    dialect = _dialect(connection)
    for family in families_of(names):
        connection.execute(
            sa.text(
                f"INSERT INTO counters (family, k1, k2, k3, n, amount) {_recount_select(family, dialect)}"
            )
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
        if int(moved) > VACUUM_AFTER_DELTAS:
            vacuum_deltas(session)
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


def vacuum_deltas(session: Session) -> None:
    """VACUUM `counter_deltas` on PostgreSQL (a no-op on SQLite, where deleted pages are reused and no
    dead rows are read). A large fold leaves that many dead rows, which every counter read would pass
    over until autovacuum comes (30 ms a read at 849k). VACUUM cannot run in a transaction: its own
    autocommit connection."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM counter_deltas")
