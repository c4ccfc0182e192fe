"""Replies that are sent: the outbox, a real SMTP sink (aiosmtpd), threading, retries, crashes, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker

from connectors.notify import SmtpSettings
from connectors.smtp_outbound import (
    MailboxOutbound,
    OutboundSettings,
    OutgoingReply,
    SenderPool,
    SmtpReplySender,
    build_reply,
)
from pipeline.replies import drain_replies
from review import service
from store.tables import DecisionRow, Enquiry, EnquiryMessage, ReplyOutbox, ReviewItem, SlaTimer
from tests.review.review_builders import NOW, add_enquiry_with_item
from tests.sla.sla_helpers import SmtpSink, free_port, smtp_server


class Crash(BaseException):
    """A process dying between the SMTP server's acceptance and the commit."""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


class ScriptedSink(SmtpSink):
    """A real SMTP server whose answers to DATA can be scripted ('451 ...', '554 ...')."""

    def __init__(self, host: str, port: int, answers: list[str]) -> None:
        super().__init__(host, port)
        self.answers = answers

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answers:
            return self.answers.pop(0)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def scripted() -> Iterator[ScriptedSink]:
    sink = ScriptedSink("127.0.0.1", free_port(), [])
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def outbound_for(sink: SmtpSink, **extra: Any) -> OutboundSettings:
    return OutboundSettings(
        smtp=SmtpSettings(host=sink.host, port=sink.port, starttls=False),
        from_address="sales@team.example",
        **extra,
    )


def queue_reply(session: Session, outbound: OutboundSettings, **item: Any) -> tuple[int, int, str]:
    item_id, enquiry_id = add_enquiry_with_item(session, **item)
    session.commit()
    reply_id = service.send_reply(
        session, item_id, user="sam", text="Thanks, booking link below", outbound=outbound, now=NOW
    )
    session.commit()
    return item_id, reply_id, enquiry_id


def first_response(session: Session, enquiry_id: str) -> SlaTimer:
    return session.scalars(
        sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id, SlaTimer.kind == "first_response")
    ).one()


def test_a_reply_reaches_the_sink_once_threaded_and_stops_the_clock_at_acceptance(
    session_factory: sessionmaker[Session],
) -> None:
    clock = Clock()
    with smtp_server() as sink, session_factory() as session:
        outbound = outbound_for(sink)
        item_id, reply_id, enquiry_id = queue_reply(session, outbound, subject="Demo for 40 seats?")
        # queued is not sent: the clock still runs and the item is still open
        assert first_response(session, enquiry_id).stopped_at is None
        clock.now = NOW + timedelta(minutes=3)
        summary = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock)
        again = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock)
        # the same text by the same person again is the same reply: nothing new to send
        assert (
            service.send_reply(
                session, item_id, user="sam", text="Thanks, booking link below", outbound=outbound, now=NOW
            )
            == reply_id
        )
        session.commit()
        drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock)
    assert (summary.sent, again.sent) == (1, 0)
    [(recipients, message)] = sink.messages
    assert recipients == ["ann@acme.example"]
    assert message["In-Reply-To"] == f"<{enquiry_id}@x>" and message["References"] == f"<{enquiry_id}@x>"
    assert message["Subject"] == "Re: Demo for 40 seats?" and message["From"] == "sales@team.example"
    with session_factory() as session:
        row = session.get(ReplyOutbox, reply_id)
        assert row is not None and row.status == "sent" and row.accepted_at == clock.now
        assert message["Message-ID"] == f"<{row.message_id}>"
        timer = first_response(session, enquiry_id)
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (clock.now, "sam", "pages")
        outbound_message = session.scalars(sa.select(EnquiryMessage)).one()
        # its Message-ID is a message key of the enquiry, so the customer's answer threads back
        assert (outbound_message.direction, outbound_message.message_key) == ("outbound", row.message_id)
        item = session.get(ReviewItem, item_id)
        assert item is not None and item.status == "done"
        kinds = session.scalars(sa.select(DecisionRow.kind).order_by(DecisionRow.id)).all()
        assert kinds == ["claim", "reply_queued", "reply_sent"]


def test_temporary_failures_are_retried_with_backoff_and_a_5xx_is_shown_with_the_servers_words(
    session_factory: sessionmaker[Session], scripted: ScriptedSink
) -> None:
    clock = Clock()
    outbound = outbound_for(scripted, backoff_seconds=60)
    scripted.answers = ["451 4.3.0 try again later"]
    with session_factory() as session:
        queue_reply(session, outbound)
    sender = SmtpReplySender(outbound)
    first = drain_replies(session_factory, sender, outbound, clock=clock)
    assert (first.sent, first.retried) == (0, 1) and "451" in first.errors[0]
    assert drain_replies(session_factory, sender, outbound, clock=clock).sent == 0  # backing off
    clock.now = NOW + timedelta(seconds=61)
    assert drain_replies(session_factory, sender, outbound, clock=clock).sent == 1
    assert len(scripted.messages) == 1

    scripted.answers = ["554 5.7.1 Message rejected: recipient does not exist"]
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session, sender_email="gone@acme.example")
        session.commit()
        failed_id = service.send_reply(session, item_id, user="sam", text="Hello", outbound=outbound, now=NOW)
        session.commit()
    failed = drain_replies(session_factory, sender, outbound, clock=clock)
    assert failed.failed == 1
    with session_factory() as session:
        row = session.get(ReplyOutbox, failed_id)
        assert row is not None and row.status == "failed"
        assert row.last_error is not None and "recipient does not exist" in row.last_error
        view = service.item_view(session, item_id, now=clock.now)
        shown = [reason for decision in view.audit for reason in decision.reasons]
        assert any("554" in reason and "recipient does not exist" in reason for reason in shown)
        assert first_response(session, view.enquiry.id).stopped_at is None


def test_a_crash_after_acceptance_re_sends_once_with_the_same_message_id(
    session_factory: sessionmaker[Session],
) -> None:
    clock = Clock()
    with smtp_server() as sink:
        outbound = outbound_for(sink, lease_seconds=60)
        with session_factory() as session:
            _, reply_id, _ = queue_reply(session, outbound)

        class CrashingSender(SmtpReplySender):
            def send(self, message: EmailMessage) -> None:
                super().send(message)
                raise Crash

        with pytest.raises(Crash):
            drain_replies(session_factory, CrashingSender(outbound), outbound, clock=clock)
        # still leased: an immediate second pass leaves it alone
        assert drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock).sent == 0
        clock.now = NOW + timedelta(seconds=61)
        with pytest.raises(Crash):  # crashes again while re-sending
            drain_replies(session_factory, CrashingSender(outbound), outbound, clock=clock)
        clock.now = NOW + timedelta(seconds=200)
        last = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock)
    ids = [message["Message-ID"] for _, message in sink.messages]
    assert len(ids) == 2 and len(set(ids)) == 1, "one more copy at most, with the same Message-ID"
    assert last.failed == 1 and last.sent == 0
    with session_factory() as session:
        row = session.get(ReplyOutbox, reply_id)
        assert row is not None and row.status == "failed" and "Sent folder" in (row.last_error or "")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"sender_email": None}, "gave no e-mail address"),
        ({"sender_email": "ann@@acme"}, "failed validation"),
        ({"sender_email": "MAILER-DAEMON@acme.example"}, "bounce or no-reply"),
        ({"intent": "spam", "queue": "spam"}, "marked spam"),
        ({"sender_email": "bob@team.example"}, "team's own"),
    ],
)
def test_replies_that_must_not_be_sent_are_refused(
    session: Session, fields: dict[str, Any], reason: str
) -> None:
    outbound = OutboundSettings(from_address="sales@team.example")
    item_id, _ = add_enquiry_with_item(session, **fields)
    session.commit()
    with pytest.raises(service.ReviewError, match=reason):
        service.send_reply(session, item_id, user="sam", text="Hello", outbound=outbound, now=NOW)
    session.rollback()
    assert session.scalar(sa.select(sa.func.count()).select_from(ReplyOutbox)) == 0


def test_crlf_in_a_subject_cannot_inject_a_header() -> None:
    message = build_reply(
        OutgoingReply(
            from_address="sales@team.example",
            to_address="ann@acme.example",
            subject="Hello\r\nBcc: victim@evil.example",
            body="Hi",
            message_id="abc@team.example",
            in_reply_to="orig@acme.example",
            references=["orig@acme.example"],
            date=NOW,
        )
    )
    assert message["Bcc"] is None and "\n" not in str(message["Subject"])
    assert message["Message-ID"] == "<abc@team.example>" and message["In-Reply-To"] == "<orig@acme.example>"


def test_rate_limits_hold_replies_back_per_recipient_domain(session_factory: sessionmaker[Session]) -> None:
    clock = Clock()
    with smtp_server() as sink:
        outbound = outbound_for(sink, per_domain_per_hour=1)
        with session_factory() as session:
            queue_reply(session, outbound)
            queue_reply(session, outbound)
        summary = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=clock)
    assert (summary.sent, summary.deferred, len(sink.messages)) == (1, 1, 1)


def test_a_mailbox_override_sends_from_its_own_address_through_its_own_server(
    session_factory: sessionmaker[Session],
) -> None:
    with smtp_server() as main, smtp_server() as support:
        outbound = OutboundSettings(
            smtp=SmtpSettings(host=main.host, port=main.port, starttls=False),
            from_address="sales@team.example",
            mailboxes={
                "support": MailboxOutbound(
                    from_address="support@team.example",
                    smtp=SmtpSettings(host=support.host, port=support.port, starttls=False),
                )
            },
        )
        with session_factory() as session:
            item_id, enquiry_id = add_enquiry_with_item(session)
            other_item, _ = add_enquiry_with_item(session, sender_email="bo@acme.example")
            enquiry = session.get(Enquiry, enquiry_id)
            assert enquiry is not None
            enquiry.source = "imap:support"
            session.commit()
            for item in (item_id, other_item):
                service.send_reply(session, item, user="sam", text="Hello", outbound=outbound, now=NOW)
            session.commit()
        pool = SenderPool(outbound)
        summary = drain_replies(session_factory, pool(""), outbound, clock=Clock(), sender_for=pool)
    assert summary.sent == 2
    assert [m["From"] for _, m in support.messages] == ["support@team.example"]
    assert [m["From"] for _, m in main.messages] == ["sales@team.example"]
    assert support.messages[0][1]["Message-ID"].endswith("@team.example>")
