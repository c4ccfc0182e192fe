"""Reading the audit trail: decisions and corrections, oldest first, streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import Correction, DecisionRow, Enquiry


def _stream(
    session: Session,
    model: type[DecisionRow] | type[Correction],
    since: datetime | None,
    shape: Callable[[Any], dict[str, Any]],
    record: str,
) -> Iterator[dict[str, Any]]:
    """Rows of `model` with the identity of the enquiry they are about, in id order, 1,000 at a time.

    Plain rows of the table's columns, not ORM objects: an export reads every row once and changes
    none, and building an object per row (identity map, attribute state) was a third of its time."""
    table = model.__table__
    statement = (
        sa.select(
            *table.columns,
            Enquiry.sender_email.label("enquiry_sender_email"),
            Enquiry.phone.label("enquiry_phone"),
            Enquiry.channel.label("enquiry_channel"),
            Enquiry.sender_name.label("enquiry_sender_name"),
        )
        .join(Enquiry, Enquiry.id == table.c.enquiry_id)
        .order_by(table.c.id)
        .execution_options(yield_per=1000)
    )
    if since is not None:
        statement = statement.where(table.c.created_at >= since)
    for row in session.execute(statement):
        email, phone = row.enquiry_sender_email, row.enquiry_phone
        channel, name = row.enquiry_channel, row.enquiry_sender_name
        yield {
            "record": record,
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "enquiry_id": row.enquiry_id,
            "channel": channel,
            "sender_email": email,
            "sender_phone": phone,
            "sender_name": name,
            **shape(row),
        }


def iter_decisions(session: Session, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    def shape(row: Any) -> dict[str, Any]:  # a row of the decisions table
        return {
            "actor": row.actor,
            "kind": row.kind,
            "lane": row.lane,
            "intent": row.intent,
            "queue": row.queue,
            "priority": row.priority,
            "confidence": row.confidence,
            "task": row.task,
            "reasons": row.reasons,
            "policy_version": row.policy_version,
            "model_version": row.model_version,
        }

    return _stream(session, DecisionRow, since, shape, "decision")


def iter_corrections(session: Session, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    def shape(row: Any) -> dict[str, Any]:  # a row of the corrections table
        return {
            "actor": row.corrected_by,
            "kind": "correction",
            "intent": row.intent,
            "queue": row.queue,
            "priority": row.priority,
            "previous": row.previous,
            "model_version": row.model_version,
        }

    return _stream(session, Correction, since, shape, "correction")
