"""Retraining: base data plus people's labels → a candidate model, compared with the active one.

People's labels are the `corrections` rows: a correction, or an accepted proposal (a confirmed label,
written by `review.service.accept`); a reviewed spot check is one or the other. The latest label of
each enquiry wins, and rows with the same content (subject and body, base data included) are kept
once, with the newest label.

It stops at a candidate. Promotion is a person's decision (`triage model promote V --approved-by NAME`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sklearn.model_selection import train_test_split
from sqlalchemy.orm import Session, sessionmaker

from models import registry
from models.classifier import FEATURE_COLUMNS, frame_from_texts
from models.errors import TriageError
from models.evaluation import evaluate
from models.starter import starter_training_frame
from models.training import train_model
from store.tables import Correction, Enquiry, SpotCheck

HOLDOUT_SHARE = 0.2
# Whether the registered candidate is refitted on every row after the hold-out comparison (`retrain`).
REFIT_DEFAULT = True
# A label needs this many rows to appear on both sides of the split and still be calibrated.
MIN_ROWS_PER_LABEL = 4


@dataclass(frozen=True)
class ReviewedRows:
    """Each reviewed enquiry once, oldest label first: its features, its latest label, when that label
    was given, whether it confirmed the model's proposal, and whether it was a spot check."""

    frame: pd.DataFrame
    labels: list[str]
    labelled_at: list[datetime]
    confirmed: list[bool]
    spot_check: list[bool]


def reviewed_rows(session: Session, *, since: datetime | None = None) -> ReviewedRows:
    """Every enquiry people labelled (accepted = confirmed, correction = corrected, a spot check
    either), with its latest label; only labels given at or after `since` when it is set."""
    latest: dict[str, tuple[str, datetime]] = {}
    proposal: dict[str, str | None] = {}
    for enquiry_id, intent, previous, created_at in session.execute(
        sa.select(
            Correction.enquiry_id, Correction.intent, Correction.previous, Correction.created_at
        ).order_by(Correction.created_at, Correction.id)
    ):
        proposal.setdefault(enquiry_id, (previous or {}).get("intent"))
        latest[enquiry_id] = (intent, created_at)
    if since is not None:
        latest = {key: value for key, value in latest.items() if value[1] >= since}
    if not latest:
        return ReviewedRows(frame_from_texts([]), [], [], [], [])
    rows = session.execute(
        sa.select(Enquiry.id, Enquiry.subject, Enquiry.body, Enquiry.channel, Enquiry.enrichment).where(
            Enquiry.id.in_(list(latest))
        )
    ).all()
    # Oldest label first (then by id, for a stable order): deduplication keeps the newest.
    rows = sorted(rows, key=lambda row: (latest[row.id][1], row.id))
    spot_checked = set(
        session.scalars(
            sa.select(SpotCheck.enquiry_id).where(
                SpotCheck.enquiry_id.in_(list(latest)), SpotCheck.reviewed_at.is_not(None)
            )
        )
    )
    enrichment = [row.enrichment or {} for row in rows]
    frame = frame_from_texts(
        [row.body for row in rows],
        subjects=[row.subject for row in rows],
        channels=[row.channel for row in rows],
        free_mail=[bool(item.get("free_mail", False)) for item in enrichment],
        segments=[str(item.get("segment") or "unknown") for item in enrichment],
    )
    return ReviewedRows(
        frame=frame,
        labels=[latest[row.id][0] for row in rows],
        labelled_at=[latest[row.id][1] for row in rows],
        confirmed=[latest[row.id][0] == proposal[row.id] for row in rows],
        spot_check=[row.id in spot_checked for row in rows],
    )


def corrections_frame(session: Session) -> tuple[pd.DataFrame, list[str]]:
    """Each reviewed enquiry once, with its text and structured features and its latest label."""
    reviewed = reviewed_rows(session)
    return reviewed.frame, reviewed.labels


def content_key(subject: str, body: str) -> str:
    """What makes two training rows the same example: subject and body, case and spacing aside."""
    return " ".join(f"{subject}\n{body}".lower().split())


def deduplicate(frame: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, list[str], int]:
    """Keep one row per content, the last one (rows come oldest first, so the newest label wins);
    returns the rows kept, their labels and how many were dropped."""
    keys = [content_key(str(s), str(b)) for s, b in zip(frame["subject"], frame["body"], strict=True)]
    last = {key: index for index, key in enumerate(keys)}
    keep = sorted(last.values())
    return frame.iloc[keep].reset_index(drop=True), [labels[i] for i in keep], len(keys) - len(keep)


def label_kinds(session: Session) -> dict[str, int]:
    """Reviewed enquiries by kind of label: `confirmed` (the latest label is the model's proposal, as an
    accepted proposal writes it) or `corrected` (a person changed the intent)."""
    proposal: dict[str, str | None] = {}
    latest: dict[str, str] = {}
    for enquiry_id, intent, previous in session.execute(
        sa.select(Correction.enquiry_id, Correction.intent, Correction.previous).order_by(
            Correction.created_at, Correction.id
        )
    ):
        proposal.setdefault(enquiry_id, (previous or {}).get("intent"))
        latest[enquiry_id] = intent
    confirmed = sum(latest[key] == proposal[key] for key in latest)
    return {"confirmed": confirmed, "corrected": len(latest) - confirmed}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key != "per_class"}


def retrain(
    factory: sessionmaker[Session],
    home: Path,
    *,
    base_frame: pd.DataFrame | None = None,
    target_precision: float = 0.95,
    oos_label: str | None = None,
    seed: int = 0,
    trained_by: str = "retrain",
    n_jobs: int | None = 2,
    refit: bool | None = None,
) -> dict[str, Any]:
    """Train a candidate on base data + corrections, register it, and compare it with the active model.

    `base_frame` holds FEATURE_COLUMNS and a `label` column (default: the bundled starter set). A share
    of the combined rows is held out: a model of the same recipe trained on the rest and the active
    model are both scored on it (`candidate_metrics`, `active_metrics`). With `refit` (REFIT_DEFAULT: True)
    the registered candidate is then trained on every row, held-out ones included, so no reviewed label
    is lost to the comparison (its thresholds come from cross-fitted scores, as every training's do);
    `refit=False` registers the model trained without the held-out rows. Labels with fewer than
    MIN_ROWS_PER_LABEL rows are left out and reported. Nothing is promoted.
    """
    refit = REFIT_DEFAULT if refit is None else refit
    if base_frame is None:
        base, base_labels = starter_training_frame()
    else:
        if "label" not in base_frame.columns:
            raise TriageError("base_frame needs a 'label' column beside the feature columns")
        base = base_frame[list(FEATURE_COLUMNS)].reset_index(drop=True)
        base_labels = base_frame["label"].astype(str).tolist()
    with factory() as session:
        reviewed = reviewed_rows(session)
        kinds = label_kinds(session)
    corrected = reviewed.frame
    # Base data first, then people's labels oldest first: the same content keeps its newest label.
    frame, labels, duplicates = deduplicate(
        pd.concat([base, corrected], ignore_index=True), base_labels + reviewed.labels
    )
    training_rows = {
        "base": len(base),
        "confirmed": sum(reviewed.confirmed),
        "corrected": len(reviewed.labels) - sum(reviewed.confirmed),
        "spot_checks": sum(reviewed.spot_check),
        "duplicates_dropped": duplicates,
    }
    counts = Counter(labels)
    skipped = sorted(label for label, count in counts.items() if count < MIN_ROWS_PER_LABEL)
    keep = [label not in skipped for label in labels]
    frame = frame[keep].reset_index(drop=True)
    labels = [label for label, kept in zip(labels, keep, strict=True) if kept]

    # Every label must reach the held-out part at least once.
    holdout_size = max(round(HOLDOUT_SHARE * len(labels)), len(set(labels)))
    train_frame, holdout_frame, train_labels, holdout_labels = train_test_split(
        frame, labels, test_size=holdout_size, stratify=labels, random_state=seed
    )
    compared = train_model(
        train_frame,
        train_labels,
        target_precision=target_precision,
        oos_label=oos_label,
        seed=seed,
        n_jobs=n_jobs,
    )
    candidate_metrics = evaluate(compared.model, holdout_frame, holdout_labels, oos_label=oos_label)
    if refit:
        # The held-out rows judged the recipe; the candidate is the same recipe on every row. Its
        # thresholds stay valid without a hold-out: train_model chooses them on cross-fitted scores.
        result = train_model(
            frame,
            labels,
            target_precision=target_precision,
            oos_label=oos_label,
            seed=seed,
            n_jobs=n_jobs,
        )
        result.training_seconds = round(result.training_seconds + compared.training_seconds, 3)
    else:
        result = compared
    result.metrics["holdout"] = _summary(candidate_metrics)
    result.metrics["holdout_model_rows"] = len(train_labels)
    result.metrics["reviewed_labels"] = kinds  # recorded in the candidate's provenance
    result.metrics["training_rows"] = training_rows

    with factory() as session, session.begin():
        version = registry.register_candidate(
            session,
            home,
            result,
            trained_by=trained_by,
            data_description=(
                f"{'starter set' if base_frame is None else 'configured base data'} ({len(base)} rows) + "
                f"{len(corrected)} corrected enquiries ({training_rows['confirmed']} confirmed, "
                f"{training_rows['corrected']} corrected, {training_rows['spot_checks']} spot checks; "
                f"{duplicates} duplicate rows dropped, newest label kept); "
                + (
                    f"trained on every row; a {int(HOLDOUT_SHARE * 100)}% hold-out judged the same "
                    "recipe trained on the rest"
                    if refit
                    else f"{int(HOLDOUT_SHARE * 100)}% held out for comparison"
                )
            ),
        )
    active_metrics: dict[str, Any] | None = None
    active_error: str | None = None
    with factory() as session:
        active = registry.active_version(session)
        if active is not None:
            try:
                active_model = registry.load_model(session, home, active)
                active_metrics = _summary(
                    evaluate(active_model, holdout_frame, holdout_labels, oos_label=oos_label)
                )
            except TriageError as error:
                active_error = str(error)
    deltas: dict[str, float] = {}
    if active_metrics is not None:
        for key in ("accuracy", "macro_f1", "coverage", "automated_precision", "ece"):
            if candidate_metrics.get(key) is not None and active_metrics.get(key) is not None:
                deltas[key] = round(candidate_metrics[key] - active_metrics[key], 6)
    return {
        "candidate": version,
        "active": active,
        "promoted": False,
        "n_base": len(base),
        "n_corrections": len(corrected),
        "reviewed_labels": kinds,
        "training_rows": training_rows,
        "n_train": result.n_rows,
        "n_holdout": len(holdout_labels),
        "holdout_model_rows": len(train_labels),
        "refit_on_all_rows": refit,
        "skipped_labels": skipped,
        "training_seconds": result.training_seconds,
        "candidate_metrics": _summary(candidate_metrics),
        "active_metrics": active_metrics,
        "active_error": active_error,
        "candidate_minus_active": deltas,
        "next_step": f"triage model shadow {version}  |  triage model promote {version} --approved-by NAME",
    }
