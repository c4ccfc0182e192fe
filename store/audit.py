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
    """Rows of `model` with the identity of the enquiry they are about, in id order, 1,000 at a time."""
    statement = (
        sa.select(model, Enquiry.sender_email, Enquiry.phone, Enquiry.channel, Enquiry.sender_name)
        .join(Enquiry, Enquiry.id == model.enquiry_id)
        .order_by(model.id)
        .execution_options(yield_per=1000)
    )
    if since is not None:
        statement = statement.where(model.created_at >= since)
    for row, email, phone, channel, name in session.execute(statement):
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
    def shape(row: DecisionRow) -> dict[str, Any]:
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
    def shape(row: Correction) -> dict[str, Any]:
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
