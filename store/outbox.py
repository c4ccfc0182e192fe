"""The CRM outbox: writes waiting to be sent, claimed with row locks so two workers never send one twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import for_update_skip_locked, insert_ignore, update_by_id
from store.tables import CrmOutbox, Enquiry

# The longest wait between two attempts at a write, however long the CRM has been unavailable.
MAX_BACKOFF = timedelta(hours=6)


def enqueue(session: Session, rows: Sequence[dict[str, Any]], *, now: datetime) -> int:
    """Add writes (idempotency_key, enquiry_id, operation, payload), due at `now` (the caller's clock,
    which the drain's clock must reach); a key already queued is ignored."""
    prepared = [
        {"status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now, **row} for row in rows
    ]
    return insert_ignore(session, CrmOutbox, prepared, conflict=["idempotency_key"])


@dataclass(slots=True)
class ClaimedWrite:
    """One claimed outbox row as plain data: the drain changes it, `save_outcomes` writes it back.

    Plain rows instead of ORM objects: the unit of work's per-attribute bookkeeping was most of the
    drain's cost (5,000+ writes a second need it gone).
    """

    id: int
    idempotency_key: str
    enquiry_id: str
    operation: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime
    status: str = "pending"
    crm_id: str | None = None
    last_error: str | None = None
    sent_at: datetime | None = None


def claim_due(session: Session, *, limit: int, now: datetime) -> list[ClaimedWrite]:
    """Lock up to `limit` pending writes that are due, oldest first. Hold the transaction while sending."""
    statement = (
        sa.select(
            CrmOutbox.id,
            CrmOutbox.idempotency_key,
            CrmOutbox.enquiry_id,
            CrmOutbox.operation,
            CrmOutbox.payload,
            CrmOutbox.attempts,
            CrmOutbox.next_attempt_at,
        )
        .where(CrmOutbox.status == "pending", CrmOutbox.next_attempt_at <= now)
        .order_by(CrmOutbox.id)
        .limit(limit)
    )
    # No SQLite write lock here: the local CRM backend writes through its own session while this
    # transaction is open. Two drains overlapping on SQLite may send a row twice, which the CRM's
    # upsert by external id (and tasks by idempotency key) turns into an update, never a duplicate.
    claim = for_update_skip_locked(statement, session, sqlite_write_lock=False)
    return [ClaimedWrite(*row) for row in session.execute(claim)]


def claim_due_ids(session: Session, *, limit: int, now: datetime) -> list[int]:
    """Lock up to `limit` due pending writes, oldest first, for a drain that settles them in SQL."""
    statement = (
        sa.select(CrmOutbox.id)
        .where(CrmOutbox.status == "pending", CrmOutbox.next_attempt_at <= now)
        .order_by(CrmOutbox.id)
        .limit(limit)
    )
    return list(session.scalars(for_update_skip_locked(statement, session)))


def save_outcomes(session: Session, rows: Sequence[ClaimedWrite]) -> None:
    """Write the claimed rows' new state back in one executemany UPDATE (inside the claiming transaction)."""
    columns = ("status", "attempts", "crm_id", "last_error", "next_attempt_at", "sent_at")
    update_by_id(session, CrmOutbox, columns, rows)


def mark_sent(row: ClaimedWrite, *, crm_id: str | None, now: datetime) -> None:
    row.status = "sent"
    row.crm_id = crm_id
    row.sent_at = now
    row.attempts += 1
    row.last_error = None


def mark_retry(
    row: ClaimedWrite,
    *,
    error: str,
    now: datetime,
    backoff_seconds: float,
    max_attempts: int,
    count: bool = True,
    unavailable: bool = False,
) -> None:
    """Schedule another attempt with exponential backoff (capped at MAX_BACKOFF).

    A record-level transient error gives up after `max_attempts`; an `unavailable` CRM (503, 429,
    timeouts, refused connections) never does: an outage of any length ends without a hand.
    """
    if count:
        row.attempts += 1
    row.last_error = error
    if row.attempts >= max_attempts and not unavailable:
        row.status = "failed"
        return
    # Capped before the power: after weeks of outage the exponent alone would overflow a float.
    exponent = min(max(row.attempts - 1, 0), 30)
    delay = min(backoff_seconds * (2**exponent), MAX_BACKOFF.total_seconds())
    row.next_attempt_at = now + timedelta(seconds=delay)


def mark_failed(row: ClaimedWrite, *, error: str) -> None:
    """A write the CRM rejected for good (a field error): it waits for a person, others go on."""
    row.attempts += 1
    row.status = "failed"
    row.last_error = error


def sent_lead_ids(session: Session, enquiry_ids: Sequence[str]) -> set[str]:
    """Enquiries whose lead has reached the CRM (tasks wait for their lead)."""
    if not enquiry_ids:
        return set()
    statement = sa.select(CrmOutbox.enquiry_id).where(
        CrmOutbox.enquiry_id.in_(enquiry_ids),
        CrmOutbox.operation == "upsert_lead",
        CrmOutbox.status == "sent",
    )
    return set(session.scalars(statement))


def enquiries_by_crm_id(session: Session, crm_ids: Sequence[str]) -> dict[str, str]:
    """CRM lead id → enquiry id, from the ids the CRM gave when the leads were written (index-backed)."""
    wanted = sorted(set(crm_ids))
    if not wanted:
        return {}
    statement = sa.select(CrmOutbox.crm_id, CrmOutbox.enquiry_id).where(
        CrmOutbox.crm_id.in_(wanted), CrmOutbox.operation == "upsert_lead"
    )
    return {crm_id: enquiry_id for crm_id, enquiry_id in session.execute(statement) if crm_id}


def failures(session: Session, *, limit: int = 200) -> list[CrmOutbox]:
    """Writes that gave up, newest first."""
    statement = (
        sa.select(CrmOutbox).where(CrmOutbox.status == "failed").order_by(CrmOutbox.id.desc()).limit(limit)
    )
    return list(session.scalars(statement))


def requeue_failed(session: Session, *, now: datetime, ids: Sequence[int] | None = None) -> int:
    """Send failed writes again (after the mapping or the CRM was fixed)."""
    statement = sa.update(CrmOutbox).where(CrmOutbox.status == "failed")
    if ids:
        statement = statement.where(CrmOutbox.id.in_(ids))
    result = session.execute(statement.values(status="pending", attempts=0, next_attempt_at=now))
    return int(getattr(result, "rowcount", 0) or 0)


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(sa.select(CrmOutbox.status, sa.func.count()).group_by(CrmOutbox.status))
    return {status: int(count) for status, count in rows}


def counts_by_status_and_operation(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        sa.select(CrmOutbox.operation, CrmOutbox.status, sa.func.count()).group_by(
            CrmOutbox.operation, CrmOutbox.status
        )
    )
    return {(operation, status): int(count) for operation, status, count in rows}


def sent_leads_by_lane(session: Session) -> dict[str, int]:
    """Leads the CRM accepted, by the lane their enquiry took."""
    rows = session.execute(
        sa.select(Enquiry.lane, sa.func.count())
        .join(CrmOutbox, CrmOutbox.enquiry_id == Enquiry.id)
        .where(CrmOutbox.operation == "upsert_lead", CrmOutbox.status == "sent")
        .group_by(Enquiry.lane)
    )
    return {lane: int(count) for lane, count in rows}


def sent_leads(session: Session, *, limit: int = 100) -> list[CrmOutbox]:
    """Lead writes the CRM accepted, newest first (what `triage crm list` shows for Salesforce)."""
    statement = (
        sa.select(CrmOutbox)
        .where(CrmOutbox.operation == "upsert_lead", CrmOutbox.status == "sent")
        .order_by(CrmOutbox.id.desc())
        .limit(limit)
    )
    return list(session.scalars(statement))
