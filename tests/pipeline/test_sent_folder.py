"""A mailbox's own Sent folder (`ImapMailbox.sent_folder`, issue 17) against a real Dovecot.

Intake reads it as `imap:<name>:sent`: mail there only stops the clock of the enquiry it answers and
never becomes an enquiry; the reply outbox looks a Message-ID up there before re-sending after a crash.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from app.cli import app as cli_app
from config.settings import Settings
from connectors.imap import SentFolderSource
from connectors.notify import SmtpSettings
from connectors.smtp_outbound import OutboundSettings, SenderPool, SentFolder, SmtpReplySender
from flows.deployments import plan_deployments
from pipeline import jobs
from pipeline.replies import drain_replies, enqueue_reply
from pipeline.runtime import Runtime
from store import review_repo
from store.tables import Enquiry, EnquiryMessage, RawRecord, ReplyOutbox
from tests.builders import T0, email_bytes, first_response_timer, skipped_reasons, team_answer
from tests.sla.sla_helpers import smtp_server
from tests.support.dovecot import DovecotServer, append_messages

runner = CliRunner()


class Crash(BaseException):
    """The process dies after the SMTP server accepted the reply, before the commit."""


def _mailbox_json(dovecot: DovecotServer, *, folder: str, sent_folder: str) -> str:
    return json.dumps(
        [
            {
                "name": "sales",
                "host": dovecot.host,
                "port": dovecot.port,
                "ssl": False,
                "username": dovecot.user,
                "password": dovecot.password,
                "folder": folder,
                "sent_folder": sent_folder,
                "timeout_seconds": 10,
            }
        ]
    )


def test_the_sent_folder_is_a_source_of_its_own_and_joins_its_mailbox_deployment(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    mailbox = dovecot.mailbox(name="sales", folder="INBOX", sent_folder="Sent", mark_seen=True)
    settings = Settings(home=tmp_path, mailboxes=[mailbox])
    runtime = Runtime(settings)
    assert [source.name for source in runtime.configured_sources()] == ["imap:sales", "imap:sales:sent"]
    assert runtime.sent_sources == frozenset({"imap:sales:sent"})
    sent = SentFolderSource(mailbox)
    assert (sent.mailbox.folder, sent.mailbox.mark_seen, sent.mailbox.move_to) == ("Sent", False, None)
    plan = {spec.name: spec for spec in plan_deployments(settings)}
    assert plan["intake-sales"].parameters == {"sources": ["imap:sales", "imap:sales:sent"]}
    with pytest.raises(ValueError, match="sent_folder must differ"):
        dovecot.mailbox(name="sales", folder="Sent", sent_folder="Sent")


@pytest.mark.parametrize("where", ["sent", "inbox"])
def test_a_team_mail_appended_to_inbox_or_sent_stops_the_clock_on_the_next_triage_run(
    dovecot: DovecotServer, db_url: str, tmp_path: Path, where: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    inbox, sent = f"in{tag}", f"sent{tag}"
    env = {
        "TRIAGE_HOME": str(tmp_path),
        "TRIAGE_DATABASE_URL": db_url,
        "TRIAGE_PARSE_WORKERS": "1",
        "TRIAGE_MAILBOXES": _mailbox_json(dovecot, folder=inbox, sent_folder=sent),
        "TRIAGE_OUTBOUND__TEAM_DOMAINS": '["team.example"]',
    }
    original = f"<{tag}@customer.example>"
    append_messages(dovecot, inbox, [email_bytes(message_id=original, sent=T0)])
    append_messages(dovecot, sent, [])
    first = runner.invoke(cli_app, ["run", "--direct", "--json"], env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["enquiries"] == 1

    answered_at = T0 + timedelta(minutes=45)
    answer = team_answer(tag, in_reply_to=original, sent=answered_at)
    # a new mail the team wrote (prospecting), from an address outside the team domains: not an enquiry
    prospecting = email_bytes(
        message_id=f"<p{tag}@gmail.example>",
        sender="Sam <sam.seller@gmail.example>",
        subject="Following up on our chat at the fair",
        body="Would you like a demo?",
        sent=answered_at,
    )
    if where == "sent":
        append_messages(dovecot, sent, [answer, prospecting])
    else:  # the team answered from a client that keeps no Sent copy here; the answer Bcc'd the inbox
        append_messages(dovecot, inbox, [answer])
    second = runner.invoke(cli_app, ["run", "--direct", "--json"], env=env)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert (summary["enquiries"], summary["threaded"], summary["skipped"]) == (0, 1, int(where == "sent"))

    settings = Settings(home=tmp_path, database_url=db_url)
    runtime = Runtime(settings)
    with runtime.factory() as session:
        [enquiry] = session.scalars(sa.select(Enquiry)).all()
        timer = first_response_timer(session, enquiry.id)
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (
            answered_at,
            "sdr@team.example",
            "mailbox",
        )
        [message] = session.scalars(sa.select(EnquiryMessage)).all()
        assert (message.direction, message.author) == ("outbound", "sdr@team.example")
        by_source = dict(
            session.execute(sa.select(RawRecord.source, sa.func.count()).group_by(RawRecord.source)).all()
        )
        reasons = skipped_reasons(session)
        if where == "sent":
            assert by_source == {"imap:sales": 1, "imap:sales:sent": 2}
            assert reasons == ["mail in the Sent folder that answers no enquiry"]
        else:
            assert by_source == {"imap:sales": 2} and reasons == []
    runtime.engine.dispose()
    since = (T0 - timedelta(days=1)).date().isoformat()
    until = (T0 + timedelta(days=1)).date().isoformat()
    report = runner.invoke(cli_app, ["report", "sla", "--since", since, "--until", until, "--json"], env=env)
    assert report.exit_code == 0, report.output
    sources = {row["source"]: row["answered"] for row in json.loads(report.stdout)["by_touch_source"]}
    assert sources == {"mailbox": 1}


def test_a_crash_between_send_and_commit_sends_none_where_the_mailbox_sent_folder_shows_it(
    dovecot: DovecotServer, db_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    inbox, sent = f"in{tag}", f"sent{tag}"
    mailbox = dovecot.mailbox(name="sales", folder=inbox, sent_folder=sent)
    append_messages(dovecot, inbox, [email_bytes(message_id=f"<{tag}@customer.example>", sent=T0)])
    append_messages(dovecot, sent, [])
    now = T0 + timedelta(hours=1)
    with smtp_server() as sink:
        outbound = OutboundSettings(
            smtp=SmtpSettings(host=sink.host, port=sink.port, starttls=False),
            from_address="sales@team.example",
            lease_seconds=60,
        )  # no Sent folder here: the mailbox's own is used for its enquiries
        settings = Settings(
            home=tmp_path, database_url=db_url, parse_workers=1, mailboxes=[mailbox], outbound=outbound
        )
        runtime = Runtime(settings, clock=lambda: now)
        jobs.read_configured_sources(runtime)
        jobs.process(runtime)
        with runtime.factory() as session:
            [enquiry] = session.scalars(sa.select(Enquiry)).all()
            assert enquiry.source == "imap:sales"
            reply_id, _ = enqueue_reply(
                session, enquiry, author="sam", body="Tuesday works", outbound=outbound, now=now
            )
            session.commit()
        pool = SenderPool.for_mailboxes(outbound, settings.all_mailboxes)
        assert pool("imap:sales").sent_folder is not None

        class CrashingSender(SmtpReplySender):
            def send(self, message: EmailMessage) -> None:
                super().send(message)  # accepted by the server and filed in the mailbox's Sent folder
                raise Crash

        crashing = CrashingSender(pool("imap:sales").settings)
        with pytest.raises(Crash):
            drain_replies(
                runtime.factory, crashing, outbound, clock=lambda: now, sender_for=lambda _s: crashing
            )
        later = now + timedelta(minutes=5)
        summary = drain_replies(runtime.factory, pool(""), outbound, clock=lambda: later, sender_for=pool)
    assert len(sink.messages) == 1, "the mailbox's Sent folder showed the first copy: none re-sent"
    assert (summary.sent, summary.found_in_sent_folder) == (0, 1)
    with runtime.factory() as session:
        row = session.get(ReplyOutbox, reply_id)
        assert row is not None and row.status == "sent" and row.last_error == "found in the Sent folder"
        assert SentFolder(mailbox.sent_folder_mailbox()).holds(row.message_id)  # type: ignore[arg-type]
        assert review_repo.get_enquiry(session, enquiry.id) is not None
    # the copy filed in Sent comes back on the next intake pass: a duplicate, never a second message
    jobs.read_configured_sources(runtime)
    jobs.process(runtime)
    with runtime.factory() as session:
        outbound_messages = session.scalars(
            sa.select(EnquiryMessage).where(EnquiryMessage.direction == "outbound")
        ).all()
        assert len(outbound_messages) == 1
        statuses = session.scalars(
            sa.select(RawRecord.status).where(RawRecord.source == "imap:sales:sent")
        ).all()
        assert statuses == ["duplicate"]
        assert session.scalar(sa.select(sa.func.count()).select_from(Enquiry)) == 1
    runtime.engine.dispose()
