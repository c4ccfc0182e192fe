"""SQL for the reply outbox: replies to customers, written once with their Message-ID, then sent.

A row is inserted under a unique idempotency key (a second insert of the same reply is a no-op), then
claimed by a drain pass: the claim sets `status = 'sending'` and a lease in `next_attempt_at`, and is
committed before the SMTP conversation starts. A row still `sending` after its lease is *in doubt*:
the process may have died after the server accepted the message and before the outcome was committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import for_update_skip_locked, insert_ignore
from store.tables import Enquiry, ReplyOutbox

OPEN_STATUSES = ("pending", "sending")


@dataclass(frozen=True, slots=True)
class ClaimedReply:
    """A claimed row as plain data (the SMTP conversation happens outside any transaction)."""

    id: int
    enquiry_id: str
    source: str  # the enquiry's source: a mailbox may send through its own server
    kind: str
    author: str
    from_address: str
    to_address: str
    subject: str
    body: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    attempts: int
    in_doubt: int
    created_at: datetime


def add(session: Session, row: dict[str, Any]) -> bool:
    """Insert a reply; False if a reply with the same idempotency key exists already."""
    return insert_ignore(session, ReplyOutbox, [row], conflict=["idempotency_key"]) == 1


def by_key(session: Session, key: str) -> ReplyOutbox | None:
    """The reply stored under this idempotency key."""
    return session.scalars(sa.select(ReplyOutbox).where(ReplyOutbox.idempotency_key == key)).one_or_none()


def for_enquiry(session: Session, enquiry_id: str) -> list[ReplyOutbox]:
    """Every reply of an enquiry, oldest first (the item page shows their state)."""
    statement = sa.select(ReplyOutbox).where(ReplyOutbox.enquiry_id == enquiry_id).order_by(ReplyOutbox.id)
    return list(session.scalars(statement))


def claim_next(
    session: Session, *, now: datetime, lease: timedelta, only_ids: Sequence[int] | None = None
) -> ClaimedReply | None:
    """Claim the oldest due reply (pending, or in doubt after its lease) and mark it `sending`.

    The caller commits at once; `in_doubt` is incremented when the row was found `sending`.
    """
    statement = (
        sa.select(ReplyOutbox)
        .where(ReplyOutbox.status.in_(OPEN_STATUSES), ReplyOutbox.next_attempt_at <= now)
        .order_by(ReplyOutbox.next_attempt_at, ReplyOutbox.id)
        .limit(1)
    )
    if only_ids is not None:
        statement = statement.where(ReplyOutbox.id.in_(list(only_ids)))
    row = session.scalars(for_update_skip_locked(statement, session)).one_or_none()
    if row is None:
        return None
    if row.status == "sending":
        row.in_doubt += 1
    row.status = "sending"
    row.attempts += 1
    row.next_attempt_at = now + lease
    session.flush()
    source = session.scalar(sa.select(Enquiry.source).where(Enquiry.id == row.enquiry_id)) or ""
    return ClaimedReply(
        id=row.id,
        enquiry_id=row.enquiry_id,
        source=source,
        kind=row.kind,
        author=row.author,
        from_address=row.from_address,
        to_address=row.to_address,
        subject=row.subject,
        body=row.body,
        message_id=row.message_id,
        in_reply_to=row.in_reply_to,
        references=tuple((row.reference_ids or "").split()),
        attempts=row.attempts,
        in_doubt=row.in_doubt,
        created_at=row.created_at,
    )


def defer(session: Session, reply_id: int, *, until: datetime, error: str | None, undo_claim: bool) -> None:
    """Put a claimed reply back to pending until `until` (a temporary failure or a rate limit)."""
    values: dict[str, Any] = {"status": "pending", "next_attempt_at": until}
    if error is not None:
        values["last_error"] = error
    if undo_claim:  # not an attempt at all: a rate limit held it back
        values["attempts"] = ReplyOutbox.attempts - 1
    session.execute(sa.update(ReplyOutbox).where(ReplyOutbox.id == reply_id).values(**values))


def mark_sent(session: Session, reply_id: int, *, at: datetime, note: str | None = None) -> bool:
    """The SMTP server accepted the reply (or the Sent folder shows it was). False if already marked."""
    result = session.execute(
        sa.update(ReplyOutbox)
        .where(ReplyOutbox.id == reply_id, ReplyOutbox.status != "sent")
        .values(status="sent", accepted_at=at, last_error=note)
    )
    return bool(getattr(result, "rowcount", 0))


def mark_failed(session: Session, reply_id: int, *, error: str) -> None:
    """The reply will not be sent (a permanent refusal, too many attempts, or uncertain delivery)."""
    session.execute(
        sa.update(ReplyOutbox).where(ReplyOutbox.id == reply_id).values(status="failed", last_error=error)
    )


def accepted_since(session: Session, *, since: datetime) -> tuple[int, dict[str, int]]:
    """Replies accepted since `since`: in total, and per recipient domain (for the rate limits)."""
    domain = sa.func.lower(
        sa.func.substr(ReplyOutbox.to_address, sa.func.instr(ReplyOutbox.to_address, "@") + 1)
    )
    if session.get_bind().dialect.name == "postgresql":
        domain = sa.func.lower(sa.func.split_part(ReplyOutbox.to_address, "@", 2))
    statement = (
        sa.select(domain, sa.func.count())
        .where(ReplyOutbox.status == "sent", ReplyOutbox.accepted_at >= since)
        .group_by(domain)
    )
    per_domain = {str(name): int(count) for name, count in session.execute(statement)}
    return sum(per_domain.values()), per_domain


def acknowledgement_times(
    session: Session, *, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """(received_at, accepted_at) of automated replies sent for enquiries received in [since, until)."""
    statement = (
        sa.select(Enquiry.received_at, ReplyOutbox.accepted_at)
        .join(Enquiry, Enquiry.id == ReplyOutbox.enquiry_id)
        .where(
            ReplyOutbox.kind == "auto_reply",
            ReplyOutbox.status == "sent",
            Enquiry.received_at >= since,
            Enquiry.received_at < until,
        )
    )
    return [(received, accepted) for received, accepted in session.execute(statement) if accepted is not None]


def counts(session: Session) -> dict[str, int]:
    """Replies per status."""
    statement = sa.select(ReplyOutbox.status, sa.func.count()).group_by(ReplyOutbox.status)
    return {status: int(count) for status, count in session.execute(statement)}


REPLY_STATES = ("pending", "retrying", "sending", "sent", "failed")


def states_by_kind(session: Session) -> list[tuple[str, str, int]]:
    """Replies by kind (reply | auto_reply) and state: pending, retrying (pending again after a temporary
    failure), sending, sent, failed (for good). One grouped pass over ix_reply_outbox_kind_status."""
    state = sa.case(
        (sa.and_(ReplyOutbox.status == "pending", ReplyOutbox.attempts > 0), "retrying"),
        else_=ReplyOutbox.status,
    )
    statement = sa.select(ReplyOutbox.kind, state, sa.func.count()).group_by(ReplyOutbox.kind, state)
    return [(str(kind), str(name), int(count)) for kind, name, count in session.execute(statement)]
