"""Retraining from base data plus corrections: a candidate, compared, never promoted."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from models import registry
from models.retraining import corrections_frame, label_kinds, retrain
from models.training import TrainResult
from store import model_registry as repo
from tests.models.conftest import OOS, add_correction, add_enquiry, toy_rows


def test_retrain_uses_corrections_and_stops_at_a_candidate(
    session_factory: sessionmaker[Session], tmp_path: Path, toy_result: TrainResult
) -> None:
    with session_factory() as session:
        active = registry.register_candidate(
            session, tmp_path, toy_result, trained_by="t", data_description="toy"
        )
        registry.promote(session, active, approved_by="Olga", home=tmp_path)
        corrected = []
        for index in range(5):
            enquiry_id = add_enquiry(
                session,
                subject="Press",
                body=f"journalist asking for an interview number {index}",
                intent="support",
                model_version=active,
                enrichment={"free_mail": True, "segment": "enterprise"},
            )
            add_correction(session, enquiry_id, intent="press")
            corrected.append(enquiry_id)
        session.commit()
        frame, labels = corrections_frame(session)
    assert labels == ["press"] * 5
    assert frame["free_mail"].tolist() == [True] * 5 and frame["segment"].tolist() == ["enterprise"] * 5
    assert frame["subject"].tolist() == ["Press"] * 5

    base, base_labels = toy_rows(per_label=12)
    report = retrain(
        session_factory, tmp_path, base_frame=base.assign(label=base_labels), oos_label=OOS, n_jobs=None
    )
    assert report["promoted"] is False and report["active"] == active
    assert report["n_corrections"] == 5 and report["skipped_labels"] == []
    assert report["reviewed_labels"] == {"confirmed": 0, "corrected": 5}
    assert report["active_metrics"] is not None and "accuracy" in report["candidate_minus_active"]
    with session_factory() as session:
        assert registry.active_version(session) == active
        row = repo.get_version(session, report["candidate"])
        assert row is not None and row.status == "candidate"
        assert "press" in row.provenance["labels"] and "holdout" in row.provenance["metrics"]
        assert row.provenance["metrics"]["reviewed_labels"]["corrected"] == 5
        assert "5 corrected enquiries" in row.provenance["data_description"]


def test_confirmed_labels_are_counted_apart_from_corrections(session: Session) -> None:
    confirmed = add_enquiry(
        session, body="please refund the double charge", intent="billing", model_version="m"
    )
    add_correction(session, confirmed, intent="billing")  # what review.service.accept writes
    changed = add_enquiry(session, body="are you hiring", intent="support", model_version="m")
    add_correction(session, changed, intent="careers")
    session.commit()
    assert label_kinds(session) == {"confirmed": 1, "corrected": 1}
    _, labels = corrections_frame(session)
    assert sorted(labels) == ["billing", "careers"]


def test_the_candidate_learns_from_every_row_and_the_hold_out_judges_the_recipe(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory() as session:
        for index in range(5):
            enquiry_id = add_enquiry(
                session,
                subject="Press",
                body=f"journalist wants an interview {index}",
                intent="support",
                model_version="before",
            )
            add_correction(session, enquiry_id, intent="press")
        session.commit()
    base, base_labels = toy_rows(per_label=12)
    frame = base.assign(label=base_labels)
    refitted = retrain(session_factory, tmp_path, base_frame=frame, oos_label=OOS, n_jobs=None)
    total = len(base) + 5 - refitted["training_rows"]["duplicates_dropped"]
    held = retrain(session_factory, tmp_path, base_frame=frame, oos_label=OOS, n_jobs=None, refit=False)
    assert refitted["n_train"] == total and refitted["refit_on_all_rows"] is True
    assert refitted["holdout_model_rows"] + refitted["n_holdout"] == total
    assert held["n_train"] == held["holdout_model_rows"] == total - held["n_holdout"]
    # The same split, so the same recipe is judged on the same held-out rows either way.
    same = {key: value for key, value in refitted["candidate_metrics"].items() if key != "ece"}
    assert same == {key: value for key, value in held["candidate_metrics"].items() if key != "ece"}
    with session_factory() as session:
        refit_row = repo.get_version(session, refitted["candidate"])
        held_row = repo.get_version(session, held["candidate"])
        assert refit_row is not None and held_row is not None
        assert refit_row.provenance["label_counts"]["press"] == 5  # held-out labels are not lost
        assert held_row.provenance["label_counts"]["press"] < 5
        assert "trained on every row" in refit_row.provenance["data_description"]
