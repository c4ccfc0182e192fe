"""Shadow against active: how often they agree, and who was right where people corrected the outcome.

The active model's own answer is what it predicted at triage: `enquiries.intent` until a person corrects
it, then the `previous` intent of the enquiry's first correction (corrections overwrite the enquiry).
The truth for a corrected enquiry is its latest correction. Corrected enquiries lean towards the
active model's mistakes (people correct what looks wrong), so read `active_precision` as a lower bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store import model_registry
from store.tables import Correction, Enquiry, ShadowPrediction


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def compare(session: Session, *, active: str, shadow: str) -> dict[str, Any]:
    """Agreement of `shadow` with `active` on the enquiries both scored, and each one's precision on
    the enquiries people corrected."""
    shadow_rows = session.execute(
        sa.select(ShadowPrediction.enquiry_id, ShadowPrediction.intent, ShadowPrediction.abstained).where(
            ShadowPrediction.model_version == shadow
        )
    ).all()
    shadow_by_enquiry = {row.enquiry_id: (row.intent, row.abstained) for row in shadow_rows}

    active_by_enquiry: dict[str, tuple[str, bool]] = {
        row.id: (row.intent, row.lane == "automate")
        for row in session.execute(
            sa.select(Enquiry.id, Enquiry.intent, Enquiry.lane).where(Enquiry.model_version == active)
        )
    }
    first_correction: dict[str, Correction] = {}
    last_correction: dict[str, Correction] = {}
    corrections = session.scalars(sa.select(Correction).order_by(Correction.created_at, Correction.id))
    for correction in corrections:
        first_correction.setdefault(correction.enquiry_id, correction)
        last_correction[correction.enquiry_id] = correction
    for enquiry_id, correction in first_correction.items():
        if enquiry_id in active_by_enquiry and correction.model_version == active:
            previous_intent = (correction.previous or {}).get("intent")
            if previous_intent:
                automated = active_by_enquiry[enquiry_id][1]
                active_by_enquiry[enquiry_id] = (str(previous_intent), automated)

    both = [enquiry_id for enquiry_id in shadow_by_enquiry if enquiry_id in active_by_enquiry]
    agree = sum(active_by_enquiry[e][0] == shadow_by_enquiry[e][0] for e in both)
    corrected = [e for e in both if e in last_correction]
    truth = {e: last_correction[e].intent for e in corrected}
    active_right = sum(active_by_enquiry[e][0] == truth[e] for e in corrected)
    shadow_right = sum(shadow_by_enquiry[e][0] == truth[e] for e in corrected)
    shadow_automated = [e for e in corrected if not shadow_by_enquiry[e][1]]
    active_automated = [e for e in corrected if active_by_enquiry[e][1]]
    return {
        "active": active,
        "shadow": shadow,
        "n_shadow_scored": len(shadow_by_enquiry),
        "n_compared": len(both),
        "agreement": _ratio(agree, len(both)),
        "n_corrected": len(corrected),
        "active_precision": _ratio(active_right, len(corrected)),
        "shadow_precision": _ratio(shadow_right, len(corrected)),
        "active_automated_corrected": len(active_automated),
        "active_automated_precision": _ratio(
            sum(active_by_enquiry[e][0] == truth[e] for e in active_automated), len(active_automated)
        ),
        "shadow_automated_corrected": len(shadow_automated),
        "shadow_automated_precision": _ratio(
            sum(shadow_by_enquiry[e][0] == truth[e] for e in shadow_automated), len(shadow_automated)
        ),
    }


SINCE_PROMOTION_FIGURES = ("n", "accuracy", "coverage", "automated_precision", "oos_recall")


def since_promotion(session: Session, home: Path, *, active: str, candidate: str) -> dict[str, Any]:
    """Score `active` and `candidate` on every label people gave since `active` was promoted (accepted
    proposals, corrections and spot checks; each enquiry's latest label): accuracy, coverage and
    automated precision of both, and their difference. Loads both models (scikit-learn)."""
    from models import registry
    from models.evaluation import evaluate
    from models.retraining import reviewed_rows

    row = model_registry.get_version(session, active)
    since = row.promoted_at if row is not None else None
    reviewed = reviewed_rows(session, since=since)
    report: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "n_labels": len(reviewed.labels),
        "confirmed": sum(reviewed.confirmed),
        "corrected": len(reviewed.labels) - sum(reviewed.confirmed),
        "spot_checks": sum(reviewed.spot_check),
        "active": None,
        "candidate": None,
        "candidate_minus_active": {},
    }
    if not reviewed.labels:
        return report
    for side, version in (("active", active), ("candidate", candidate)):
        model = registry.load_model(session, home, version)
        metrics = evaluate(model, reviewed.frame, reviewed.labels, oos_label=model.oos_label)
        report[side] = {"version": version, **{key: metrics.get(key) for key in SINCE_PROMOTION_FIGURES}}
    for key in ("accuracy", "coverage", "automated_precision"):
        a, c = report["active"].get(key), report["candidate"].get(key)
        if a is not None and c is not None:
            report["candidate_minus_active"][key] = round(c - a, 6)
    return report
