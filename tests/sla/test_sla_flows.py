"""The Prefect flows around the SLA watch and the weekly report, run under a test harness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sla.policies import SlaPolicies
from sla.service import TimerStart, start_timers
from store.db import transaction
from store.tables import SlaEvent, SlaTimer
from tests.sla.sla_helpers import add_enquiries

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_watch_and_report_flows(
    db_url: str,
    session_factory: sessionmaker[Session],
    policies: SlaPolicies,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    harness: None,
) -> None:
    received = datetime.now(UTC) - timedelta(days=6)
    with transaction(session_factory) as session:
        add_enquiries(session, ["e1"], received_at=received, priority="urgent")
        start_timers(
            session, [TimerStart("e1", received, "urgent", "support", "email", "support", "smb")], policies,
            now=received,
        )  # fmt: skip
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    from flows.report import weekly_report_flow
    from flows.sla_watch import sla_watch_flow

    first = sla_watch_flow()
    second = sla_watch_flow()
    assert first["breached"] == 2 and first["escalations_fired"] == 3  # urgent: 50%, 100%, 200%
    assert second["escalations_fired"] == 0 and second["breached"] == 0
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SlaEvent)) == 3
        assert session.scalar(sa.select(sa.func.count()).where(SlaTimer.status == "breached")) == 2
    report = weekly_report_flow()
    assert report["sent_to"] == []  # no SMTP configured: the page is still written
    assert Path(report["path"]).is_file() and Path(report["path"]).parent == tmp_path / "home" / "reports"
