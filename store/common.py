"""Small SQL helpers shared by the repository modules."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from store.tables import Base

# Whatever reads the time to decide something takes one of these, so tests (and the demo) can set it.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, aware, in UTC: the default `Clock`."""
    return datetime.now(UTC)


class _InsertIgnoringOnSqlite(sa.Insert):
    """`INSERT … ON CONFLICT (conflict) DO NOTHING` that SQLAlchemy compiles once and caches.

    The dialect's own `sqlite.insert(...).on_conflict_do_nothing(...)` opts out of the compiled
    cache (SQLAlchemy 2.0), so every call compiled it afresh: about a tenth of the web process's CPU
    per web hook. Here the conflict target is a class attribute, one subclass per target
    (`_ignoring`), and the class is part of the cache key.
    """

    inherit_cache = True
    conflict: tuple[str, ...] = ()


@compiles(_InsertIgnoringOnSqlite, "sqlite")
def _compile_insert_ignoring(element: _InsertIgnoringOnSqlite, compiler: SQLCompiler, **kw: Any) -> str:
    target = ", ".join(compiler.preparer.quote(name) for name in element.conflict)
    return f"{compiler.visit_insert(element, **kw)} ON CONFLICT ({target}) DO NOTHING"


@functools.cache
def _ignoring(conflict: tuple[str, ...]) -> type[_InsertIgnoringOnSqlite]:
    name = "InsertIgnoring_" + "_".join(conflict)
    return type(name, (_InsertIgnoringOnSqlite,), {"inherit_cache": True, "conflict": conflict})


def insert_ignore(
    session: Session, table: type[Base], rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """Insert rows, silently keeping the existing row on a unique conflict; returns rows inserted.

    This is what makes re-runs safe: every natural key (source record, idempotency key, timer kind)
    is a unique constraint, and a second insert of the same key is a no-op.
    """
    if not rows:
        return 0
    core_table = cast(sa.Table, table.__table__)
    if session.get_bind().dialect.name == "sqlite":
        # The driver's own executemany, which reports the rows it inserted: several times faster than
        # RETURNING, which SQLAlchemy turns into multi-row VALUES statements built in Python.
        ignoring = _ignoring(tuple(conflict))(core_table)
        return int(session.connection().execute(ignoring, list(rows)).rowcount)
    # psycopg reports no row count for a batched insert; RETURNING the keys counts exactly the rows
    # that went in ("insertmanyvalues").
    key_columns = [core_table.c[name] for name in conflict]
    statement = (
        postgresql.insert(core_table)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(*key_columns)
    )
    return len(session.connection().execute(statement, list(rows)).all())


def update_by_id(session: Session, table: type[Base], columns: Sequence[str], rows: Sequence[Any]) -> None:
    """Write `columns` of plain rows (anything with `id` and those attributes) back in one executemany
    UPDATE: for claimed rows kept as plain data instead of ORM objects."""
    if not rows:
        return
    core_table = cast(sa.Table, table.__table__)
    statement = (
        sa.update(core_table)
        .where(core_table.c.id == sa.bindparam("row_id"))
        .values({name: sa.bindparam(f"new_{name}") for name in columns})
    )
    session.execute(
        statement,
        [{"row_id": row.id, **{f"new_{name}": getattr(row, name) for name in columns}} for row in rows],
    )


# SQLite: rows per write transaction for bulk work (the pipeline's batches, the local CRM drain). SQLite
# has one write lock for the whole database; a part of 100 records holds it about 25 ms where a batch
# of 500 held it about 120 ms, and a web hook storing a raw body waits for it (bench/bench_hooks.py).
SQLITE_WRITE_CHUNK = 100


def for_update_skip_locked(
    statement: sa.Select[Any], session: Session, *, sqlite_write_lock: bool = True
) -> sa.Select[Any]:
    """Make a claim query safe with several workers.

    PostgreSQL: lock the selected rows so another worker skips them. SQLite has no row locks, and a
    plain SELECT takes no lock, so two processes could claim the same rows: take the database's
    write lock first (a no-op UPDATE does) and the second claimant waits for the first to commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    if sqlite_write_lock:
        session.execute(sa.text("UPDATE flags SET key = key WHERE 0"))
    return statement


def lock_keys(session: Session, keys: Iterable[str]) -> None:
    """Serialise work on the same natural keys across workers until this transaction ends.

    Two workers deduplicating copies of one mail (stored by two mailboxes) would each miss the other's
    uncommitted enquiry; a transaction-scoped advisory lock per key makes the second wait and then see
    it. Keys are locked in sorted order so two workers cannot deadlock. SQLite has one writer already.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    ordered = sorted(set(keys))
    if ordered:
        session.execute(
            sa.text(
                "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                "FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS ordered_keys"
            ),
            {"keys": ordered},
        )
