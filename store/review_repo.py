"""Database access for the review queue: listing, atomic claims, state changes, audit rows.

Claims are one conditional UPDATE (`... WHERE status = 'open'`): on PostgreSQL a second worker updating the
same row waits for the first to commit, then re-checks the condition and updates nothing; SQLite has a
single writer. Either way exactly one claimant gets `rowcount == 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import (
    OPEN_ITEMS,
    Correction,
    DecisionRow,
    Enquiry,
    EnquiryMessage,
    ReviewItem,
    SlaTimer,
    User,
)

OPEN_STATUSES = ("open", "claimed")


@dataclass(frozen=True)
class QueueRow:
    """One line of the queue page: the item with the few enquiry fields an SDR scans."""

    item_id: int
    enquiry_id: str
    status: str
    lane: str
    queue: str
    claimed_by: str | None
    due_at: datetime | None
    created_at: datetime
    subject: str
    sender_email: str | None
    sender_name: str | None
    intent: str
    priority: str
    confidence: float
    # Owner routing and enrichment (issue 12): defaults keep positional construction working.
    owner: str | None = None
    team: str | None = None
    language: str | None = None
    enrichment: dict[str, Any] | None = None


def _filtered(
    statement: sa.Select[Any],
    *,
    queue: str | None,
    intent: str | None,
    lane: str | None,
    claimed_by: str | None,
    owner: str | None = None,
) -> sa.Select[Any]:
    # Literal, not bound: the partial queue indexes (ix_review_open_*) are chosen only when the query
    # states their predicate word for word.
    conditions: list[sa.ColumnElement[bool]] = [sa.text(f"review_items.{OPEN_ITEMS}")]  # type: ignore[list-item]
    if queue:
        conditions.append(ReviewItem.queue == queue)
    if intent:
        # The item keeps its enquiry's intent: no join over the enquiries.
        conditions.append(ReviewItem.intent == intent)
    if lane:
        conditions.append(ReviewItem.lane == lane)
    if claimed_by:
        conditions.append(ReviewItem.claimed_by == claimed_by)
    if owner:
        conditions.append(ReviewItem.owner == owner)
    return statement.where(*conditions)


def _page_ids(
    session: Session,
    filters: dict[str, Any],
    *,
    limit: int,
    offset: int,
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> tuple[list[int], int]:
    """One page of matching item ids, soonest due first and items without a due time last, and the
    number that match in all.

    Two ranges of one partial index, each read in index order: the items with a due time by
    (due_at, id), then those without by id. A single ORDER BY (due_at IS NULL, due_at, id) would
    sort every open item for each page.
    """
    total, with_due = session.execute(
        _filtered(
            sa.select(sa.func.count(), sa.func.count(ReviewItem.due_at)).select_from(ReviewItem), **filters
        ).where(*where)
    ).one()
    ids: list[int] = []
    if offset < with_due:
        ids = list(
            session.scalars(
                _filtered(sa.select(ReviewItem.id), **filters)
                .where(*where, ReviewItem.due_at.is_not(None))
                .order_by(ReviewItem.due_at, ReviewItem.id)
                .limit(limit)
                .offset(offset)
            )
        )
    if len(ids) < limit and total > with_due:
        ids += session.scalars(
            _filtered(sa.select(ReviewItem.id), **filters)
            .where(*where, ReviewItem.due_at.is_(None))
            .order_by(ReviewItem.id)
            .limit(limit - len(ids))
            .offset(max(0, offset - with_due))
        )
    return ids, int(total or 0)


def queue_rows(
    session: Session,
    *,
    queue: str | None = None,
    intent: str | None = None,
    lane: str | None = None,
    claimed_by: str | None = None,
    limit: int = 50,
    offset: int = 0,
    owner_first: str | None = None,
    owner: str | None = None,
) -> tuple[list[QueueRow], int]:
    """Open and claimed items, soonest due first (no due time last), and how many match in all.

    Two steps keep the page fast with many open items: order and cut the narrow item rows first (in
    index order, `_page_ids`), then fetch the enquiry fields for just that page.
    """
    filters = {"queue": queue, "intent": intent, "lane": lane, "claimed_by": claimed_by}
    filters["owner"] = owner
    if owner_first:
        # "My items" first for an SDR: the items routing gave them, then the rest, each soonest due first.
        mine = [ReviewItem.owner == owner_first]
        others = [sa.or_(ReviewItem.owner.is_(None), ReviewItem.owner != owner_first)]
        page_ids, total = _page_ids(session, filters, limit=limit, offset=offset, where=mine)
        rest, rest_total = _page_ids(
            session, filters, limit=limit - len(page_ids), offset=max(0, offset - total), where=others
        )
        page_ids, total = page_ids + rest, total + rest_total
    else:
        page_ids, total = _page_ids(session, filters, limit=limit, offset=offset)
    columns = (
        ReviewItem.id,
        ReviewItem.enquiry_id,
        ReviewItem.status,
        ReviewItem.lane,
        ReviewItem.queue,
        ReviewItem.claimed_by,
        ReviewItem.due_at,
        ReviewItem.created_at,
        Enquiry.subject,
        Enquiry.sender_email,
        Enquiry.sender_name,
        Enquiry.intent,
        Enquiry.priority,
        Enquiry.confidence,
        ReviewItem.owner,
        ReviewItem.team,
        Enquiry.language,
        Enquiry.enrichment,
    )
    by_id = (
        {
            row[0]: QueueRow(*tuple(row))
            for row in session.execute(
                sa.select(*columns)
                .join(Enquiry, Enquiry.id == ReviewItem.enquiry_id)
                .where(ReviewItem.id.in_(page_ids))
            )
        }
        if page_ids
        else {}
    )
    rows = [by_id[item_id] for item_id in page_ids if item_id in by_id]
    return rows, total


def get_item(session: Session, item_id: int) -> ReviewItem | None:
    return session.get(ReviewItem, item_id)


def get_enquiry(session: Session, enquiry_id: str) -> Enquiry | None:
    return session.get(Enquiry, enquiry_id)


def item_for_enquiry(session: Session, enquiry_id: str) -> ReviewItem | None:
    """The review item of an enquiry, if it went to people."""
    return session.scalars(sa.select(ReviewItem).where(ReviewItem.enquiry_id == enquiry_id)).one_or_none()


def thread_messages(session: Session, enquiry_id: str) -> list[EnquiryMessage]:
    """The later messages of an enquiry's conversation, oldest first."""
    statement = (
        sa.select(EnquiryMessage)
        .where(EnquiryMessage.enquiry_id == enquiry_id)
        .order_by(EnquiryMessage.sent_at, EnquiryMessage.id)
    )
    return list(session.scalars(statement))


def decisions_for(session: Session, enquiry_id: str) -> list[DecisionRow]:
    """The audit trail of one enquiry, oldest first."""
    statement = sa.select(DecisionRow).where(DecisionRow.enquiry_id == enquiry_id).order_by(DecisionRow.id)
    return list(session.scalars(statement))


def first_correction(session: Session, enquiry_id: str) -> Correction | None:
    """The enquiry's first correction: its `previous` holds what the model originally proposed."""
    statement = (
        sa.select(Correction)
        .where(Correction.enquiry_id == enquiry_id)
        .order_by(Correction.created_at, Correction.id)
        .limit(1)
    )
    return session.scalar(statement)


def claim_item(session: Session, item_id: int, *, user: str, now: datetime) -> bool:
    """Claim an open item (or re-claim one the user already holds). True when this user now holds it."""
    statement = (
        sa.update(ReviewItem)
        .where(
            ReviewItem.id == item_id,
            sa.or_(
                ReviewItem.status == "open",
                sa.and_(ReviewItem.status == "claimed", ReviewItem.claimed_by == user),
            ),
        )
        .values(status="claimed", claimed_by=user, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(statement)
    claimed = getattr(result, "rowcount", 0) == 1
    if claimed:
        # The identity map may hold a stale copy of the row; the UPDATE bypassed it.
        item = session.get(ReviewItem, item_id)
        if item is not None:
            session.refresh(item)
    return claimed


def set_item_state(
    session: Session,
    item: ReviewItem,
    *,
    status: str,
    claimed_by: str | None,
    claimed_at: datetime | None,
    closed_at: datetime | None = None,
) -> None:
    item.status = status
    item.claimed_by = claimed_by
    item.claimed_at = claimed_at
    item.closed_at = closed_at
    session.flush()


def add_decision(session: Session, row: dict[str, Any]) -> None:
    """Append one audit row (the table is append-only: nothing here updates or deletes)."""
    session.add(DecisionRow(**row))
    session.flush()


def add_correction(session: Session, row: dict[str, Any]) -> None:
    session.add(Correction(**row))
    session.flush()


def add_message(session: Session, row: dict[str, Any]) -> None:
    session.add(EnquiryMessage(**row))
    session.flush()


def last_policy_version(session: Session, enquiry_id: str) -> str | None:
    """The policy version of the newest automatic decision on an enquiry, for the audit of human ones."""
    statement = (
        sa.select(DecisionRow.policy_version)
        .where(DecisionRow.enquiry_id == enquiry_id, DecisionRow.actor == "system")
        .order_by(DecisionRow.id.desc())
        .limit(1)
    )
    return session.scalar(statement)


# --- SLA overview for the ops lead -------------------------------------------------------------------


def sla_counts(session: Session, *, now: datetime, soon_minutes: int = 60) -> dict[str, int]:
    """Counts of first-response timers by state, plus running ones overdue or due within `soon_minutes`."""
    by_status = {
        status: count
        for status, count in session.execute(
            sa.select(SlaTimer.status, sa.func.count())
            .where(SlaTimer.kind == "first_response")
            .group_by(SlaTimer.status)
        )
    }
    running = SlaTimer.status == "running"
    first = SlaTimer.kind == "first_response"
    overdue = session.scalar(sa.select(sa.func.count()).where(first, running, SlaTimer.due_at < now)) or 0
    due_soon = (
        session.scalar(
            sa.select(sa.func.count()).where(
                first,
                running,
                SlaTimer.due_at >= now,
                SlaTimer.due_at < now + timedelta(minutes=soon_minutes),
            )
        )
        or 0
    )
    counts = {status: int(by_status.get(status, 0)) for status in ("running", "paused", "met", "breached")}
    counts["overdue_running"] = int(overdue)
    counts["due_soon"] = int(due_soon)
    return counts


@dataclass(frozen=True)
class BreachRow:
    enquiry_id: str
    subject: str
    queue: str
    policy: str
    due_at: datetime
    status: str
    stopped_at: datetime | None
    touch_source: str | None = None


def breached_timers(session: Session, *, now: datetime, limit: int = 100) -> list[BreachRow]:
    """First-response timers that are breached or running past due, most overdue first."""
    statement = (
        sa.select(
            SlaTimer.enquiry_id,
            Enquiry.subject,
            Enquiry.queue,
            SlaTimer.policy,
            SlaTimer.due_at,
            SlaTimer.status,
            SlaTimer.stopped_at,
            SlaTimer.touch_source,
        )
        .join(Enquiry, Enquiry.id == SlaTimer.enquiry_id)
        .where(
            SlaTimer.kind == "first_response",
            sa.or_(
                SlaTimer.status == "breached", sa.and_(SlaTimer.status == "running", SlaTimer.due_at < now)
            ),
        )
        .order_by(SlaTimer.due_at)
        .limit(limit)
    )
    return [BreachRow(*row) for row in session.execute(statement)]


# --- users ------------------------------------------------------------------------------------------


def user_names_by_email(session: Session, addresses: Sequence[str]) -> dict[str, str]:
    """Lower-case e-mail address → the name of the active user with it (for mailbox touches)."""
    wanted = sorted({address.lower() for address in addresses if address})
    if not wanted:
        return {}
    statement = sa.select(sa.func.lower(User.email), User.name).where(
        sa.func.lower(User.email).in_(wanted), User.active.is_(True)
    )
    return {email: name for email, name in session.execute(statement) if email}


def user_names_by_crm_id(session: Session, crm_ids: Sequence[str]) -> dict[str, str]:
    """CRM user id → the name of the active user with it (for CRM touches)."""
    wanted = sorted({crm_id for crm_id in crm_ids if crm_id})
    if not wanted:
        return {}
    statement = sa.select(User.crm_user_id, User.name).where(
        User.crm_user_id.in_(wanted), User.active.is_(True)
    )
    return {crm_id: name for crm_id, name in session.execute(statement) if crm_id}


def team_crm_user_ids(session: Session) -> list[str]:
    """The CRM user ids of the active users: the leads they own are the team's."""
    statement = sa.select(User.crm_user_id).where(User.crm_user_id.is_not(None), User.active.is_(True))
    return sorted({crm_id for crm_id in session.scalars(statement) if crm_id})


def get_user(session: Session, name: str) -> User | None:
    return session.scalar(sa.select(User).where(User.name == name))


def list_users(session: Session) -> Sequence[User]:
    return list(session.scalars(sa.select(User).order_by(User.name)))


def add_user(session: Session, *, name: str, role: str, password_hash: str, now: datetime) -> User:
    user = User(name=name, role=role, password_hash=password_hash, active=True, created_at=now)
    session.add(user)
    session.flush()
    return user
