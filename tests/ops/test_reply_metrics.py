"""Reply figures (issue 17) in /metrics and `triage status --json`, each one index-backed grouped query."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.web import create_app
from config.settings import Settings
from sla.policies import load_policies
from sla.service import TimerStart, start_timers, stop_first_response
from store import observability, outbox, reply_outbox, sla_repo
from store.db import make_engine, make_session_factory, transaction, upgrade_schema
from tests.ops.test_index_plans import COUNTER_TABLES, captured, full_scans
from tests.sla.sla_helpers import add_enquiries

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# (kind, status, attempts) of the seeded replies
REPLIES = [
    ("reply", "pending", 0),
    ("reply", "pending", 2),  # retrying after a 4xx
    ("reply", "sent", 1),
    ("reply", "failed", 1),  # a 5xx: failed for good
    ("auto_reply", "sent", 1),
    ("auto_reply", "sent", 1),
    ("auto_reply", "sending", 1),
]
TOUCHES = {"e0": "pages", "e1": "mailbox", "e2": "crm", "e3": "crm"}  # e4..e6 stay open


def _seed(factory: sessionmaker[Session]) -> None:
    ids = [f"e{n}" for n in range(len(REPLIES))]
    with transaction(factory) as session:
        add_enquiries(session, ids, received_at=MONDAY)
        start_timers(
            session,
            [TimerStart(i, MONDAY, "normal", "support", "email", "support", "smb") for i in ids],
            load_policies(),
            now=MONDAY,
        )
        for n, (kind, status, attempts) in enumerate(REPLIES):
            reply_outbox.add(
                session,
                {
                    "idempotency_key": f"{kind}:{n}",
                    "enquiry_id": ids[n],
                    "kind": kind,
                    "author": "system" if kind == "auto_reply" else "sam",
                    "from_address": "sales@team.example",
                    "to_address": f"buyer{n}@example.com",
                    "subject": "Re: pricing",
                    "body": "Thanks",
                    "message_id": f"{n}.reply@team.example",
                    "status": status,
                    "attempts": attempts,
                    "in_doubt": 0,
                    "next_attempt_at": MONDAY,
                    "created_at": MONDAY,
                    "accepted_at": MONDAY + timedelta(minutes=2) if status == "sent" else None,
                },
            )
        for enquiry_id, source in TOUCHES.items():
            stop_first_response(
                session, enquiry_id, by="sam", at=MONDAY + timedelta(minutes=30), source=source
            )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRIAGE_DATABASE_URL", raising=False)
    settings = Settings()
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.effective_database_url)
    upgrade_schema(engine)
    _seed(make_session_factory(engine))
    engine.dispose()
    return settings


def test_metrics_show_replies_by_state_acknowledgements_and_first_touches_by_source(home: Settings) -> None:
    with TestClient(create_app(home)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    states = {(s.labels["kind"], s.labels["state"]): s.value for s in families["triage_reply_outbox"].samples}
    assert states == {
        ("reply", "pending"): 1,
        ("reply", "retrying"): 1,
        ("reply", "sent"): 1,
        ("reply", "failed"): 1,
        ("auto_reply", "sent"): 2,
        ("auto_reply", "sending"): 1,
    }
    [acks] = [s for s in families["triage_acknowledgements_sent"].samples if s.name.endswith("_total")]
    assert acks.value == 2
    touches = {s.labels["source"]: s.value for s in families["triage_first_touches"].samples}
    assert touches == {"pages": 1, "mailbox": 1, "crm": 2}
    errors = {s.labels["collector"]: s.value for s in families["triage_metrics_collector_errors"].samples}
    assert errors["replies"] == 0


def test_status_json_reports_replies_and_the_two_targets_apart(home: Settings) -> None:
    result = CliRunner().invoke(cli_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["replies"] == {
        "outbox": {"pending": 1, "retrying": 1, "sending": 1, "sent": 3, "failed": 1},
        "acknowledgements_sent": 2,
        "first_touch_by_source": {"pages": 1, "mailbox": 1, "crm": 2},
    }
    # the human first-response target: 4 clocks stopped by a person's touch, 3 still running
    assert data["first_response_clocks"] == {"met": 4, "running": 3}


FIGURES: dict[str, Callable[[Session], Any]] = {
    # from the rows: what the counters are checked against (`triage status` and /metrics read those)
    "replies by kind and state": reply_outbox.states_by_kind,
}
LOOKUPS: dict[str, Callable[[Session], Any]] = {
    "enquiries by CRM lead id": lambda s: outbox.enquiries_by_crm_id(s, ["00Q000000000001AAA"]),
    "first-response stops of enquiries": lambda s: sla_repo.first_response_stops(s, ["e1", "e2"]),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_reply_figures_read_an_index_not_the_rows(engine: Engine, name: str) -> None:
    assert full_scans(engine, captured(engine, FIGURES[name]), covering_ok=True) == []


@pytest.mark.parametrize(
    "figure", [sla_repo.first_touches_by_source, observability.reply_states], ids=["first touches", "replies"]
)
def test_status_reply_figures_read_only_the_counters(
    engine: Engine, figure: Callable[[Session], Any]
) -> None:
    for statement, _ in captured(engine, figure):
        assert set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", statement, flags=re.I)) <= COUNTER_TABLES, statement


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_touch_poll_lookups_seek_an_index(engine: Engine, name: str) -> None:
    assert full_scans(engine, captured(engine, LOOKUPS[name]), covering_ok=False) == []
