"""The registry on SQLite and PostgreSQL: skops round trip, refusals, promotion, rollback, shadow, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from models import registry
from models.classifier import frame_from_texts
from models.comparison import compare
from models.errors import ConfigError, FatalError
from models.training import TrainResult
from store import model_registry as repo
from tests.models.conftest import add_correction, add_enquiry, add_shadow

PROBE = frame_from_texts(
    [
        "hello, we were charged twice. thanks",
        "could we book a demo for our team",
        "the football match ended two nil",
        "is the backend developer position still open",
        "login fails with a timeout and an invoice error",
    ]
)


def _register(session: Session, home: Path, result: TrainResult) -> str:
    version = registry.register_candidate(session, home, result, trained_by="tester", data_description="toy")
    session.commit()
    return version


def test_skops_round_trip_gives_identical_predictions(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    version = _register(session, tmp_path, toy_result)
    assert version.startswith("m-") and toy_result.model.version == version
    artifact = tmp_path / "models" / version / "model.skops"
    provenance = json.loads((tmp_path / "models" / version / "provenance.json").read_text())
    assert artifact.exists() and provenance["data_hash"] == toy_result.data_hash
    assert provenance["libraries"]["scikit-learn"] and provenance["trusted_types"]
    assert set(provenance["trusted_types"]) <= registry.ALLOWED_TYPES
    assert b"pickle" not in artifact.read_bytes()[:4]
    registry.clear_cache()
    loaded = registry.load_model(session, tmp_path, version)
    assert loaded is not toy_result.model
    assert loaded.predict(PROBE) == toy_result.model.predict(PROBE)
    assert loaded.labels == toy_result.model.labels and loaded.thresholds == toy_result.model.thresholds
    assert registry.load_model(session, tmp_path, version) is loaded  # cached


def test_another_scikit_learn_version_is_refused(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    version = _register(session, tmp_path, toy_result)
    row = repo.get_version(session, version)
    assert row is not None
    row.provenance = {
        **row.provenance,
        "libraries": {**row.provenance["libraries"], "scikit-learn": "0.24.2"},
    }
    session.commit()
    registry.clear_cache()
    with pytest.raises(FatalError, match=r"scikit-learn 0\.24\.2.*installed.*Retrain"):
        registry.load_model(session, tmp_path, version)


def test_an_altered_artifact_is_refused(session: Session, tmp_path: Path, toy_result: TrainResult) -> None:
    version = _register(session, tmp_path, toy_result)
    artifact = tmp_path / "models" / version / "model.skops"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    registry.clear_cache()
    with pytest.raises(FatalError, match="SHA-256"):
        registry.load_model(session, tmp_path, version)


def test_a_model_whose_scorer_does_not_load_is_neither_promoted_nor_shadowed(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    """The pipeline scores with scorer.npz: promotion checks that file too, not only the skops one."""
    version = _register(session, tmp_path, toy_result)
    scorer = tmp_path / "models" / version / "scorer.npz"
    scorer.write_bytes(scorer.read_bytes() + b"\0")
    with pytest.raises(FatalError, match=r"scorer.*SHA-256"):
        registry.promote(session, version, approved_by="Olga", home=tmp_path)
    with pytest.raises(FatalError, match=r"scorer.*SHA-256"):
        registry.set_shadow(session, version, actor="olga", home=tmp_path)
    assert repo.get_version(session, version).status == "candidate"  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["", "   ", "system", "Retrain"])
def test_promotion_without_a_person_is_refused(
    session: Session, tmp_path: Path, toy_result: TrainResult, name: str
) -> None:
    version = _register(session, tmp_path, toy_result)
    with pytest.raises(registry.ApprovalRequired):
        registry.promote(session, version, approved_by=name, home=tmp_path)
    session.rollback()
    assert registry.active_version(session) is None
    assert [e.action for e in repo.list_events(session, version=version)] == ["register"]


def test_promote_and_rollback_restore_the_previous_predictions_exactly(
    session: Session, tmp_path: Path, toy_result: TrainResult, toy_result_b: TrainResult
) -> None:
    first = _register(session, tmp_path, toy_result)
    second = _register(session, tmp_path, toy_result_b)
    registry.promote(session, first, approved_by="Olga Ops", home=tmp_path)
    session.commit()
    before = registry.load_active(session, tmp_path)
    assert before is not None
    first_predictions = before.predict(PROBE)

    registry.promote(session, second, approved_by="Olga Ops", home=tmp_path)
    session.commit()
    row = repo.get_version(session, second)
    assert row is not None and row.approved_by == "Olga Ops" and row.promoted_at is not None
    assert [approval["approved_by"] for approval in row.provenance["approvals"]] == ["Olga Ops"]
    event = repo.last_event(session, version=second, action="promote")
    assert event is not None and event.previous_active == first
    middle = registry.load_active(session, tmp_path)
    assert middle is not None and middle.version == second
    assert [p.confidence for p in middle.predict(PROBE)] != [p.confidence for p in first_predictions]

    assert registry.rollback(session, actor="olga") == first
    session.commit()
    registry.clear_cache()
    after = registry.load_active(session, tmp_path)
    assert after is not None and after.version == first
    assert after.predict(PROBE) == first_predictions
    statuses = {row["version"]: row["status"] for row in registry.list_summaries(session)}
    assert statuses == {first: "active", second: "retired"}
    with pytest.raises(ConfigError, match="no previous active"):
        registry.rollback(session, actor="olga")


def test_rollback_without_history_and_double_promotion_are_refused(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    with pytest.raises(ConfigError, match="no active model"):
        registry.rollback(session, actor="olga")
    version = _register(session, tmp_path, toy_result)
    registry.promote(session, version, approved_by="Olga", home=tmp_path)
    with pytest.raises(ConfigError, match="already active"):
        registry.promote(session, version, approved_by="Olga", home=tmp_path)
    with pytest.raises(ConfigError, match="no model version"):
        registry.promote(session, "m-nope", approved_by="Olga", home=tmp_path)


def test_shadow_lifecycle(
    session: Session, tmp_path: Path, toy_result: TrainResult, toy_result_b: TrainResult
) -> None:
    first = _register(session, tmp_path, toy_result)
    second = _register(session, tmp_path, toy_result_b)
    assert registry.newest_candidate(session) == second
    registry.promote(session, first, approved_by="Olga", home=tmp_path)
    with pytest.raises(ConfigError, match="is active"):
        registry.set_shadow(session, first, actor="olga", home=tmp_path)
    registry.set_shadow(session, second, actor="olga", home=tmp_path)
    session.commit()
    assert registry.shadow_version(session) == second
    shadow = registry.load_shadow(session, tmp_path)
    assert shadow is not None and shadow.version == second
    assert registry.clear_shadow(session, actor="olga") == second
    assert registry.shadow_version(session) is None and registry.load_shadow(session, tmp_path) is None
    details = registry.describe(session, second)
    assert [e["action"] for e in details["events"]] == ["register", "shadow", "unshadow"]
    assert details["provenance"]["reference"]["confidence_histogram"]["counts"]


def test_compare_reports_agreement_and_precision_on_corrected_enquiries(session: Session) -> None:
    active, shadow = "m-active", "m-shadow"
    ids = [add_enquiry(session, body=f"text {i}", intent="billing", model_version=active) for i in range(4)]
    for enquiry_id, shadow_intent in zip(ids, ["billing", "billing", "support", "support"], strict=True):
        add_shadow(session, enquiry_id, version=shadow, intent=shadow_intent)
    add_correction(session, ids[2], intent="support")  # active wrong, shadow right
    add_correction(session, ids[3], intent="careers")  # both wrong ...
    add_correction(session, ids[3], intent="billing", minutes=5)  # ... until a second look: active right
    session.commit()
    report = compare(session, active=active, shadow=shadow)
    assert report["n_compared"] == 4 and report["agreement"] == 0.5
    assert report["n_corrected"] == 2
    assert report["active_precision"] == 0.5 and report["shadow_precision"] == 0.5
    assert report["shadow_automated_precision"] == 0.5
