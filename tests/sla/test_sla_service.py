"""Timers on a real database (SQLite and PostgreSQL): start, first touch, pause and resume."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sla.policies import SlaPolicies
from sla.service import TimerStart, pause, resume, start_timers, stop_first_response, stop_resolution
from sla.watch import watch_pass
from store.db import transaction
from store.sla_repo import events_of
from store.tables import SlaEvent, SlaTimer
from tests.sla.sla_helpers import RecordingNotifier, add_enquiries

MONDAY_0900 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def start_of(enquiry_id: str, *, intent: str = "support", at: datetime = MONDAY_0900) -> TimerStart:
    return TimerStart(enquiry_id, at, "normal", intent, "email", "support", "smb")


def timer(session: Session, enquiry_id: str, kind: str = "first_response") -> SlaTimer:
    statement = sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id, SlaTimer.kind == kind)
    return session.scalars(statement).one()


def test_start_is_idempotent_and_spam_gets_no_timer(session: Session, policies: SlaPolicies) -> None:
    add_enquiries(session, ["e1", "e2"])
    add_enquiries(session, ["spam1"], intent="spam", queue="spam")
    items = [start_of("e1"), start_of("e2"), start_of("spam1", intent="spam")]
    now = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)
    first = start_timers(session, items, policies, now=now)
    session.commit()
    # standard policy: 480 business minutes from Monday 09:00 = Monday 17:00.
    assert first == {
        "e1": datetime(2026, 3, 2, 17, 0, tzinfo=UTC),
        "e2": datetime(2026, 3, 2, 17, 0, tzinfo=UTC),
    }
    again = start_timers(session, items, policies, now=datetime(2026, 3, 2, 9, 6, tzinfo=UTC))
    session.commit()
    assert again == first
    assert session.scalar(sa.select(sa.func.count()).select_from(SlaTimer)) == 4  # 2 × (first, resolution)
    stored = timer(session, "e1")
    assert (stored.policy, stored.status, stored.target_minutes) == ("standard", "running", 480)
    assert stored.next_check_at == datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def test_first_touch_wins(session: Session, policies: SlaPolicies) -> None:
    add_enquiries(session, ["e1", "late"])
    start_timers(session, [start_of("e1"), start_of("late")], policies, now=MONDAY_0900)
    assert stop_first_response(session, "e1", by="alice", at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    assert not stop_first_response(session, "e1", by="bob", at=datetime(2026, 3, 2, 11, 0, tzinfo=UTC))
    assert not stop_first_response(session, "nobody", by="bob", at=datetime(2026, 3, 2, 11, 0, tzinfo=UTC))
    # A touch after the due time (before any watch pass ran) still counts as a breach.
    assert stop_first_response(session, "late", by="carol", at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC))
    assert stop_resolution(session, "e1", by="alice", at=datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    session.commit()
    session.expire_all()
    met = timer(session, "e1")
    assert (met.status, met.stopped_by, met.next_check_at) == ("met", "alice", None)
    assert met.stopped_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    late = timer(session, "late")
    assert (late.status, late.stopped_by) == ("breached", "carol")
    assert late.breached_at == datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    assert timer(session, "e1", "resolution").status == "met"


def test_pause_stops_the_clock_and_resume_moves_the_due_time(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    with transaction(session_factory) as session:
        add_enquiries(session, ["e1"])
        start_timers(session, [start_of("e1")], policies, now=MONDAY_0900)
    with transaction(session_factory) as session:
        paused = pause(
            session,
            "e1",
            by="alice",
            at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
            reason="asked for logs",
            policies=policies,
        )
        assert paused == 2  # first response and resolution
    notifier = RecordingNotifier()
    # Long past the original due time: a paused timer neither breaches nor escalates.
    summary = watch_pass(session_factory, policies, notifier, now=datetime(2026, 3, 4, 9, 0, tzinfo=UTC))
    assert (summary.breached, summary.escalations_fired, notifier.sent) == (0, 0, [])
    with transaction(session_factory) as session:
        # 420 business minutes were left; resumed Wednesday 10:00 → due Wednesday 17:00.
        assert resume(
            session, "e1", by="customer", at=datetime(2026, 3, 4, 10, 0, tzinfo=UTC), policies=policies
        )
    with session_factory() as session:
        resumed = timer(session, "e1")
        assert resumed.status == "running" and resumed.paused_at is None
        assert resumed.due_at == datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
        assert resumed.next_check_at == datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
        assert [event.action for event in events_of(session, resumed.id)] == ["pause", "resume"]
    summary = watch_pass(session_factory, policies, notifier, now=datetime(2026, 3, 4, 16, 59, tzinfo=UTC))
    assert summary.breached == 0
    summary = watch_pass(session_factory, policies, notifier, now=datetime(2026, 3, 4, 17, 1, tzinfo=UTC))
    assert summary.breached == 1 and summary.escalations_fired == 1
    with session_factory() as session:
        assert timer(session, "e1").breached_at == datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
        keys = session.scalars(sa.select(SlaEvent.event_key).order_by(SlaEvent.id)).all()
        assert [key.split(":")[0] for key in keys] == ["pause", "pause", "resume", "resume", "escalation"]


def test_pause_after_the_due_time_does_not_hide_a_breach(session: Session, policies: SlaPolicies) -> None:
    add_enquiries(session, ["e1"])
    start_timers(session, [start_of("e1")], policies, now=MONDAY_0900)
    at = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)  # after first response was due, before resolution
    assert pause(session, "e1", by="alice", at=at, reason="waiting", policies=policies) == 1
    assert timer(session, "e1").status == "running"
    assert timer(session, "e1", "resolution").status == "paused"
