"""Tables of the embedded CRM backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.common import insert_ignore, utcnow
from store.tables import LocalLead, LocalTask


def upsert_leads(session: Session, leads: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Create or update leads by external id in one statement; returns external id → local lead id."""
    if not leads:
        return {}
    now = utcnow()
    # One row per external id (the last write wins): PostgreSQL refuses to update a row twice in one upsert.
    latest = {external_id: fields for external_id, fields in leads}
    rows = [
        {"external_id": external_id, "fields": fields, "created_at": now, "updated_at": now}
        for external_id, fields in latest.items()
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The Core table, not the ORM entity: the ORM's bulk-insert bookkeeping costs ~10% here for nothing.
    new_rows = insert(cast(sa.Table, LocalLead.__table__))
    statement = new_rows.on_conflict_do_update(
        index_elements=["external_id"],
        set_={"fields": new_rows.excluded.fields, "updated_at": new_rows.excluded.updated_at},
    ).returning(new_rows.table.c.external_id, new_rows.table.c.id)
    # RETURNING with executemany ("insertmanyvalues") sends the rows in a few multi-row statements.
    returned = session.execute(statement, rows).all()
    return {external_id: f"L{lead_id}" for external_id, lead_id in returned}


def create_tasks(session: Session, tasks: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """Create tasks whose lead exists, once per idempotency key; returns key → local task id."""
    now = utcnow()
    lead_ids = {lead for _, lead, _ in tasks}
    known = set(session.scalars(sa.select(LocalLead.external_id).where(LocalLead.external_id.in_(lead_ids))))
    rows = [
        {"idempotency_key": key, "lead_external_id": lead, "fields": fields, "created_at": now}
        for key, lead, fields in tasks
        if lead in known
    ]
    insert_ignore(session, LocalTask, rows, conflict=["idempotency_key"])
    keys = [key for key, _, _ in tasks]
    found = session.execute(
        sa.select(LocalTask.idempotency_key, LocalTask.id).where(LocalTask.idempotency_key.in_(keys))
    )
    return {key: f"T{task_id}" for key, task_id in found}


def list_leads(session: Session, *, limit: int = 100, offset: int = 0) -> list[LocalLead]:
    statement = sa.select(LocalLead).order_by(LocalLead.id).limit(limit).offset(offset)
    return list(session.scalars(statement))


def count_leads(session: Session) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(LocalLead)) or 0)
