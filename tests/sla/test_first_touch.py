"""First touches from anywhere: the earliest wins, the source is kept, `triage crm touch`, the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.crm import crm_app
from sla.policies import load_policies
from sla.report import build_report, render_html, summary_figures
from sla.service import TimerStart, start_timers, stop_first_response
from sla.touches import TouchError, record_touch
from store.db import transaction
from store.tables import DecisionRow, SlaTimer
from tests.sla.sla_helpers import add_enquiries

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
runner = CliRunner()


def _seed(factory: sessionmaker[Session], ids: list[str]) -> None:
    policies = load_policies()
    with transaction(factory) as session:
        add_enquiries(session, ids, received_at=MONDAY)
        start_timers(
            session,
            [TimerStart(i, MONDAY, "normal", "support", "email", "support", "smb") for i in ids],
            policies,
            now=MONDAY,
        )


def _timer(session: Session, enquiry_id: str) -> SlaTimer:
    return session.scalars(
        sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id, SlaTimer.kind == "first_response")
    ).one()


def test_the_earliest_touch_wins_and_keeps_its_source(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory, ["e1"])
    with transaction(session_factory) as session:
        assert stop_first_response(session, "e1", by="sam", at=MONDAY + timedelta(hours=3), source="pages")
        # seen later, made earlier (an answer from Outlook): it replaces the recorded stop
        assert stop_first_response(session, "e1", by="sue", at=MONDAY + timedelta(hours=1), source="mailbox")
        # a later touch changes nothing: a clock is stopped once, by the earliest touch
        assert not stop_first_response(session, "e1", by="bob", at=MONDAY + timedelta(hours=2), source="crm")
    with session_factory() as session:
        timer = _timer(session, "e1")
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (
            MONDAY + timedelta(hours=1),
            "sue",
            "mailbox",
        )
    with pytest.raises(ValueError, match="touch source"), session_factory() as session:
        stop_first_response(session, "e1", by="x", at=MONDAY, source="claim")


def test_a_touch_in_the_future_or_for_no_enquiry_is_refused(session_factory: sessionmaker[Session]) -> None:
    _seed(session_factory, ["e1"])
    with session_factory() as session:
        with pytest.raises(TouchError, match="in the future"):
            record_touch(session, "e1", by="sam", at=MONDAY + timedelta(days=1), source="crm", now=MONDAY)
        with pytest.raises(TouchError, match="no enquiry"):
            record_touch(session, "nope", by="sam", at=MONDAY, source="crm", now=MONDAY)


def test_crm_touch_stops_the_clock_by_hand_and_the_report_shows_it_by_source(
    db_url: str, monkeypatch: pytest.MonkeyPatch, session_factory: sessionmaker[Session]
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    _seed(session_factory, ["e1", "e2", "e3"])
    at = (MONDAY + timedelta(minutes=40)).isoformat()
    result = runner.invoke(crm_app, ["touch", "e1", "--by", "Dana Seller", "--at", at, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["stopped"] is True
    again = runner.invoke(crm_app, ["touch", "e1", "--by", "Dana Seller", "--at", at, "--json"])
    assert json.loads(again.output)["stopped"] is False  # already stopped at that instant
    naive = runner.invoke(crm_app, ["touch", "e1", "--by", "x", "--at", "2026-03-02T10:00:00"])
    assert naive.exit_code == 2 and "time zone" in naive.output
    bad = runner.invoke(crm_app, ["touch", "e1", "--by", "x", "--at", "yesterday"])
    assert bad.exit_code == 2
    unknown = runner.invoke(crm_app, ["touch", "zz", "--by", "x", "--at", at])
    assert unknown.exit_code == 1
    with transaction(session_factory) as session:
        stop_first_response(session, "e2", by="sam", at=MONDAY + timedelta(hours=1), source="pages")
    with session_factory() as session:
        timer = _timer(session, "e1")
        assert (timer.stopped_by, timer.touch_source) == ("Dana Seller", "crm")
        assert timer.stopped_at == MONDAY + timedelta(minutes=40)
        audit = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "first_touch")).all()
        assert len(audit) == 2 and audit[0].task == "touch_crm"
        data = build_report(
            session,
            load_policies(),
            since=MONDAY,
            until=MONDAY + timedelta(days=1),
            now=MONDAY + timedelta(hours=2),
        )
    figures = summary_figures(data)
    sources = {row["source"]: row for row in figures["by_touch_source"]}
    assert set(sources) == {"crm", "pages"}
    assert sources["crm"]["answered"] == 1 and sources["crm"]["median_minutes"] == pytest.approx(40)
    assert figures["responded"] == 2 and figures["open"] == 1
    page = render_html(data)
    assert 'data-source="crm"' in page and 'data-source="pages"' in page
