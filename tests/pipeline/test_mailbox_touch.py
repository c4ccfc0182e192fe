"""Mailbox first touch: the team's own mail in a thread, read from INBOX or Sent (a real Dovecot)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.settings import Settings
from connectors.smtp_outbound import OutboundSettings
from pipeline import jobs
from pipeline.runtime import Runtime
from sla.report import build_report, summary_figures
from store import review_repo
from store.tables import EnquiryMessage, SlaTimer
from tests.builders import T0, email_bytes, first_response_timer, skipped_reasons, team_answer
from tests.support.dovecot import DovecotServer, append_messages

NOW = T0 + timedelta(days=2)


@pytest.mark.parametrize("folder_kind", ["inbox", "sent"])
def test_a_team_mail_in_the_thread_stops_the_clock_at_its_date_on_the_next_run(
    dovecot: DovecotServer, db_url: str, tmp_path: Path, folder_kind: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    inbox, sent = f"in{tag}", f"sent{tag}"
    settings = Settings(
        home=tmp_path,
        database_url=db_url,
        parse_workers=1,
        mailboxes=[dovecot.mailbox(name="inbox", folder=inbox), dovecot.mailbox(name="sent", folder=sent)],
        outbound=OutboundSettings(team_domains=["team.example"]),
    )
    runtime = Runtime(settings, clock=lambda: NOW)
    original = f"<{tag}@customer.example>"
    append_messages(dovecot, inbox, [email_bytes(message_id=original, sent=T0)])
    append_messages(dovecot, sent, [])
    jobs.read_configured_sources(runtime)
    jobs.process(runtime)
    with runtime.factory() as session:
        user = review_repo.add_user(session, name="sam", role="sdr", password_hash="x", now=NOW)
        user.email = "SDR@team.example"
        session.commit()
        [timer] = session.scalars(sa.select(SlaTimer).where(SlaTimer.kind == "first_response")).all()
        assert timer.stopped_at is None
        enquiry_id = timer.enquiry_id

    answered_at = T0 + timedelta(minutes=45)
    answer = team_answer(tag, in_reply_to=original, sent=answered_at)
    # a reply to a thread nobody here knows: skipped, not an enquiry
    stray = email_bytes(
        message_id=f"<s{tag}@team.example>",
        sender="sdr@team.example",
        in_reply_to="<unknown@elsewhere.example>",
        sent=answered_at,
    )
    append_messages(dovecot, inbox if folder_kind == "inbox" else sent, [answer, stray])
    jobs.read_configured_sources(runtime)
    jobs.process(runtime)

    with runtime.factory() as session:
        timer = first_response_timer(session, enquiry_id)
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (answered_at, "sam", "mailbox")
        message = session.scalars(sa.select(EnquiryMessage)).one()
        assert (message.direction, message.author) == ("outbound", "sdr@team.example")
        reasons = skipped_reasons(session)
        assert reasons == ["mail from the team's own domain that answers no enquiry"]
        data = build_report(session, runtime.sla_policies, since=T0 - timedelta(days=1), until=NOW, now=NOW)
    sources = {row["source"]: row["answered"] for row in summary_figures(data)["by_touch_source"]}
    assert sources == {"mailbox": 1}
    runtime.engine.dispose()
