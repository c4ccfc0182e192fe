"""Reading the audit trail: decisions and corrections, oldest first, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import Correction, DecisionRow, Enquiry


def iter_decisions(session: Session, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    statement = (
        sa.select(DecisionRow, Enquiry.sender_email, Enquiry.phone, Enquiry.channel)
        .join(Enquiry, Enquiry.id == DecisionRow.enquiry_id)
        .order_by(DecisionRow.id)
        .execution_options(yield_per=1000)
    )
    if since is not None:
        statement = statement.where(DecisionRow.created_at >= since)
    for row, email, phone, channel in session.execute(statement):
        yield {
            "record": "decision",
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "enquiry_id": row.enquiry_id,
            "channel": channel,
            "sender_email": email,
            "sender_phone": phone,
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


def iter_corrections(session: Session, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    statement = (
        sa.select(Correction, Enquiry.sender_email, Enquiry.phone, Enquiry.channel)
        .join(Enquiry, Enquiry.id == Correction.enquiry_id)
        .order_by(Correction.id)
        .execution_options(yield_per=1000)
    )
    if since is not None:
        statement = statement.where(Correction.created_at >= since)
    for row, email, phone, channel in session.execute(statement):
        yield {
            "record": "correction",
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "enquiry_id": row.enquiry_id,
            "channel": channel,
            "sender_email": email,
            "sender_phone": phone,
            "actor": row.corrected_by,
            "kind": "correction",
            "intent": row.intent,
            "queue": row.queue,
            "priority": row.priority,
            "previous": row.previous,
            "model_version": row.model_version,
        }
