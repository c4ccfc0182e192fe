"""Web-hook events that name their record by id only, waiting to be read from the tool's API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import for_update_skip_locked, insert_ignore
from store.tables import HookFetch

WAITING = "waiting"
FETCHED = "fetched"
MAX_BACKOFF = timedelta(hours=6)
MAX_ERROR_CHARS = 2_000


def save_events(
    session: Session, *, source: str, events: Sequence[tuple[str, bytes]], received_at: datetime
) -> int:
    """Store (key, payload) events not seen before; returns how many are new."""
    rows = [
        {
            "source": source,
            "external_key": key,
            "payload": payload,
            "received_at": received_at,
            "status": WAITING,
            "attempts": 0,
            "next_attempt_at": received_at,
        }
        for key, payload in events
    ]
    return insert_ignore(session, HookFetch, rows, conflict=["source", "external_key"])


def claim_due(session: Session, *, now: datetime, limit: int) -> list[HookFetch]:
    """Waiting events whose next attempt is due, oldest first, locked for this transaction."""
    statement = (
        sa.select(HookFetch)
        .where(HookFetch.status == WAITING, HookFetch.next_attempt_at <= now)
        .order_by(HookFetch.id)
        .limit(limit)
    )
    return list(session.scalars(for_update_skip_locked(statement, session)))


def waiting_with_ids(session: Session, ids: Sequence[int]) -> list[HookFetch]:
    """These events, still waiting (leased by this pass), oldest first."""
    statement = (
        sa.select(HookFetch)
        .where(HookFetch.id.in_(list(ids)), HookFetch.status == WAITING)
        .order_by(HookFetch.id)
    )
    return list(session.scalars(statement))


def lease(rows: Sequence[HookFetch], *, until: datetime) -> None:
    """Claimed for an API call made outside this transaction: other passes skip them until `until`."""
    for row in rows:
        row.next_attempt_at = until


def mark_fetched(rows: Sequence[HookFetch], *, now: datetime) -> None:
    for row in rows:
        row.status, row.fetched_at, row.last_error = FETCHED, now, None


def mark_retry(rows: Sequence[HookFetch], *, error: str, now: datetime) -> None:
    """Try again later with capped exponential backoff: the events wait for as long as the API is down."""
    for row in rows:
        row.attempts = (row.attempts or 0) + 1
        delay = min(timedelta(minutes=2 ** min(row.attempts - 1, 12)), MAX_BACKOFF)
        row.next_attempt_at = now + delay
        row.last_error = error[:MAX_ERROR_CHARS]


def any_waiting(session: Session) -> bool:
    """Whether an event waits (ix_hook_fetch_due answers it: cheap on every run, however many were read)."""
    return session.scalar(sa.select(HookFetch.id).where(HookFetch.status == WAITING).limit(1)) is not None
