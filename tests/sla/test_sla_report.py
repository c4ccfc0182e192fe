"""The ops lead's report: figures checked against the database, rendered in headless Chromium to a PNG."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sla.policies import SlaPolicies
from sla.report import build_report, percentile, render_html, write_csv
from sla.service import TimerStart, start_timers, stop_first_response
from sla.watch import watch_pass
from store import sla_repo
from store.db import transaction
from store.tables import DecisionRow, Enquiry, ReviewItem, SlaTimer
from tests.sla.sla_helpers import RecordingNotifier, add_enquiries

CHROMIUM = Path("/usr/bin/chromium")
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TUESDAY = MONDAY + timedelta(days=1)
NOW = TUESDAY + timedelta(hours=5)  # Tuesday 14:00
HOSTILE = '<script>window.__pwned = 1</script><img src="https://tracker.example/x.png">'


def seed(factory: sessionmaker[Session], policies: SlaPolicies) -> None:
    with transaction(factory) as session:
        add_enquiries(session, ["e1"], received_at=MONDAY, channel="email", lane="automate")
        add_enquiries(session, ["e2"], received_at=MONDAY, channel="form", intent="pricing", queue="sales")
        add_enquiries(session, ["e3"], received_at=MONDAY, channel="chat", lane="human_only", subject=HOSTILE)
        add_enquiries(session, ["e4"], received_at=TUESDAY, channel="email")
        add_enquiries(session, ["e5"], received_at=TUESDAY, channel="form", intent="spam", queue="spam")
        starts = [
            TimerStart("e1", MONDAY, "normal", "support", "email", "support", "smb"),
            TimerStart("e2", MONDAY, "normal", "pricing", "form", "sales", "smb"),
            TimerStart("e3", MONDAY, "normal", "support", "chat", "support", "smb"),
            TimerStart("e4", TUESDAY, "normal", "support", "email", "support", "smb"),
            TimerStart("e5", TUESDAY, "normal", "spam", "form", "spam", "smb"),
        ]
        start_timers(session, starts, policies, now=TUESDAY)
        stop_first_response(session, "e1", by="alice", at=MONDAY + timedelta(minutes=30))
        stop_first_response(session, "e2", by="bob", at=MONDAY + timedelta(hours=6))  # due 13:00: breached
        session.add_all(
            [
                ReviewItem(enquiry_id="e1", lane="automate", queue="support", status="done",
                           claimed_by="alice", created_at=MONDAY, closed_at=MONDAY + timedelta(minutes=30)),
                ReviewItem(enquiry_id="e2", lane="hybrid", queue="sales", status="done", claimed_by="bob",
                           created_at=MONDAY, closed_at=MONDAY + timedelta(minutes=90)),
                ReviewItem(enquiry_id="e3", lane="human_only", queue="support", status="claimed",
                           claimed_by="=HYPERLINK(\"x\")", created_at=MONDAY),
            ]
        )  # fmt: skip
        for index, kind in enumerate(["accept", "accept", "accept", "correction", "triage"]):
            session.add(
                DecisionRow(
                    enquiry_id="e1", created_at=MONDAY + timedelta(minutes=index), actor="alice", kind=kind,
                    lane="hybrid", intent="support", queue="support", priority="normal", confidence=0.9,
                    task="create_lead", reasons=[], policy_version="t", model_version="t",
                )
            )  # fmt: skip
    # The watch marks e3 breached (no touch by Monday 17:00); e4 stays running, due Tuesday 17:00.
    watch_pass(factory, policies, RecordingNotifier(), now=NOW)


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([], 50) is None
    assert percentile([10.0], 90) == 10.0
    assert percentile([30.0, 360.0], 50) == 195.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)


def test_figures_match_the_database(session_factory: sessionmaker[Session], policies: SlaPolicies) -> None:
    seed(session_factory, policies)
    with session_factory() as session:
        data = build_report(session, policies, since=MONDAY - timedelta(days=1), until=NOW, now=NOW)
        first = sa.select(SlaTimer).where(SlaTimer.kind == "first_response")
        stored = list(session.scalars(first))
        assert data.timers == len(stored) == 4
        assert data.breached == sum(timer.status == "breached" for timer in stored) == 2
        assert data.met == 1 and data.open == 2
        by_channel = dict(
            session.execute(
                sa.select(Enquiry.channel, sa.func.count())
                .join(SlaTimer, SlaTimer.enquiry_id == Enquiry.id)
                .where(SlaTimer.kind == "first_response", SlaTimer.status == "breached")
                .group_by(Enquiry.channel)
            ).all()
        )
        assert {item.key: item.breached for item in data.by_channel if item.breached} == by_channel
        assert {item.key: (item.breached, item.timers) for item in data.by_channel} == {
            "email": (0, 2),
            "form": (1, 1),
            "chat": (1, 1),
        }
        assert {item.key: item.breached for item in data.by_owner} == {
            "alice": 0,
            "bob": 1,
            '=HYPERLINK("x")': 1,
            "(unassigned)": 0,
        }
        assert data.daily == [(MONDAY.date(), 3, 2), (TUESDAY.date(), 1, 0)]
        # e1 answered in 30 business minutes, e2 in 360: p50 = 195 by linear interpolation.
        assert data.response_minutes[50] == pytest.approx(195.0)
        assert [timer.enquiry_id for timer in data.at_risk] == ["e3", "e4"]
        enquiries = session.scalar(sa.select(sa.func.count()).select_from(Enquiry))
        automated = session.scalar(sa.select(sa.func.count()).where(Enquiry.lane == "automate"))
        assert (data.enquiries, data.automated) == (enquiries, automated) == (5, 1)
        assert (data.accepted, data.corrected) == (3, 1)
        assert data.review_minutes[50] == pytest.approx(60.0)


# The figures are checked on both databases above; the browser only needs to see one page.
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_report_renders_in_chromium(
    session_factory: sessionmaker[Session], policies: SlaPolicies, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install the Debian package chromium to render the report")
    from playwright.sync_api import sync_playwright

    seed(session_factory, policies)
    with session_factory() as session:
        data = build_report(session, policies, since=MONDAY - timedelta(days=1), until=NOW, now=NOW)
    html = render_html(data)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'src="http' not in html and 'href="http' not in html
    page_path = tmp_path / "report.html"
    page_path.write_text(html, encoding="utf-8")
    with session_factory() as session:
        facts = sla_repo.iter_first_response_facts(session, since=MONDAY - timedelta(days=1), until=NOW)
        rows = write_csv(facts, policies, tmp_path / "report.csv", now=NOW)
    with (tmp_path / "report.csv").open(encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert rows == len(table) == 4
    assert sum(int(row["breached"]) for row in table) == data.breached
    assert {row["owner"] for row in table} >= {"alice", "bob", '\'=HYPERLINK("x")'}

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.goto(page_path.as_uri())
            png = tmp_path / "report.png"
            page.screenshot(path=str(png), full_page=True)
            figures = {
                name: page.inner_text(f'[data-figure="{name}"]')
                for name in ("timers", "breached", "breach-rate", "ttfr-p50", "open", "share-automated",
                             "acceptance", "review-p50")
            }  # fmt: skip
            pwned = page.evaluate("window.__pwned")
            svg_count = page.locator("svg").count()
            at_risk_rows = page.locator('[data-table="at-risk"] tr').count()
            hostile_text = page.inner_text('[data-table="at-risk"]')
        finally:
            browser.close()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert figures == {
        "timers": "4",
        "breached": "2",
        "breach-rate": "50.0%",
        "ttfr-p50": "3 h 15 min",
        "open": "2",
        "share-automated": "20.0%",
        "acceptance": "75.0%",
        "review-p50": "1 h 00 min",
    }
    assert pwned is None
    assert svg_count == 7  # daily, response, channel, intent, queue, SDR, team
    assert at_risk_rows == 3  # header + e3 + e4
    assert "<script>window.__pwned" in hostile_text  # shown as text, never run
    assert requested == [page_path.as_uri()]  # self-contained: nothing else fetched
