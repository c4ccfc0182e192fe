"""SQL for SLA timers and their events: set-based where a watch pass touches many rows.

Open timers are those not yet stopped (`stopped_at IS NULL`): running, paused, or breached and still
waiting for a person. `next_check_at` is the next instant at which the watch pass has something to do
for a timer (an escalation tier or the breach); NULL means nothing until someone changes the clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import counters
from store.common import for_update_skip_locked, insert_ignore
from store.db import is_postgresql
from store.tables import DecisionRow, Enquiry, ReviewItem, SlaEvent, SlaTimer

# Bound parameters per statement stay well under SQLite's limit (32,766) and PostgreSQL's (65,535).
CHUNK = 5_000
ESCALATION_PREFIX = "escalation:"
# pg_try_advisory_xact_lock key of the watch pass: any constant unique to this product.
WATCH_LOCK_KEY = 0x534C4157  # "SLAW"


@dataclass(frozen=True, slots=True)
class TimerToCheck:
    """The columns a watch pass needs to decide what a timer is due for."""

    id: int
    enquiry_id: str
    kind: str
    policy: str
    target_minutes: int
    due_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class PendingGroup:
    """Undelivered escalations sharing an action and a detail (so the same roles still to tell)."""

    action: str
    detail_text: str
    detail: dict[str, Any]
    count: int
    max_id: int

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles not yet told about these escalations."""
        return tuple(self.detail.get("roles", ()))


@dataclass(frozen=True, slots=True)
class NoticeLine:
    """What a person reads about one escalation in a digest."""

    event_id: int
    action: str
    percent: int | None
    enquiry_id: str
    kind: str
    policy: str
    target_minutes: int
    due_at: datetime
    subject: str
    queue: str
    intent: str


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def insert_timers(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert timers; an (enquiry, kind) that already has one keeps it. Returns rows inserted."""
    return insert_ignore(session, SlaTimer, rows, conflict=["enquiry_id", "kind"])


def due_times(session: Session, enquiry_ids: Sequence[str], *, kind: str) -> dict[str, datetime]:
    """enquiry_id → due_at of its timer of this kind."""
    result: dict[str, datetime] = {}
    for chunk in _chunks(enquiry_ids):
        statement = sa.select(SlaTimer.enquiry_id, SlaTimer.due_at).where(
            SlaTimer.enquiry_id.in_(chunk), SlaTimer.kind == kind
        )
        result.update({enquiry_id: due_at for enquiry_id, due_at in session.execute(statement)})
    return result


def stop_timer(
    session: Session, enquiry_id: str, *, kind: str, by: str, at: datetime, source: str | None = None
) -> bool:
    """Stop a timer at `at` (met if not past due, else breached); the earliest touch wins.

    An open timer stops. A timer already stopped later than `at` (a mailbox or CRM touch is often seen
    after a person clicked) is re-stamped with this earlier touch; one stopped earlier stays as it was.
    One conditional UPDATE, so two people touching the enquiry at once cannot both win.
    """
    late = sa.and_(SlaTimer.status != "paused", SlaTimer.due_at < at)
    statement = (
        sa.update(SlaTimer)
        .where(
            SlaTimer.enquiry_id == enquiry_id,
            SlaTimer.kind == kind,
            sa.or_(SlaTimer.stopped_at.is_(None), SlaTimer.stopped_at > at),
        )
        .values(
            status=sa.case((late, "breached"), else_="met"),
            breached_at=sa.case((late, SlaTimer.due_at), else_=None),
            stopped_at=at,
            stopped_by=by,
            touch_source=source,
            next_check_at=None,
            paused_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    result = session.execute(statement)
    return bool(getattr(result, "rowcount", 0))


def first_response_stops(session: Session, enquiry_ids: Sequence[str]) -> dict[str, datetime | None]:
    """Enquiry id → when its first-response clock stopped (None: still open), for those with one."""
    found: dict[str, datetime | None] = {}
    for chunk in _chunks(sorted(set(enquiry_ids))):
        statement = sa.select(SlaTimer.enquiry_id, SlaTimer.stopped_at).where(
            SlaTimer.enquiry_id.in_(chunk), SlaTimer.kind == "first_response"
        )
        found.update({enquiry_id: stopped for enquiry_id, stopped in session.execute(statement)})
    return found


def oldest_open_first_response(session: Session) -> datetime | None:
    """When the oldest first-response clock still open started (where a first CRM poll begins)."""
    return session.scalar(
        sa.select(sa.func.min(SlaTimer.started_at)).where(
            SlaTimer.kind == "first_response", SlaTimer.stopped_at.is_(None)
        )
    )


def first_touches_by_source(session: Session) -> dict[str, int]:
    """Stopped first-response clocks by where the touch came from: the `first_touches` counters (store/
    counters.py), so /metrics and `triage status` cost the same however many clocks have stopped."""
    return {source: n for (source, _, _), n in counters.counts(session, "first_touches").items()}


def open_timers_of(session: Session, enquiry_id: str, *, status: str) -> list[SlaTimer]:
    """The enquiry's unstopped timers in one status, locked for the change that follows."""
    statement = sa.select(SlaTimer).where(
        SlaTimer.enquiry_id == enquiry_id, SlaTimer.status == status, SlaTimer.stopped_at.is_(None)
    )
    return list(session.scalars(for_update_skip_locked(statement, session)))


def add_events(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Record a few events (pauses, resumes); a (timer, event_key) already recorded is left alone."""
    return insert_ignore(session, SlaEvent, rows, conflict=["timer_id", "event_key"])


def fire_escalations(
    session: Session,
    *,
    event_key: str,
    action: str,
    detail: dict[str, Any],
    timer_ids: Sequence[int],
    now: datetime,
    delivered: bool,
) -> int:
    """Record one escalation tier for many timers at once; a tier already recorded for a timer is skipped.

    INSERT ... SELECT with ON CONFLICT DO NOTHING on the unique (timer_id, event_key): the database does
    the work set-based, which is what lets a catch-up pass record tens of thousands of tiers in a second.
    """
    table = cast(sa.Table, SlaEvent.__table__)
    timers = cast(sa.Table, SlaTimer.__table__)
    insert = postgresql.insert if is_postgresql(session) else sqlite.insert
    inserted = 0
    for chunk in _chunks(timer_ids):
        source = sa.select(
            timers.c.id,
            sa.literal(event_key, sa.String()),
            sa.literal(action, sa.String()),
            sa.literal(detail, table.c.detail.type),
            sa.literal(now, table.c.created_at.type),
            sa.literal(now if delivered else None, table.c.sent_at.type),
        ).where(timers.c.id.in_(chunk))
        statement = (
            insert(table)
            .from_select(["timer_id", "event_key", "action", "detail", "created_at", "sent_at"], source)
            .on_conflict_do_nothing(index_elements=["timer_id", "event_key"])
            .returning(table.c.id)
        )
        # RETURNING, because psycopg reports no row count for INSERT ... SELECT ... ON CONFLICT.
        inserted += len(session.connection().execute(statement).all())
    return inserted


def try_watch_lock(session: Session) -> bool:
    """Whether this transaction may run the watch (PostgreSQL: one pass at a time across workers).

    A transaction-level advisory lock: released at commit, so a crashed worker never holds it.
    SQLite has one writer at a time anyway.
    """
    if not is_postgresql(session):
        return True
    return bool(
        session.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": WATCH_LOCK_KEY}).scalar()
    )


def mark_breaches(session: Session, *, now: datetime) -> int:
    """Running timers past their due time become breached (at their due time). One UPDATE."""
    statement = (
        sa.update(SlaTimer)
        .where(SlaTimer.status == "running", SlaTimer.due_at <= now)
        .values(status="breached", breached_at=SlaTimer.due_at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)


def timers_to_check(session: Session, *, now: datetime, limit: int) -> list[TimerToCheck]:
    """Open timers whose next check has come, earliest first (the caller holds the watch lock)."""
    statement = (
        sa.select(
            SlaTimer.id,
            SlaTimer.enquiry_id,
            SlaTimer.kind,
            SlaTimer.policy,
            SlaTimer.target_minutes,
            SlaTimer.due_at,
            SlaTimer.status,
        )
        .where(SlaTimer.next_check_at <= now)
        .order_by(SlaTimer.next_check_at)
        .limit(limit)
    )
    return [TimerToCheck(*row) for row in session.connection().execute(statement)]


def set_next_checks(session: Session, values: Sequence[tuple[int, datetime | None]]) -> None:
    """Store each timer's next check instant.

    Timers with nothing left to do (the common case after a catch-up) are cleared with set-based
    UPDATEs; the others, each with its own instant, go in one executemany keyed by primary key.
    """
    table = cast(sa.Table, SlaTimer.__table__)
    finished = [timer_id for timer_id, when in values if when is None]
    for chunk in _chunks(finished):
        session.connection().execute(sa.update(table).where(table.c.id.in_(chunk)).values(next_check_at=None))
    later = [{"timer_id": timer_id, "next_check": when} for timer_id, when in values if when is not None]
    statement = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("timer_id"))
        .values(next_check_at=sa.bindparam("next_check"))
    )
    for chunk in _chunks(later, 10_000):
        session.connection().execute(statement, list(chunk))


def _group_filter(group: PendingGroup) -> sa.ColumnElement[bool]:
    return sa.and_(
        SlaEvent.sent_at.is_(None),
        SlaEvent.event_key.startswith(ESCALATION_PREFIX),
        SlaEvent.action == group.action,
        sa.cast(SlaEvent.detail, sa.Text) == group.detail_text,
        SlaEvent.id <= group.max_id,
    )


def pending_groups(session: Session) -> list[PendingGroup]:
    """Undelivered escalations grouped by action and detail, so delivery is a few set-based statements.

    The detail is compared as the database's own text form, which is stable for equal values.
    """
    detail_text = sa.cast(SlaEvent.detail, sa.Text)
    statement = (
        sa.select(SlaEvent.action, detail_text, sa.func.count(), sa.func.max(SlaEvent.id))
        .where(SlaEvent.sent_at.is_(None), SlaEvent.event_key.startswith(ESCALATION_PREFIX))
        .group_by(SlaEvent.action, detail_text)
        .order_by(sa.func.min(SlaEvent.id))
    )
    return [
        PendingGroup(action, text, json.loads(text), int(count), int(max_id))
        for action, text, count, max_id in session.execute(statement)
    ]


def group_event_ids(session: Session, group: PendingGroup, *, limit: int) -> list[int]:
    """The oldest event ids of a group (what a digest lists by name)."""
    statement = sa.select(SlaEvent.id).where(_group_filter(group)).order_by(SlaEvent.id).limit(limit)
    return list(session.scalars(statement))


def mark_group_sent(session: Session, group: PendingGroup, *, at: datetime) -> int:
    """Every event of a group was delivered to all its roles."""
    statement = (
        sa.update(SlaEvent)
        .where(_group_filter(group))
        .values(sent_at=at)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)


def set_group_roles(session: Session, group: PendingGroup, roles: Sequence[str]) -> int:
    """Some roles of a group were told: keep only the others, to be retried by the next pass."""
    statement = (
        sa.update(SlaEvent)
        .where(_group_filter(group))
        .values(detail={**group.detail, "roles": list(roles)})
        .execution_options(synchronize_session=False)
    )
    return int(getattr(session.execute(statement), "rowcount", 0) or 0)


def notice_lines(session: Session, event_ids: Sequence[int]) -> dict[int, NoticeLine]:
    """The enquiry and timer facts of some events, for the text of a digest."""
    result: dict[int, NoticeLine] = {}
    for chunk in _chunks(event_ids):
        statement = (
            sa.select(
                SlaEvent.id,
                SlaEvent.action,
                SlaEvent.detail,
                SlaTimer.enquiry_id,
                SlaTimer.kind,
                SlaTimer.policy,
                SlaTimer.target_minutes,
                SlaTimer.due_at,
                Enquiry.subject,
                Enquiry.queue,
                Enquiry.intent,
            )
            .join(SlaTimer, SlaTimer.id == SlaEvent.timer_id)
            .join(Enquiry, Enquiry.id == SlaTimer.enquiry_id)
            .where(SlaEvent.id.in_(chunk))
        )
        for row in session.execute(statement):
            event_id, action, detail, *facts = row
            result[event_id] = NoticeLine(event_id, action, detail.get("percent"), *facts)
    return result


def open_timers(session: Session, *, limit: int = 500) -> list[SlaTimer]:
    """Unstopped timers, soonest due first."""
    statement = (
        sa.select(SlaTimer)
        .where(SlaTimer.stopped_at.is_(None))
        .order_by(SlaTimer.due_at, SlaTimer.id)
        .limit(limit)
    )
    return list(session.scalars(statement))


def events_of(session: Session, timer_id: int) -> list[SlaEvent]:
    """Every event of one timer, in order."""
    return list(
        session.scalars(sa.select(SlaEvent).where(SlaEvent.timer_id == timer_id).order_by(SlaEvent.id))
    )


# --- report queries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerFact:
    """One first-response timer with the enquiry facts the breach report slices by."""

    enquiry_id: str
    policy: str
    target_minutes: int
    started_at: datetime
    due_at: datetime
    status: str
    stopped_at: datetime | None
    stopped_by: str | None
    breached_at: datetime | None
    touch_source: str | None
    channel: str
    intent: str
    queue: str
    owner: str | None
    team: str | None = None  # the team owner routing chose (issue 12)
    lane: str | None = None


def first_response_facts(session: Session, *, since: datetime, until: datetime) -> list[TimerFact]:
    """First-response timers started in [since, until), joined to their enquiry and review owner."""
    return list(iter_first_response_facts(session, since=since, until=until))


def iter_first_response_facts(session: Session, *, since: datetime, until: datetime) -> Iterator[TimerFact]:
    """`first_response_facts` streamed, 1,000 rows at a time (a server-side cursor on PostgreSQL): the
    report and its CSV hold one batch, not the period, in memory."""
    statement = (
        sa.select(
            SlaTimer.enquiry_id,
            SlaTimer.policy,
            SlaTimer.target_minutes,
            SlaTimer.started_at,
            SlaTimer.due_at,
            SlaTimer.status,
            SlaTimer.stopped_at,
            SlaTimer.stopped_by,
            SlaTimer.breached_at,
            SlaTimer.touch_source,
            Enquiry.channel,
            Enquiry.intent,
            Enquiry.queue,
            # Whoever works the item, else whom routing gave it to.
            sa.func.coalesce(ReviewItem.claimed_by, ReviewItem.owner).label("owner"),
            ReviewItem.team.label("team"),
            Enquiry.lane.label("lane"),
        )
        .join(Enquiry, Enquiry.id == SlaTimer.enquiry_id)
        .outerjoin(ReviewItem, ReviewItem.enquiry_id == SlaTimer.enquiry_id)
        .where(SlaTimer.kind == "first_response", SlaTimer.started_at >= since, SlaTimer.started_at < until)
        .order_by(SlaTimer.started_at)
        .execution_options(yield_per=1000)
    )
    for row in session.execute(statement):
        yield TimerFact(**row._mapping)


def lane_counts(session: Session, *, since: datetime, until: datetime) -> dict[str, int]:
    """Enquiries received in [since, until) per lane."""
    statement = (
        sa.select(Enquiry.lane, sa.func.count())
        .where(Enquiry.received_at >= since, Enquiry.received_at < until)
        .group_by(Enquiry.lane)
    )
    return {lane: int(count) for lane, count in session.execute(statement)}


def decision_counts(session: Session, *, since: datetime, until: datetime) -> dict[str, int]:
    """Audit rows made in [since, until) per kind (accept, correction, ...)."""
    statement = (
        sa.select(DecisionRow.kind, sa.func.count())
        .where(DecisionRow.created_at >= since, DecisionRow.created_at < until)
        .group_by(DecisionRow.kind)
    )
    return {kind: int(count) for kind, count in session.execute(statement)}


def review_durations(
    session: Session, *, since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """(created_at, closed_at) of review items closed in [since, until)."""
    statement = sa.select(ReviewItem.created_at, ReviewItem.closed_at).where(
        ReviewItem.closed_at.is_not(None), ReviewItem.closed_at >= since, ReviewItem.closed_at < until
    )
    return [(created, closed) for created, closed in session.execute(statement) if closed is not None]


@dataclass(frozen=True, slots=True)
class AtRiskTimer:
    """An open first-response timer that is breached or falls due soon."""

    enquiry_id: str
    policy: str
    due_at: datetime
    status: str
    queue: str
    channel: str
    subject: str
    owner: str | None


def at_risk_timers(session: Session, *, due_before: datetime, limit: int = 200) -> list[AtRiskTimer]:
    """Unstopped first-response timers due before `due_before` (breached ones included), soonest first."""
    statement = (
        sa.select(
            SlaTimer.enquiry_id,
            SlaTimer.policy,
            SlaTimer.due_at,
            SlaTimer.status,
            Enquiry.queue,
            Enquiry.channel,
            Enquiry.subject,
            sa.func.coalesce(ReviewItem.claimed_by, ReviewItem.owner),
        )
        .join(Enquiry, Enquiry.id == SlaTimer.enquiry_id)
        .outerjoin(ReviewItem, ReviewItem.enquiry_id == SlaTimer.enquiry_id)
        .where(
            SlaTimer.kind == "first_response",
            SlaTimer.stopped_at.is_(None),
            SlaTimer.status.in_(["running", "breached"]),
            SlaTimer.due_at < due_before,
        )
        .order_by(SlaTimer.due_at, SlaTimer.id)
        .limit(limit)
    )
    return [AtRiskTimer(*row) for row in session.execute(statement)]


def enquiries_with_paused_timers(session: Session, enquiry_ids: Sequence[str]) -> set[str]:
    """Which of these enquiries have a clock paused (one query, for a whole batch of replies)."""
    if not enquiry_ids:
        return set()
    statement = sa.select(SlaTimer.enquiry_id).where(
        SlaTimer.enquiry_id.in_(list(set(enquiry_ids))), SlaTimer.status == "paused"
    )
    return set(session.scalars(statement))
