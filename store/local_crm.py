"""Tables of the embedded CRM backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.common import insert_ignore
from store.tables import CrmOutbox, LocalLead, LocalTask


def upsert_leads(
    session: Session, leads: Sequence[tuple[str, dict[str, Any]]], *, now: datetime
) -> dict[str, str]:
    """Create or update leads by external id in one statement; returns external id → local lead id."""
    if not leads:
        return {}
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


def create_tasks(
    session: Session, tasks: Sequence[tuple[str, str, dict[str, Any]]], *, now: datetime
) -> dict[str, str]:
    """Create tasks whose lead exists, once per idempotency key; returns key → local task id."""
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


def deliver_from_outbox(
    session: Session, outbox_ids: Sequence[int], *, now: datetime, retry_at: datetime
) -> Counter[str]:
    """Copy claimed outbox writes into the CRM tables and mark them sent, in the caller's transaction.

    The embedded CRM lives in the same database as the outbox, so a write and its outbox row commit
    together: exactly once, with no re-send to reconcile. Set-based statements, no row crosses into
    Python. A task whose lead is not in the CRM yet stays pending until `retry_at` without spending an
    attempt. Returns the writes sent, by operation.
    """
    box, leads, tasks = (cast(sa.Table, t.__table__) for t in (CrmOutbox, LocalLead, LocalTask))
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    claimed = box.c.id.in_(outbox_ids)
    stamp = sa.literal(now, leads.c.created_at.type)

    # The newest write per lead wins (PostgreSQL refuses to upsert one row twice in a statement).
    newest = (
        sa.select(sa.func.max(box.c.id))
        .where(claimed, box.c.operation == "upsert_lead")
        .group_by(box.c.enquiry_id)
    )
    new_leads = insert(leads).from_select(
        ["external_id", "fields", "created_at", "updated_at"],
        sa.select(box.c.enquiry_id, box.c.payload, stamp, stamp)
        .where(box.c.id.in_(newest))
        .order_by(box.c.id),  # CRM ids follow the order the enquiries arrived in
    )
    session.execute(
        new_leads.on_conflict_do_update(
            index_elements=["external_id"],
            set_={"fields": new_leads.excluded.fields, "updated_at": new_leads.excluded.updated_at},
        )
    )
    has_lead = sa.exists().where(leads.c.external_id == box.c.enquiry_id)
    session.execute(
        insert(tasks)
        .from_select(
            ["idempotency_key", "lead_external_id", "fields", "created_at"],
            sa.select(box.c.idempotency_key, box.c.enquiry_id, box.c.payload, stamp)
            .where(claimed, box.c.operation == "create_task", has_lead)
            .order_by(box.c.id),
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )

    lead_id = sa.select(leads.c.id).where(leads.c.external_id == box.c.enquiry_id).scalar_subquery()
    task_id = sa.select(tasks.c.id).where(tasks.c.idempotency_key == box.c.idempotency_key).scalar_subquery()
    sent: Counter[str] = Counter()
    for operation, prefix, crm_id, delivered in (
        ("upsert_lead", "L", lead_id, has_lead),
        ("create_task", "T", task_id, sa.exists().where(tasks.c.idempotency_key == box.c.idempotency_key)),
    ):
        result = session.connection().execute(
            sa.update(box)
            .where(claimed, box.c.operation == operation, delivered)
            .values(
                status="sent",
                attempts=box.c.attempts + 1,
                last_error=None,
                sent_at=now,
                crm_id=sa.literal(prefix) + sa.cast(crm_id, sa.String),
            )
        )
        if result.rowcount:
            sent[operation] = result.rowcount
    # Erasure requests: the lead and its tasks go; one already gone counts as deleted.
    erased = sa.select(box.c.enquiry_id).where(claimed, box.c.operation == "delete_lead")
    session.execute(sa.delete(tasks).where(tasks.c.lead_external_id.in_(erased)))
    session.execute(sa.delete(leads).where(leads.c.external_id.in_(erased)))
    result = session.connection().execute(
        sa.update(box)
        .where(claimed, box.c.operation == "delete_lead")
        .values(status="sent", attempts=box.c.attempts + 1, last_error=None, sent_at=now)
    )
    if result.rowcount:
        sent["delete_lead"] = result.rowcount
    session.execute(
        sa.update(box)
        .where(claimed, box.c.status == "pending")
        .values(next_attempt_at=retry_at, last_error="waiting for the lead")
    )
    return sent


def list_leads(session: Session, *, limit: int = 100, offset: int = 0) -> list[LocalLead]:
    statement = sa.select(LocalLead).order_by(LocalLead.id).limit(limit).offset(offset)
    return list(session.scalars(statement))


def count_leads(session: Session) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(LocalLead)) or 0)


def delete_leads(session: Session, external_ids: Sequence[str]) -> int:
    """Delete leads and their tasks by external id (erasure); returns the leads deleted."""
    if not external_ids:
        return 0
    session.execute(sa.delete(LocalTask).where(LocalTask.lead_external_id.in_(external_ids)))
    result = session.execute(sa.delete(LocalLead).where(LocalLead.external_id.in_(external_ids)))
    return int(getattr(result, "rowcount", 0) or 0)
