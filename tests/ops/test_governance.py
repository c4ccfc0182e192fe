"""Governance and observability: policy scoring from the CLI, the audit export, /metrics and status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.metrics import psi
from app.web import create_app
from config.settings import Settings
from models.records import Channel
from pipeline.process import PipelineContext, process_pending
from store.db import make_engine, make_session_factory, upgrade_schema
from store.tables import DecisionRow, Enquiry, RawRecord, ReviewItem
from tests.builders import email_bytes, form_json
from tests.support.pipeline_support import store

ROOT = Path(__file__).resolve().parents[2]


def triage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("matrix", "scores", "total", "lane"),
    [
        ("marketing4", "5,4,4,4", 17, "automate"),
        ("marketing4", "4,3,3,4", 14, "hybrid"),
        ("marketing4", "1,1,5,1", 8, "human_only"),
        ("risk6", "2,1,1,4,1,5", 14, "human_in_loop"),
        ("risk6", "5,4,4,3,4,2", 22, "block"),
    ],
)
def test_policy_score_worked_examples(matrix: str, scores: str, total: int, lane: str) -> None:
    result = CliRunner().invoke(cli_app, ["policy", "score", "--matrix", matrix, scores, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["sum"], data["lane"]) == (total, lane)


@pytest.mark.parametrize(
    ("scores", "message"),
    [("5,4,4", "needs 4 scores"), ("5,4,4,0", "between 1 and 5"), ("5,4,x,4", "whole numbers")],
)
def test_policy_score_refuses_bad_scores_with_a_clear_message(scores: str, message: str) -> None:
    result = triage("policy", "score", "--matrix", "marketing4", scores, "--json")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_policy_show_lists_every_task() -> None:
    result = CliRunner().invoke(cli_app, ["policy", "show", "--json"])
    assert result.exit_code == 0, result.output
    tasks = {row["task"]: row for row in json.loads(result.output)["tasks"]}
    assert {
        "create_or_update_lead",
        "route_to_queue",
        "auto_acknowledge",
        "lead_scoring",
        "spam_discard",
        "model_promotion",
    } <= set(tasks)
    assert tasks["model_promotion"]["matrix_lane"] == "block"
    assert all(row["owner"] and row["rollback"] for row in tasks.values())


@pytest.fixture
def workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: PipelineContext
) -> Iterator[sessionmaker[Session]]:
    """A SQLite workspace in TRIAGE_HOME with a few processed enquiries."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TRIAGE_HOME", str(home))
    monkeypatch.delenv("TRIAGE_DATABASE_URL", raising=False)
    engine = make_engine(Settings().effective_database_url)
    upgrade_schema(engine)
    factory = make_session_factory(engine)
    store(
        factory,
        Channel.EMAIL,
        [
            email_bytes(
                message_id="<1@x>",
                sender="Dana Fox <dana@brightwater-analytics.com>",
                body="Demo please. Call me on +44 20 7946 0958.",
            ),
            email_bytes(
                message_id="<2@x>", sender="Dana Fox <dana@brightwater-analytics.com>", body="maybe later"
            ),
            b"garbage",
        ],
    )
    store(
        factory, Channel.FORM, [form_json(submission_id="s1", email="kim@gmail.com", phone="+1 415 555 0100")]
    )
    process_pending(factory, context)
    yield factory
    engine.dispose()


def test_audit_export_pseudonymises_identities(workspace: sessionmaker[Session], tmp_path: Path) -> None:
    from review import service

    with workspace() as session, session.begin():
        item = session.scalars(sa.select(ReviewItem).order_by(ReviewItem.id)).first()
        assert item is not None
        service.correct(session, item.id, user="ana", intent="pricing", priority="high", queue="sales")
    out = tmp_path / "audit.jsonl"
    result = CliRunner().invoke(cli_app, ["audit", "export", "--format", "jsonl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with workspace() as session:
        decisions = session.scalar(sa.select(sa.func.count()).select_from(DecisionRow))
        assert len(rows) == decisions + 1  # every decision (triage, claim, correction) and the correction
    corrections = [r for r in rows if r["record"] == "correction"]
    assert (
        len(corrections) == 1 and corrections[0]["actor"] == "ana" and corrections[0]["intent"] == "pricing"
    )
    text = out.read_text()
    assert "@" not in text and "7946" not in text and "555 0100" not in text
    dana = [r["sender_email"] for r in rows if r["channel"] == "email"]
    # Both of Dana's enquiries, and every row about them, carry the same keyed pseudonym.
    assert len(dana) >= 2 and len(set(dana)) == 1 and dana[0].startswith("pii_")
    clear = CliRunner().invoke(cli_app, ["audit", "export", "--format", "csv", "--raw-identities"])
    assert clear.exit_code == 0
    assert clear.stdout.splitlines()[0].startswith("record,id,created_at,enquiry_id")
    assert "dana@brightwater-analytics.com" in clear.stdout


def test_metrics_parse_and_match_the_database(workspace: sessionmaker[Session]) -> None:
    with TestClient(create_app(Settings())) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "triage_records_ingested",
        "triage_decisions",
        "triage_review_backlog",
        "triage_sla_breaches",
        "triage_model_confidence",
        "triage_drift_psi",
        "triage_stage_seconds",
        "triage_quarantine_open",
    ):
        assert name in families, name
    ingested = {
        (s.labels["channel"], s.labels["outcome"]): s.value
        for s in families["triage_records_ingested"].samples
        if s.name == "triage_records_ingested_total"
    }
    lanes = {
        s.labels["lane"]: s.value for s in families["triage_decisions"].samples if s.name.endswith("_total")
    }
    with workspace() as session:
        assert sum(ingested.values()) == session.scalar(sa.select(sa.func.count()).select_from(RawRecord))
        assert ingested[("email", "quarantined")] == 1
        assert sum(lanes.values()) == session.scalar(sa.select(sa.func.count()).select_from(Enquiry))
        backlog = sum(s.value for s in families["triage_review_backlog"].samples)
        assert backlog == session.scalar(sa.select(sa.func.count()).select_from(ReviewItem))
    count = next(s.value for s in families["triage_model_confidence"].samples if s.name.endswith("_count"))
    assert count == sum(lanes.values())  # every decided enquiry has a confidence


def test_psi_is_zero_for_equal_and_large_for_shifted() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert psi([0.9, 0.1], [0.1, 0.9]) > 1.0


def test_status_json(workspace: sessionmaker[Session]) -> None:
    result = CliRunner().invoke(cli_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["automation_paused"] is False
    assert data["quarantine_open"] == 1
    assert data["review_backlog"] >= 1
    assert {s["source"] for s in data["sources"]} == {"test"}
