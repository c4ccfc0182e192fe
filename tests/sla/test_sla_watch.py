"""The watch pass: tiers fire once across restarts and downtime, and reach a real SMTP server and webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from connectors.notify import NotifySettings, SmtpSettings, build_notifier
from sla.policies import SlaPolicies
from sla.service import TimerStart, start_timers, stop_first_response
from sla.watch import watch_pass
from store import sla_repo
from store.db import make_engine, make_session_factory, transaction
from store.tables import SlaEvent, SlaTimer
from tests.sla.sla_helpers import RecordingNotifier, add_enquiries, smtp_server, webhook_server

MONDAY_0900 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# The shipped `urgent` policy: 30 minutes in the extended-hours calendar (weekdays from 07:00);
# tiers at 50% (warn_ops_lead), 100% (notify_ops_lead) and 200% (escalate_manager).
AT_50, AT_100, AT_200 = (MONDAY_0900 + timedelta(minutes=m) for m in (15, 30, 60))


def seed_urgent(factory: sessionmaker[Session], policies: SlaPolicies, ids: list[str]) -> None:
    with transaction(factory) as session:
        add_enquiries(session, ids, priority="urgent", subject="Our <b>production</b> is down & @channel")
        items = [TimerStart(i, MONDAY_0900, "urgent", "support", "email", "support", "smb") for i in ids]
        start_timers(session, items, policies, now=MONDAY_0900)


def event_keys(factory: sessionmaker[Session]) -> list[tuple[str, str, bool]]:
    with factory() as session:
        rows = session.execute(
            sa.select(SlaTimer.enquiry_id, SlaEvent.event_key, SlaEvent.sent_at.is_not(None))
            .join(SlaTimer, SlaTimer.id == SlaEvent.timer_id)
            .order_by(SlaTimer.enquiry_id, SlaEvent.event_key)
        )
        return [(enquiry_id, key, bool(sent)) for enquiry_id, key, sent in rows]


def test_each_tier_fires_once_across_restarts(
    db_url: str, session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    seed_urgent(session_factory, policies, ["e1"])
    notifier = RecordingNotifier()
    before = watch_pass(session_factory, policies, notifier, now=AT_50 - timedelta(seconds=1))
    assert (before.checked, before.escalations_fired) == (0, 0)
    first = watch_pass(session_factory, policies, notifier, now=AT_50)
    assert (first.checked, first.escalations_fired, first.messages_sent) == (1, 1, 2)  # ops_lead + slack
    # A restart: a new engine and session factory, same database, same minute, then every minute after.
    restarted = make_session_factory(make_engine(db_url))
    for minute in range(0, 14):
        summary = watch_pass(restarted, policies, notifier, now=AT_50 + timedelta(minutes=minute))
        assert summary.escalations_fired == 0 and summary.checked == 0
    at_100 = watch_pass(restarted, policies, notifier, now=AT_100)
    assert (at_100.breached, at_100.escalations_fired) == (1, 1)
    watch_pass(restarted, policies, notifier, now=AT_100 + timedelta(minutes=1))
    at_200 = watch_pass(restarted, policies, notifier, now=AT_200)
    assert at_200.escalations_fired == 1
    # Three days on only the resolution clock (240 minutes, no tiers) has something to do: it breaches.
    later = watch_pass(restarted, policies, notifier, now=AT_200 + timedelta(days=3))
    assert (later.breached, later.checked, later.escalations_fired, later.messages_sent) == (1, 1, 0, 0)
    quiet = watch_pass(restarted, policies, notifier, now=AT_200 + timedelta(days=4))
    assert (quiet.breached, quiet.checked, quiet.escalations_fired) == (0, 0, 0)
    assert event_keys(session_factory) == [
        ("e1", "escalation:0", True),
        ("e1", "escalation:1", True),
        ("e1", "escalation:2", True),
    ]
    actions = [n.subject.split(":")[0] for n in notifier.to("ops_lead")]
    assert actions == ["SLA warn_ops_lead", "SLA notify_ops_lead", "SLA escalate_manager"]
    assert len(notifier.to("manager")) == 1 and len(notifier.to("slack")) == 3
    with session_factory() as session:
        stored = session.scalars(sa.select(SlaTimer).where(SlaTimer.kind == "first_response")).one()
        assert (stored.status, stored.next_check_at) == ("breached", None)


def test_catch_up_after_downtime_fires_each_tier_once_in_one_digest(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    ids = [f"e{n}" for n in range(30)]
    seed_urgent(session_factory, policies, ids)
    with transaction(session_factory) as session:
        # One enquiry was answered in time: it must not escalate at all.
        stop_first_response(session, "e0", by="alice", at=MONDAY_0900 + timedelta(minutes=5))
    notifier = RecordingNotifier()
    # Down from 09:00 to Tuesday: the first pass sees all three tiers crossed for 29 enquiries.
    summary = watch_pass(session_factory, policies, notifier, now=MONDAY_0900 + timedelta(days=1))
    assert summary.breached == 29 + 30  # first responses, and every resolution clock (240 minutes)
    assert summary.escalations_fired == 29 * 3
    assert summary.events_delivered == 29 * 3
    # One digest per role, not one message per escalation per missed minute.
    assert sorted(n.role for n in notifier.sent) == ["manager", "ops_lead", "slack"]
    ops_text = notifier.to("ops_lead")[0].text
    assert ops_text.count("enquiry e") == 29 * 3 and "enquiry e0 " not in ops_text
    again = watch_pass(session_factory, policies, notifier, now=MONDAY_0900 + timedelta(days=1, minutes=1))
    assert (again.escalations_fired, again.messages_sent) == (0, 0)
    assert all(sent for _, _, sent in event_keys(session_factory))


def test_failed_role_is_retried_without_repeating_delivered_roles(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    seed_urgent(session_factory, policies, ["e1"])
    notifier = RecordingNotifier()
    notifier.failing.add("slack")
    first = watch_pass(session_factory, policies, notifier, now=AT_50)
    assert first.escalations_fired == 1 and len(first.failures) == 1 and "slack" in first.failures[0]
    assert [n.role for n in notifier.sent] == ["ops_lead"]
    assert event_keys(session_factory) == [("e1", "escalation:0", False)]
    still_down = watch_pass(session_factory, policies, notifier, now=AT_50 + timedelta(minutes=1))
    assert still_down.messages_sent == 0
    notifier.failing.clear()
    recovered = watch_pass(session_factory, policies, notifier, now=AT_50 + timedelta(minutes=2))
    assert recovered.messages_sent == 1 and recovered.events_delivered == 1
    assert [n.role for n in notifier.sent] == ["ops_lead", "slack"]  # ops lead told once
    assert event_keys(session_factory) == [("e1", "escalation:0", True)]


def test_roles_without_a_destination_are_skipped_not_retried_forever(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    seed_urgent(session_factory, policies, ["e1"])
    notifier = RecordingNotifier(roles=["ops_lead"])
    summary = watch_pass(session_factory, policies, notifier, now=AT_50)
    assert summary.skipped_roles == ["slack"] and summary.events_delivered == 1
    assert event_keys(session_factory) == [("e1", "escalation:0", True)]


def test_notifications_reach_a_real_smtp_server_and_webhook(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    seed_urgent(session_factory, policies, ["e1"])
    with smtp_server() as smtp, webhook_server() as hook:
        settings = NotifySettings(
            smtp=SmtpSettings(
                host=smtp.host, port=smtp.port, starttls=False, from_address="triage@example.com"
            ),
            recipients={"ops_lead": ["ops@example.com"], "manager": ["boss@example.com", "cto@example.com"]},
            slack_webhook_url=SecretStr(hook.url),
        )
        notifier = build_notifier(settings)
        assert notifier.roles() == {"ops_lead", "manager", "slack"}
        hook.status = 503  # Slack is down at first
        first = watch_pass(session_factory, policies, notifier, now=AT_50)
        assert len(smtp.messages) == 1 and hook.bodies == [] and first.failures
        hook.status = 200
        watch_pass(session_factory, policies, notifier, now=AT_50 + timedelta(minutes=1))
        watch_pass(session_factory, policies, notifier, now=AT_100)
        watch_pass(session_factory, policies, notifier, now=AT_200)
    recipients = [rcpt for rcpt, _ in smtp.messages]
    ops, managers = ["ops@example.com"], ["boss@example.com", "cto@example.com"]
    assert recipients == [ops, ops, managers, ops]
    subjects = [message["Subject"] for _, message in smtp.messages]
    assert subjects[0] == "SLA warn_ops_lead: enquiry e1 (urgent)"
    assert subjects[1] == "SLA notify_ops_lead: enquiry e1 (urgent)"
    assert smtp.messages[2][1]["To"] == "boss@example.com, cto@example.com"
    body = smtp.messages[0][1].get_payload(decode=True)
    assert isinstance(body, bytes) and b"enquiry e1" in body
    # Three Slack posts (warn retried once, then 100% and 200%); the enquiry's markup is escaped.
    assert len(hook.bodies) == 3
    assert "warn_ops_lead" in hook.bodies[0]["text"]
    assert "&lt;b&gt;production&lt;/b&gt; is down &amp; @channel" in hook.bodies[0]["text"]
    assert "<b>" not in hook.bodies[0]["text"]


def test_a_backlog_larger_than_one_pass_is_caught_up_over_passes_once(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    ids = [f"e{n:02d}" for n in range(25)]
    seed_urgent(session_factory, policies, ids)
    notifier = RecordingNotifier()
    later = MONDAY_0900 + timedelta(days=1)
    passes = [watch_pass(session_factory, policies, notifier, now=later, max_timers=10) for _ in range(6)]
    # 50 timers (first response and resolution), 10 per pass; each tier recorded once in total.
    assert [summary.checked for summary in passes] == [10, 10, 10, 10, 10, 0]
    assert sum(summary.escalations_fired for summary in passes) == 25 * 3
    assert len(event_keys(session_factory)) == 25 * 3
    assert all(sent for _, _, sent in event_keys(session_factory))


# SQLite has one writer at a time; the advisory lock that serialises workers exists on PostgreSQL.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_second_worker_skips_while_a_pass_holds_the_lock(
    session_factory: sessionmaker[Session], policies: SlaPolicies
) -> None:
    seed_urgent(session_factory, policies, ["e1"])
    with session_factory() as holder, holder.begin():
        assert sla_repo.try_watch_lock(holder)
        skipped = watch_pass(session_factory, policies, RecordingNotifier(), now=AT_200)
        assert skipped.checked == 0 and skipped.failures == ["skipped: another watch pass is running"]
    done = watch_pass(session_factory, policies, RecordingNotifier(), now=AT_200)
    assert done.checked == 1 and done.escalations_fired == 3  # the resolution clock is not due yet
