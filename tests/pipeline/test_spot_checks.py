"""The live precision monitor (issue 13): spot checks, live precision, the automatic task pause."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli_app
from connectors.notify import NotifySettings, SmtpSettings, build_notifier
from models import live_precision
from models.errors import ConfigError
from models.live_precision import Candidate, choose, selection_score, wilson_interval
from models.records import Channel
from pipeline.process import PipelineContext, process_pending
from review import service
from store import flags, model_registry
from store.db import transaction
from store.tables import CrmOutbox, DecisionRow, Enquiry, ReviewItem, SlaTimer, SpotCheck
from tests.builders import email_bytes
from tests.sla.sla_helpers import smtp_server
from tests.support.pipeline_support import ShadowKeywordModel, store

DAY1 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
TASK = "create_or_update_lead"  # sales_demo and pricing: automated by the default decision matrix


def test_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 1) or (0, 0)
    assert low == 0 and high == pytest.approx(0.7935, abs=1e-4)
    low, high = wilson_interval(19, 20) or (0, 0)
    assert (low, high) == (pytest.approx(0.7639, abs=1e-4), pytest.approx(0.9911, abs=1e-4))
    low, high = wilson_interval(950, 1000) or (0, 0)
    assert low < 0.95 < high and high - low < 0.03


def test_selection_is_deterministic_near_the_share_and_keeps_a_daily_minimum() -> None:
    candidates = [Candidate(f"e{i}", "t", "m", "pricing") for i in range(10_000)]
    chosen = choose(candidates, share=0.02, min_per_day=1, checked_today={})
    assert 150 <= len(chosen) <= 250 and set(chosen.values()) == {"share"}
    assert chosen == choose(list(reversed(candidates)), share=0.02, min_per_day=1, checked_today={})
    # A quiet task still gets one a day, the lowest-scoring; none when today already has one.
    few = [Candidate(f"q{i}", "quiet", "m", "careers") for i in range(3)]
    picked = choose(few, share=0.0, min_per_day=1, checked_today={})
    assert list(picked.values()) == ["daily_minimum"]
    assert list(picked) == [min((c.enquiry_id for c in few), key=selection_score)]
    assert choose(few, share=0.0, min_per_day=1, checked_today={"quiet": 1}) == {}
    assert len(choose(few, share=0.0, min_per_day=2, checked_today={"quiet": 1})) == 1


def _clocked(context: PipelineContext, at: list[datetime]) -> PipelineContext:
    context.clock = lambda: at[0]
    return context


def _pause_after(context: PipelineContext, minimum: int) -> PipelineContext:
    """The context with `spot_checks.min_reviewed` set to `minimum` (the policy is frozen: a copy)."""
    lanes = context.policy.lanes
    spot = lanes.spot_checks.model_copy(update={"min_reviewed": minimum})
    context.policy = context.policy.model_copy(
        update={"lanes": lanes.model_copy(update={"spot_checks": spot})}
    )
    return context


def _activate_keyword_model(factory: sessionmaker[Session], target: float = 0.95) -> None:
    with transaction(factory) as session:
        model_registry.add_version(
            session,
            version="test-keywords",
            artifact_path="unused",
            provenance={"labels": ["sales_demo", "pricing", "spam"], "params": {"target_precision": target}},
            created_at=DAY1 - timedelta(days=1),
            status="active",
        )


def _demos(prefix: str, n: int) -> list[bytes]:
    return [
        email_bytes(message_id=f"<{prefix}{i}@x>", body=f"We want a demo, team {prefix}{i}.")
        for i in range(n)
    ]


def _spot_item(session: Session) -> ReviewItem:
    return session.scalars(
        sa.select(ReviewItem).where(ReviewItem.lane == "automate", ReviewItem.status == "open")
    ).first()  # type: ignore[return-value]


def test_spot_checks_leave_the_customers_handling_as_automated_and_one_a_day_per_task(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    at = [DAY1]
    context = _clocked(context, at)
    store(session_factory, Channel.EMAIL, _demos("a", 6), source="day1")
    process_pending(session_factory, context)
    with session_factory() as session:
        enquiries = {e.id: e for e in session.scalars(sa.select(Enquiry))}
        checks = list(session.scalars(sa.select(SpotCheck)))
        expected = choose(
            [Candidate(e, TASK, "test-keywords", "sales_demo") for e in enquiries],
            share=0.02,
            min_per_day=1,
            checked_today={},
        )
        assert {c.enquiry_id: c.reason for c in checks} == expected and len(checks) >= 1
        for check in checks:
            enquiry = enquiries[check.enquiry_id]
            assert (enquiry.lane, enquiry.status, check.task, check.intent) == (
                "automate",
                "automated",
                TASK,
                "sales_demo",
            )
            keys = set(
                session.scalars(
                    sa.select(CrmOutbox.idempotency_key).where(CrmOutbox.enquiry_id == enquiry.id)
                )
            )
            assert keys == {f"lead:{enquiry.id}"}  # the lead as automated; no SDR task
            item = session.scalars(sa.select(ReviewItem).where(ReviewItem.enquiry_id == enquiry.id)).one()
            assert (item.lane, item.status) == ("automate", "open")
    process_pending(session_factory, context)  # nothing pending: nothing more chosen
    store(session_factory, Channel.EMAIL, _demos("b", 1), source="day1-later")
    process_pending(session_factory, context)
    with session_factory() as session:
        later = session.scalars(sa.select(SpotCheck).where(SpotCheck.selected_at > DAY1)).all()
        assert len(session.scalars(sa.select(SpotCheck)).all()) == len(checks) + len(later)
    at[0] = DAY1 + timedelta(days=1)  # a new day: the task gets its minimum again
    store(session_factory, Channel.EMAIL, _demos("c", 1), source="day2")
    process_pending(session_factory, context)
    with session_factory() as session:
        day2 = session.scalars(sa.select(SpotCheck).where(SpotCheck.selected_at >= at[0])).all()
        assert [c.reason for c in day2] in (["daily_minimum"], ["share"])


def test_a_wrong_spot_check_pauses_its_task_alone_until_a_person_resumes_it(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    at = [DAY1]
    context = _pause_after(_clocked(context, at), 2)
    context.shadow = ShadowKeywordModel()  # calls everything support
    _activate_keyword_model(session_factory)
    with transaction(session_factory) as session:
        model_registry.add_version(
            session,
            version="test-shadow",
            artifact_path="unused",
            provenance={},
            created_at=DAY1,
            status="shadow",
        )
    store(session_factory, Channel.EMAIL, _demos("a", 3), source="day1")
    process_pending(session_factory, context)

    with transaction(session_factory) as session:
        item = _spot_item(session)
        timer_before = session.scalars(
            sa.select(SlaTimer.status).where(
                SlaTimer.enquiry_id == item.enquiry_id, SlaTimer.kind == "resolution"
            )
        ).all()
        service.accept(session, item.id, user="sam", now=DAY1 + timedelta(minutes=5))
        figures = {tp.task: tp for tp in live_precision.task_precisions(session)}
        assert (figures[TASK].reviewed, figures[TASK].correct, figures[TASK].paused) == (1, 1, False)
        # Accepting a spot check closes the check, not the automated enquiry's SLA clock.
        assert (
            session.scalars(
                sa.select(SlaTimer.status).where(
                    SlaTimer.enquiry_id == item.enquiry_id, SlaTimer.kind == "resolution"
                )
            ).all()
            == timer_before
        )
        report = live_precision.monitor_report(session)
        assert report["shadow"]["version"] == "test-shadow"
        assert (report["shadow"]["automated"], report["shadow"]["correct"]) == (1, 0)

    at[0] = DAY1 + timedelta(days=1)
    store(session_factory, Channel.EMAIL, _demos("b", 1), source="day2")
    process_pending(session_factory, context)
    with transaction(session_factory) as session:
        item = _spot_item(session)
        service.correct(
            session, item.id, user="sam", intent="support", priority="normal", queue="support", now=at[0]
        )
        figures = {tp.task: tp for tp in live_precision.task_precisions(session)}[TASK]
        assert (figures.reviewed, figures.correct) == (2, 1)
        assert figures.high is not None and figures.high < 0.95 and figures.paused
        assert set(flags.paused_tasks(session)) == {TASK}
        audit = session.scalars(
            sa.select(DecisionRow).where(
                DecisionRow.enquiry_id == item.enquiry_id, DecisionRow.kind == "task_pause"
            )
        ).one()
        assert audit.actor == "live-precision-monitor"
        assert "below the target 0.950" in audit.reasons[0] and "Wilson" in audit.reasons[0]

    # Paused: a demo request goes to people (Hybrid); spam discarding (another task) stays automated.
    store(
        session_factory,
        Channel.EMAIL,
        [
            email_bytes(message_id="<p1@x>", body="A demo please."),
            email_bytes(message_id="<p2@x>", subject="WIN", body="casino bonus now"),
        ],
        source="paused",
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        demo = session.scalars(sa.select(Enquiry).where(Enquiry.message_key == "p1@x")).one()
        spam = session.scalars(sa.select(Enquiry).where(Enquiry.message_key == "p2@x")).one()
        assert (demo.lane, spam.lane) == ("hybrid", "automate")
        reasons = session.scalars(
            sa.select(DecisionRow.reasons).where(DecisionRow.enquiry_id == demo.id)
        ).one()
        assert any(f"automation of task {TASK} paused" in reason for reason in reasons)

    with smtp_server() as smtp:
        notifier = build_notifier(
            NotifySettings(
                smtp=SmtpSettings(
                    host=smtp.host, port=smtp.port, starttls=False, from_address="t@example.com"
                ),
                recipients={"ops_lead": ["ops@example.com"]},
            )
        )
        assert live_precision.deliver_pause_notices(session_factory, notifier, now=at[0]) == 1
        assert live_precision.deliver_pause_notices(session_factory, notifier, now=at[0]) == 0
    assert [rcpt for rcpt, _ in smtp.messages] == [["ops@example.com"]]
    assert smtp.messages[0][1]["Subject"] == f"Automation paused: task {TASK}"

    with transaction(session_factory) as session:
        with pytest.raises(ConfigError, match="person"):
            live_precision.resume_task(session, TASK, by="system", now=at[0])
        with pytest.raises(ConfigError, match="not paused"):
            live_precision.resume_task(session, "route_to_queue", by="olga", now=at[0])
        live_precision.resume_task(session, TASK, by="olga", now=at[0] + timedelta(hours=1))
        assert flags.paused_tasks(session) == {}
        figures = {tp.task: tp for tp in live_precision.task_precisions(session)}[TASK]
        assert (figures.reviewed, figures.paused) == (0, False)  # counts afresh after a resume
    store(session_factory, Channel.EMAIL, [email_bytes(message_id="<r1@x>", body="Demo?")], source="resumed")
    process_pending(session_factory, context)
    with session_factory() as session:
        assert (
            session.scalars(sa.select(Enquiry.lane).where(Enquiry.message_key == "r1@x")).one() == "automate"
        )


def test_status_json_and_the_automation_commands_show_and_resume_a_paused_task(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    session_factory: sessionmaker[Session],
    context: PipelineContext,
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    at = [DAY1]
    context = _pause_after(_clocked(context, at), 1)
    _activate_keyword_model(session_factory)
    store(session_factory, Channel.EMAIL, _demos("a", 2), source="day1")
    process_pending(session_factory, context)
    with transaction(session_factory) as session:
        item = _spot_item(session)
        service.correct(
            session, item.id, user="sam", intent="pricing", priority="normal", queue="sales", now=DAY1
        )
    runner = CliRunner()
    status = json.loads(runner.invoke(cli_app, ["status", "--json"]).output)
    task = {t["task"]: t for t in status["live_precision"]["tasks"]}[TASK]
    assert (task["reviewed"], task["correct"], task["paused"]) == (1, 0, True)
    assert task["high"] == pytest.approx(0.7935, abs=1e-4) and task["target"] == 0.95
    assert status["live_precision"]["spot_checks"][TASK]["reviewed"] == 1
    listed = runner.invoke(cli_app, ["automation", "tasks"])
    assert listed.exit_code == 0 and "PAUSED" in listed.output
    refused = runner.invoke(cli_app, ["automation", "resume-task", TASK, "--by", "bot"])
    assert isinstance(refused.exception, ConfigError)  # `triage` prints it and exits 2
    resumed = runner.invoke(cli_app, ["automation", "resume-task", TASK, "--by", "Olga"])
    assert resumed.exit_code == 0, resumed.output
    after = json.loads(runner.invoke(cli_app, ["automation", "tasks", "--json"]).output)
    assert {t["task"]: t for t in after["tasks"]}[TASK]["paused"] is False


def test_the_pause_rule_needs_the_bound_below_the_target_and_the_minimum_sample() -> None:
    def figures(reviewed: int, correct: int) -> live_precision.TaskPrecision:
        low, high = wilson_interval(correct, reviewed) or (None, None)
        return live_precision.TaskPrecision(
            task=TASK,
            model_version="v",
            reviewed=reviewed,
            correct=correct,
            precision=correct / reviewed,
            low=low,
            high=high,
            target=0.95,
            paused=False,
            reason=None,
            since=None,
        )

    assert not live_precision.should_pause(figures(1, 0), minimum=10)  # one wrong check: bound 0.79
    assert live_precision.should_pause(figures(1, 0), minimum=1)
    assert not live_precision.should_pause(figures(9, 6), minimum=10)  # 9 < 10, however bad
    assert live_precision.should_pause(figures(10, 8), minimum=10)  # upper bound 0.943 < 0.95
    assert not live_precision.should_pause(figures(10, 9), minimum=10)  # upper bound 0.982
    assert not live_precision.should_pause(figures(40, 38), minimum=10)  # 0.95 observed: bound above


def test_one_wrong_spot_check_does_not_pause_a_task_under_the_default_policy(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    at = [DAY1]
    context = _clocked(context, at)
    assert context.policy.lanes.spot_checks.min_reviewed == 10  # the bundled lanes.yaml
    _activate_keyword_model(session_factory)
    store(session_factory, Channel.EMAIL, _demos("a", 3), source="day1")
    process_pending(session_factory, context)
    with transaction(session_factory) as session:
        assert live_precision.min_reviewed(session) == 10  # stored by the pipeline for reviews
        item = _spot_item(session)
        service.correct(
            session, item.id, user="sam", intent="pricing", priority="normal", queue="sales", now=DAY1
        )
        figures = {tp.task: tp for tp in live_precision.task_precisions(session)}[TASK]
        assert (figures.reviewed, figures.correct, figures.paused) == (1, 0, False)
        assert figures.high is not None and figures.high < 0.95  # the bound alone would have paused it
        assert flags.paused_tasks(session) == {}
        # The same figures with a minimum of one pause it: the sample size is what held it back.
        paused = live_precision.evaluate_task(session, TASK, now=DAY1, minimum=1)
        assert paused is not None and paused.paused and set(flags.paused_tasks(session)) == {TASK}
