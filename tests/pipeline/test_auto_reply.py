"""The automated lane acts: a task's auto_reply template, sent through the reply outbox to a real sink."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.policy import load_policy
from config.settings import DEFAULT_POLICY_DIR
from connectors.notify import SmtpSettings
from connectors.smtp_outbound import OutboundSettings, SmtpReplySender
from models.errors import ConfigError
from models.records import Channel
from pipeline.process import PipelineContext, process_pending
from pipeline.replies import AutoReplier, drain_replies
from review.reply_templates import load_templates
from sla.policies import load_policies
from sla.report import build_report, summary_figures
from store.db import transaction
from store.flags import set_automation_paused
from store.tables import DecisionRow, Enquiry, ReplyOutbox, SlaTimer
from tests.builders import T0, email_bytes
from tests.sla.sla_helpers import SmtpSink, smtp_server
from tests.support.pipeline_support import store

PRICING = "What would it cost for 40 seats?"


def _policy_dir(tmp_path: Path, auto_reply: str = "pricing_page") -> Path:
    target = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    matrix = target / "decision_matrix.yaml"
    text = matrix.read_text(encoding="utf-8").replace(
        "    rollback: delete or merge the lead in the CRM; the audit row names the enquiry\n",
        "    rollback: delete or merge the lead in the CRM; the audit row names the enquiry\n"
        f"    auto_reply: {auto_reply}\n",
        1,
    )
    matrix.write_text(text, encoding="utf-8")
    return target


def _context(
    context: PipelineContext, folder: Path, sink: SmtpSink
) -> tuple[PipelineContext, OutboundSettings]:
    policy = load_policy(folder)
    outbound = OutboundSettings(
        smtp=SmtpSettings(host=sink.host, port=sink.port, starttls=False),
        from_address="sales@team.example",
        from_name="Acme Sales",
    )
    tasks = {name: task.auto_reply for name, task in policy.matrix.tasks.items()}
    replier = AutoReplier(
        tasks, dict(load_templates(folder)), outbound, lambda row, decision: "2 business hours"
    )
    return dataclasses.replace(context, policy=policy, auto_replies=replier, clock=lambda: T0), outbound


def test_an_automated_pricing_enquiry_gets_one_acknowledgement_and_the_human_clock_runs_on(
    session_factory: sessionmaker[Session], context: PipelineContext, tmp_path: Path
) -> None:
    with smtp_server() as sink:
        ctx, outbound = _context(context, _policy_dir(tmp_path), sink)
        store(
            session_factory,
            Channel.EMAIL,
            [
                email_bytes(message_id="<p1@x>", body=PRICING),
                email_bytes(message_id="<d1@x>", body="We want a demo."),  # the template suits pricing only
            ],
        )
        summary = process_pending(session_factory, ctx)
        sender = SmtpReplySender(outbound)
        sent = drain_replies(session_factory, sender, outbound, clock=lambda: T0 + timedelta(minutes=2))
        again = drain_replies(session_factory, sender, outbound, clock=lambda: T0 + timedelta(minutes=2))
    assert summary.auto_replies_queued == 1 and (sent.sent, again.sent) == (1, 0)
    [(recipients, message)] = sink.messages
    assert recipients == ["dana@brightwater-analytics.com"] and message["In-Reply-To"] == "<p1@x>"
    assert "https://example.com/pricing" in message.get_payload() and "Acme Sales" in message.get_payload()
    with session_factory() as session:
        enquiry = session.scalars(sa.select(Enquiry).where(Enquiry.message_key == "p1@x")).one()
        assert enquiry.lane == "automate"
        kinds = session.scalars(
            sa.select(DecisionRow.kind).where(DecisionRow.enquiry_id == enquiry.id).order_by(DecisionRow.id)
        ).all()
        assert kinds == ["triage", "auto_reply_queued", "reply_sent"]
        timer = session.scalars(
            sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry.id, SlaTimer.kind == "first_response")
        ).one()
        # by default an automated reply is an acknowledgement, not the human first touch
        assert timer.stopped_at is None
        row = session.scalars(sa.select(ReplyOutbox)).one()
        assert (row.kind, row.author, row.template, row.status) == (
            "auto_reply",
            "system",
            "pricing_page",
            "sent",
        )
        data = build_report(
            session, load_policies(), since=T0 - timedelta(days=1), until=T0 + timedelta(days=1), now=T0
        )
    figures = summary_figures(data)
    # the acknowledgement target is reported apart; no human first response happened
    assert figures["acknowledgements"]["sent"] == 1 and figures["responded"] == 0
    assert figures["acknowledgements"]["p50_minutes"] == pytest.approx(2.0)


def test_with_the_kill_switch_on_no_acknowledgement_is_sent(
    session_factory: sessionmaker[Session], context: PipelineContext, tmp_path: Path
) -> None:
    with smtp_server() as sink:
        ctx, outbound = _context(context, _policy_dir(tmp_path), sink)
        store(session_factory, Channel.EMAIL, [email_bytes(message_id="<p1@x>", body=PRICING)])
        process_pending(session_factory, ctx)  # queued while automation was on
        with transaction(session_factory) as session:
            set_automation_paused(session, True, reason="templates under review", by="ops")
        store(
            session_factory, Channel.EMAIL, [email_bytes(message_id="<p2@x>", body=PRICING)], source="later"
        )
        later = process_pending(session_factory, ctx)
        held = drain_replies(session_factory, SmtpReplySender(outbound), outbound, clock=lambda: T0)
    assert later.auto_replies_queued == 0, "the kill switch keeps enquiries out of the automated lane"
    assert held.sent == 0 and held.deferred == 1 and sink.messages == []
    with session_factory() as session:
        row = session.scalars(sa.select(ReplyOutbox)).one()
        assert row.status == "pending" and row.last_error == "held: automation is paused"


def test_the_policy_may_count_an_automated_reply_as_first_response(
    session_factory: sessionmaker[Session], context: PipelineContext, tmp_path: Path
) -> None:
    with smtp_server() as sink:
        ctx, outbound = _context(context, _policy_dir(tmp_path), sink)
        store(session_factory, Channel.EMAIL, [email_bytes(message_id="<p1@x>", body=PRICING)])
        process_pending(session_factory, ctx)
        drain_replies(
            session_factory, SmtpReplySender(outbound), outbound, clock=lambda: T0, automated_counts=True
        )
    with session_factory() as session:
        timer = session.scalars(sa.select(SlaTimer).where(SlaTimer.kind == "first_response")).one()
        assert (timer.stopped_at, timer.touch_source, timer.stopped_by) == (T0, "automated", "system")


def test_an_auto_reply_naming_a_missing_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tasks\.create_or_update_lead\.auto_reply names 'nope'"):
        load_policy(_policy_dir(tmp_path, auto_reply="nope"))
