"""`triage review reply` end to end: a real SMTP sink, `triage sla timers`, and a real Dovecot Sent folder."""

from __future__ import annotations

import json
from datetime import timedelta
from email.message import EmailMessage

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.review import review_app, users_app
from app.commands.sla import sla_app
from connectors.notify import SmtpSettings
from connectors.smtp_outbound import OutboundSettings, SentFolder, SmtpReplySender
from pipeline.replies import drain_replies
from review import service
from store.tables import ReplyOutbox
from tests.review.review_builders import NOW, PASSWORD, add_enquiry_with_item
from tests.sla.sla_helpers import smtp_server
from tests.support.dovecot import DovecotServer

runner = CliRunner()


class Crash(BaseException):
    """The process dies after the SMTP server accepted the reply, before the commit."""


def test_review_reply_delivers_one_threaded_mail_and_the_timer_leaves_the_open_list(
    db_url: str, monkeypatch: pytest.MonkeyPatch, session_factory: sessionmaker[Session]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    runner.invoke(users_app, ["add", "sam", "--role", "sdr", "--password", PASSWORD])
    with session_factory() as session:
        item_id, enquiry_id = add_enquiry_with_item(session, due_in_minutes=5_000_000)
        session.commit()
    with smtp_server() as sink:
        monkeypatch.setenv("TRIAGE_OUTBOUND__SMTP__HOST", sink.host)
        monkeypatch.setenv("TRIAGE_OUTBOUND__SMTP__PORT", str(sink.port))
        monkeypatch.setenv("TRIAGE_OUTBOUND__SMTP__STARTTLS", "false")
        monkeypatch.setenv("TRIAGE_OUTBOUND__FROM_ADDRESS", "sales@team.example")
        before = json.loads(runner.invoke(sla_app, ["timers", "--json"]).output)
        assert enquiry_id in {row["enquiry_id"] for row in before}
        args = ["reply", str(item_id), "--user", "sam", "--text", "Thanks, booking link below", "--json"]
        result = runner.invoke(review_app, args)
        again = runner.invoke(review_app, args)  # a re-run sends nothing new
        templated = runner.invoke(
            review_app, ["reply", str(item_id), "--user", "sam", "--template", "support_ack", "--json"]
        )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["status"] == "sent" and json.loads(again.output)["reply_id"] == payload["reply_id"]
    [(recipients, message)] = sink.messages
    assert recipients == ["ann@acme.example"] and message["In-Reply-To"] == f"<{enquiry_id}@x>"
    assert "Thanks, booking link below" in message.get_payload()
    after = json.loads(runner.invoke(sla_app, ["timers", "--json"]).output)
    assert enquiry_id not in {row["enquiry_id"] for row in after if row["kind"] == "first_response"}
    # a template that does not suit the item's intent (sales_demo) is refused
    assert templated.exit_code == 1 and "does not suit" in templated.output


def test_a_crash_after_acceptance_sends_no_copy_when_the_sent_folder_shows_it(
    dovecot: DovecotServer, session_factory: sessionmaker[Session]
) -> None:
    with smtp_server() as sink:
        outbound = OutboundSettings(
            smtp=SmtpSettings(host=sink.host, port=sink.port, starttls=False),
            from_address="sales@team.example",
            sent_folder=dovecot.mailbox(name="sent", folder="Sent"),
            lease_seconds=60,
        )
        with session_factory() as session:
            item_id, _ = add_enquiry_with_item(session)
            session.commit()
            reply_id = service.send_reply(session, item_id, user="sam", text="Hi", outbound=outbound, now=NOW)
            session.commit()

        class CrashingSender(SmtpReplySender):
            def send(self, message: EmailMessage) -> None:
                super().send(message)  # accepted by the server and filed in Sent
                raise Crash

        with pytest.raises(Crash):
            drain_replies(session_factory, CrashingSender(outbound), outbound, clock=lambda: NOW)
        later = NOW + timedelta(minutes=5)
        summary = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=lambda: later)
    assert len(sink.messages) == 1, "the Sent folder showed the first copy: none re-sent"
    assert (summary.sent, summary.found_in_sent_folder) == (0, 1)
    with session_factory() as session:
        row = session.get(ReplyOutbox, reply_id)
        assert row is not None and row.status == "sent" and row.last_error == "found in the Sent folder"
        assert SentFolder(dovecot.mailbox(name="sent", folder="Sent")).holds(row.message_id)
        assert not SentFolder(dovecot.mailbox(name="sent", folder="Sent")).holds("nope@team.example")
        assert session.scalar(sa.select(sa.func.count()).select_from(ReplyOutbox)) == 1
