"""The ops page's live precision table and its Resume button (issue 13), on both databases."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from config.policy import SpotCheckPolicy
from models import live_precision
from review import service
from store import flags, model_registry, spot_checks
from tests.review.review_builders import NOW, add_enquiry_with_item
from tests.review.test_review_http import client, login  # noqa: F401 - fixtures

TASK = "create_or_update_lead"


def _paused_task(session: Session) -> None:
    model_registry.add_version(
        session,
        version="m-2026-11-01",
        artifact_path="unused",
        provenance={"labels": ["sales_demo"], "params": {"target_precision": 0.95}},
        created_at=NOW,
        status="active",
    )
    item_id, enquiry_id = add_enquiry_with_item(session, lane="automate")
    spot_checks.add_spot_checks(
        session,
        [
            {
                "enquiry_id": enquiry_id,
                "task": TASK,
                "model_version": "m-2026-11-01",
                "intent": "sales_demo",
                "reason": "daily_minimum",
                "selected_at": NOW,
            }
        ],
    )
    # A policy that pauses on one reviewed spot check (the default needs 10).
    live_precision.record_pause_rule(session, SpotCheckPolicy(min_reviewed=1), now=NOW)
    service.correct(
        session, item_id, user="sam", intent="support", priority="normal", queue="support", now=NOW
    )
    session.commit()


def test_the_ops_page_shows_live_precision_and_an_ops_lead_resumes_a_paused_task(
    client: TestClient,  # noqa: F811
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        _paused_task(session)
        assert set(flags.paused_tasks(session)) == {TASK}
    token = login(client, "olga")
    page = client.get("/ops/automation")
    assert page.status_code == 200
    table = re.sub(r"\s+", " ", page.text.split('id="live-precision"')[1].split("</table>")[0])
    assert f"<td>{TASK}</td> <td>1</td> <td>0.000</td> <td>0.000–0.793</td> <td>0.950</td>" in table
    assert "paused" in table and f'id="resume-{TASK}"' in table
    client.cookies.clear()
    sdr_token = login(client, "sam")
    refused = client.post("/ops/automation/tasks/resume", data={"csrf_token": sdr_token, "task": TASK})
    assert refused.status_code == 403
    client.cookies.clear()
    token = login(client, "olga")
    unknown = client.post("/ops/automation/tasks/resume", data={"csrf_token": token, "task": "nope"})
    assert "Not resumed" in unknown.text
    done = client.post("/ops/automation/tasks/resume", data={"csrf_token": token, "task": TASK})
    assert done.status_code == 200 and f"Automation of task {TASK} resumed." in done.text
    with session_factory() as session:
        assert flags.paused_tasks(session) == {}
        assert flags.task_pause(session, TASK)["resumed_by"] == "olga"  # type: ignore[index]


def test_metrics_show_each_tasks_live_precision_and_pause(
    client: TestClient,  # noqa: F811
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        _paused_task(session)
    families = {family.name: family for family in text_string_to_metric_families(client.get("/metrics").text)}
    bounds = {s.labels["bound"]: s.value for s in families["triage_live_precision"].samples}
    assert bounds["estimate"] == 0 and bounds["low"] == 0 and abs(bounds["high"] - 0.7935) < 1e-4
    assert [(s.labels["task"], s.value) for s in families["triage_task_paused"].samples] == [(TASK, 1)]
    assert [s.value for s in families["triage_spot_checks_reviewed"].samples] == [1]
