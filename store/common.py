"""Small SQL helpers shared by the repository modules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.tables import Base


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def insert_ignore(
    session: Session, table: type[Base], rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """Insert rows, silently keeping the existing row on a unique conflict; returns rows inserted.

    This is what makes re-runs safe: every natural key (source record, idempotency key, timer kind)
    is a unique constraint, and a second insert of the same key is a no-op.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    core_table = table.__table__
    key_columns = [core_table.c[name] for name in conflict]  # type: ignore[attr-defined]
    statement = insert(core_table).on_conflict_do_nothing(index_elements=list(conflict)).returning(*key_columns)
    # Core, not the ORM's bulk path: several times faster for thousands of rows. RETURNING with
    # executemany ("insertmanyvalues") reports exactly the rows that went in.
    return len(session.connection().execute(statement, list(rows)).all())


def for_update_skip_locked(statement: sa.Select[Any], session: Session) -> sa.Select[Any]:
    """Lock the selected rows so another worker skips them (PostgreSQL); SQLite has one writer anyway."""
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    return statement
