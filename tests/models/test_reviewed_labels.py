"""Every reviewed item a label (issue 13): deduplicated retraining rows, newest label winning, counted
by kind in the candidate's provenance; `triage model compare` on the labels since the promotion."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.model import model_app
from models import registry
from models.classifier import frame_from_texts
from models.comparison import since_promotion
from models.retraining import content_key, deduplicate, retrain, reviewed_rows
from models.training import TrainResult
from store import model_registry as repo
from store import spot_checks
from store.tables import Correction, Enquiry
from tests.models.conftest import NOW, OOS, add_correction, add_enquiry, toy_rows


def _confirm(session: Session, enquiry_id: str, *, minutes: int = 1) -> None:
    """An accepted proposal, as `review.service.accept` records it."""
    enquiry = session.get(Enquiry, enquiry_id)
    assert enquiry is not None
    proposal = {"intent": enquiry.intent, "priority": "normal", "queue": "q"}
    session.add(
        Correction(
            enquiry_id=enquiry_id,
            corrected_by="sam",
            previous=proposal,
            model_version=enquiry.model_version,
            created_at=NOW + timedelta(minutes=minutes),
            **proposal,
        )
    )
    session.flush()


def test_deduplicate_keeps_the_newest_label_of_the_same_content() -> None:
    frame = frame_from_texts(["Refund please", "refund   PLEASE", "a demo?"], subjects=["Hi", "hi", ""])
    kept, labels, dropped = deduplicate(frame, ["support", "billing", "sales_demo"])
    assert dropped == 1 and labels == ["billing", "sales_demo"]
    assert kept["body"].tolist() == ["refund   PLEASE", "a demo?"]


def test_retraining_uses_base_confirmed_and_corrected_rows_once_each_counted_by_kind(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    base, base_labels = toy_rows(per_label=12)
    clash = str(base["body"][0])  # a base row (billing) that people later labelled otherwise
    # The synthetic base repeats some texts itself; those are kept once too.
    base_repeats = len(base) - len({content_key("", str(body)) for body in base["body"]})
    with session_factory() as session:
        relabelled = add_enquiry(session, body=clash, intent="billing", model_version="m-old")
        add_correction(session, relabelled, intent="support", minutes=1)
        older = add_enquiry(
            session, body="the export button fails again", intent="support", model_version="m"
        )
        add_correction(session, older, intent="billing", minutes=2)
        newer = add_enquiry(
            session, body="The export button fails  again", intent="support", model_version="m"
        )
        _confirm(session, newer, minutes=3)  # same content, newer label: support wins
        checked = add_enquiry(
            session, body="could we book a demo for our team please", intent="sales_demo", model_version="m"
        )
        _confirm(session, checked, minutes=4)
        spot_checks.add_spot_checks(
            session,
            [
                {
                    "enquiry_id": checked,
                    "task": "t",
                    "model_version": "m",
                    "intent": "sales_demo",
                    "reason": "share",
                    "selected_at": NOW,
                }
            ],
        )
        spot_checks.record_review(
            session, checked, intent="sales_demo", by="sam", at=NOW + timedelta(minutes=4)
        )
        session.commit()
        rows = reviewed_rows(session)
    assert rows.labels == ["support", "billing", "support", "sales_demo"]  # oldest label first
    assert rows.confirmed == [False, False, True, True] and rows.spot_check == [False, False, False, True]

    report = retrain(
        session_factory, tmp_path, base_frame=base.assign(label=base_labels), oos_label=OOS, n_jobs=None
    )
    # The base row and the older export row lose to newer labels of the same content.
    assert report["training_rows"] == {
        "base": len(base),
        "confirmed": 2,
        "corrected": 2,
        "spot_checks": 1,
        "duplicates_dropped": 2 + base_repeats,
    }
    kept = len(base) + 4 - 2 - base_repeats
    assert report["n_train"] == kept  # the candidate is refitted on every row
    assert report["holdout_model_rows"] + report["n_holdout"] == kept
    with session_factory() as session:
        provenance = repo.get_version(session, report["candidate"]).provenance  # type: ignore[union-attr]
    assert provenance["metrics"]["training_rows"]["duplicates_dropped"] == 2 + base_repeats
    assert f"{2 + base_repeats} duplicate rows dropped, newest label kept" in provenance["data_description"]


@pytest.fixture
def promoted_pair(
    session_factory: sessionmaker[Session], tmp_path: Path, toy_result: TrainResult, toy_result_b: TrainResult
) -> tuple[str, str]:
    with session_factory() as session:
        active = registry.register_candidate(
            session, tmp_path, toy_result, trained_by="t", data_description="a"
        )
        candidate = registry.register_candidate(
            session, tmp_path, toy_result_b, trained_by="t", data_description="b"
        )
        registry.promote(session, active, approved_by="Olga", home=tmp_path)
        repo.get_version(session, active).promoted_at = NOW  # type: ignore[union-attr] - a fixed instant
        before = add_enquiry(session, body="we were charged twice", intent="billing", model_version=active)
        add_correction(session, before, intent="support", minutes=-60)  # before the promotion: left out
        for minutes, (body, intent, truth) in enumerate(
            [
                ("please refund the duplicate charge", "billing", "billing"),
                ("the dashboard will not load", "support", "support"),
                ("are you hiring data engineers", "careers", "careers"),
                ("schedule a walkthrough of the platform", "support", "sales_demo"),
            ],
            start=1,
        ):
            enquiry_id = add_enquiry(session, body=body, intent=intent, model_version=active)
            if truth == intent:
                _confirm(session, enquiry_id, minutes=minutes)
            else:
                add_correction(session, enquiry_id, intent=truth, minutes=minutes)
        session.commit()
    return active, candidate


def test_both_models_are_scored_on_the_labels_since_the_promotion(
    session_factory: sessionmaker[Session], tmp_path: Path, promoted_pair: tuple[str, str]
) -> None:
    active, candidate = promoted_pair
    with session_factory() as session:
        report = since_promotion(session, tmp_path, active=active, candidate=candidate)
    assert report["since"] == NOW.isoformat()
    assert (report["n_labels"], report["confirmed"], report["corrected"]) == (4, 3, 1)
    for side, version in (("active", active), ("candidate", candidate)):
        figures = report[side]
        assert figures["version"] == version and figures["n"] == 4
        assert figures["accuracy"] is not None and 0 <= figures["accuracy"] <= 1
    assert set(report["candidate_minus_active"]) >= {"accuracy", "coverage"}


def test_model_compare_prints_and_emits_the_since_promotion_figures(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    promoted_pair: tuple[str, str],
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path))
    active, candidate = promoted_pair
    runner = CliRunner()
    result = runner.invoke(model_app, ["compare", "--candidate", candidate, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["since_promotion"]
    assert report["n_labels"] == 4 and report["active"]["version"] == active
    assert report["candidate"]["version"] == candidate
    text = runner.invoke(model_app, ["compare"])  # no shadow: the newest candidate
    assert text.exit_code == 0, text.output
    assert "on the 4 labels since" in text.output and "automated precision" in text.output
