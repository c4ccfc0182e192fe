"""Training: fit the Pipeline, calibrate it, and choose per-class abstention thresholds.

Thresholds are chosen on out-of-fold predictions: every training row is scored by a model that did not
see it (5-fold cross-fitting inside `TemperatureCalibratedClassifier`), so each class's threshold rests
on all of its examples rather than on a small validation split, and the final model is still fitted on
all rows. See docs/classifier.md for why.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy
import scipy.sparse as sp
import sklearn
from sklearn.pipeline import Pipeline

from models.classifier import (
    FEATURE_COLUMNS,
    TemperatureCalibratedClassifier,
    TriageModel,
    build_pipeline,
    check_frame,
    class_centroids,
)
from models.errors import ConfigError
from models.evaluation import expected_calibration_error

UNREGISTERED = "unregistered"
# A class's own precision curve is noisy with a few dozen examples; it is pulled towards the curve of all
# classes with the weight of this many examples.
PRIOR_WEIGHT = 20.0
# The out-of-fold precision the thresholds aim at is the target plus this margin, so that the precision
# on new data (a slightly different sample) stays above the target.
SAFETY_MARGIN = 0.01
# A text counts as "unlike anything in training" when its similarity to the nearest class centroid is
# below half the similarity that 99% of training texts reach: a backstop for text from another world
# (thresholds and the out-of-scope class do the everyday work), so it must not eat in-scope coverage.
NOVELTY_QUANTILE = 0.01
NOVELTY_FACTOR = 0.5
MIN_EXAMPLES_PER_LABEL = 2
# A threshold of exactly 1.0 means "never automate"; a reachable threshold stays just below it, since
# calibrated confidence on very separable data rounds to 1.0.
NEVER = 1.0
HIGHEST_THRESHOLD = 0.999999


@dataclass
class TrainResult:
    """A trained model with what the registry records about it."""

    model: TriageModel
    metrics: dict[str, Any]
    data_hash: str
    n_rows: int
    label_counts: dict[str, int]
    params: dict[str, Any]
    training_seconds: float
    libraries: dict[str, str] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """Versions that must match when an artifact is loaded again."""
    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
    }


def data_hash(frame: pd.DataFrame, labels: Sequence[str]) -> str:
    """SHA-256 of the training rows (features and label, in order): corrections change it."""
    digest = hashlib.sha256()
    checked = check_frame(frame)
    for row, label in zip(checked.itertuples(index=False, name=None), labels, strict=True):
        digest.update(json.dumps([*row, str(label)], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def choose_thresholds(
    probabilities: npt.NDArray[np.float64],
    y_index: npt.NDArray[np.intp],
    classes: Sequence[str],
    *,
    target_precision: float,
    oos_label: str | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    margin: float = SAFETY_MARGIN,
) -> dict[str, float]:
    """Per-class thresholds so that the automated lane reaches `target_precision` on these predictions.

    For each class, the lowest threshold whose smoothed precision (the class's own hits, pulled towards
    the all-class precision at the same confidence) reaches target + margin; a class that never gets
    there has threshold 1.0 (never automated). Then all thresholds rise together until the overall
    precision of what would be automated reaches target + margin. Rows of `oos_label` count as wrong
    whenever another class is predicted; predicting `oos_label` itself always goes to people.
    """
    if not 0.0 < target_precision < 1.0:
        raise ConfigError(f"target precision must be between 0 and 1, got {target_precision}")
    aim = min(target_precision + margin, 0.999)
    chosen = np.argmax(probabilities, axis=1)
    confidence = probabilities[np.arange(len(chosen)), chosen]
    correct = chosen == y_index
    oos_index = list(classes).index(oos_label) if oos_label is not None and oos_label in classes else -1
    eligible = chosen != oos_index

    # Precision of everything at or above each confidence value, across classes: the prior curve.
    order = np.argsort(-confidence[eligible], kind="stable")
    sorted_conf = confidence[eligible][order]
    cumulative_correct = np.cumsum(correct[eligible][order])
    global_precision = cumulative_correct / np.arange(1, len(order) + 1)

    def prior_at(value: float) -> float:
        if len(sorted_conf) == 0:
            return aim
        count = int(np.searchsorted(-sorted_conf, -value, side="right"))
        return float(global_precision[max(count - 1, 0)])

    thresholds: dict[str, float] = {}
    for index, label in enumerate(classes):
        if index == oos_index:
            thresholds[label] = NEVER
            continue
        mine = np.flatnonzero(eligible & (chosen == index))
        if len(mine) == 0:
            thresholds[label] = _global_threshold(sorted_conf, global_precision, aim)
            continue
        mine = mine[np.argsort(-confidence[mine], kind="stable")]
        hits = np.cumsum(correct[mine])
        best = 1.0
        for position, row in enumerate(mine):
            value = float(confidence[row])
            if position + 1 < len(mine) and confidence[mine[position + 1]] == value:
                continue  # ties: decide once for the whole group of equal confidence
            smoothed = (hits[position] + prior_weight * prior_at(value)) / (position + 1 + prior_weight)
            if smoothed >= aim:
                best = min(value, HIGHEST_THRESHOLD)
        thresholds[label] = best

    # Lift every threshold by the same step until the pooled precision reaches the aim.
    for lift in np.arange(0.0, 1.0001, 0.005):
        lifted = {
            label: NEVER if value >= NEVER or value + lift > HIGHEST_THRESHOLD else value + lift
            for label, value in thresholds.items()
        }
        limits = np.array([lifted[label] for label in classes])[chosen]
        automated = eligible & (confidence >= limits) & (limits < 1.0)
        if automated.sum() == 0 or correct[automated].mean() >= aim:
            return {label: round(float(value), 6) for label, value in lifted.items()}
    return dict.fromkeys(classes, NEVER)


def _global_threshold(
    sorted_conf: npt.NDArray[np.float64], precision: npt.NDArray[np.float64], aim: float
) -> float:
    reaching = np.flatnonzero(precision >= aim)
    return min(float(sorted_conf[reaching[-1]]), HIGHEST_THRESHOLD) if len(reaching) else NEVER


def train_model(
    frame: pd.DataFrame,
    labels: Sequence[str],
    *,
    target_precision: float = 0.95,
    oos_label: str | None = None,
    seed: int = 0,
    n_jobs: int | None = 2,
) -> TrainResult:
    """Fit the Pipeline on `frame` (FEATURE_COLUMNS) and `labels`, calibrate, and choose thresholds.

    Rows labelled `oos_label` are examples of "not ours": the model learns them as a class and always
    sends that class to people. Every label needs at least two examples. `n_jobs` processes fit the
    cross-validation folds (the machines this runs on have two cores).
    """
    started = time.perf_counter()
    checked = check_frame(frame)
    y = np.asarray([str(label) for label in labels], dtype=object)
    if len(y) != len(checked):
        raise ConfigError(f"{len(checked)} rows but {len(y)} labels")
    counts = Counter(y.tolist())
    too_few = sorted(label for label, count in counts.items() if count < MIN_EXAMPLES_PER_LABEL)
    if too_few:
        raise ConfigError(
            f"labels with fewer than {MIN_EXAMPLES_PER_LABEL} examples cannot be calibrated: {too_few[:20]}; "
            "add examples or drop those rows"
        )
    if len(counts) < 2:
        raise ConfigError("training needs at least two different labels")

    pipeline = build_pipeline(seed=seed, n_jobs=n_jobs)
    features = pipeline.named_steps["features"]
    classifier: TemperatureCalibratedClassifier = pipeline.named_steps["classifier"]
    matrix = features.fit_transform(checked)
    classifier.fit(matrix, y)
    classes = [str(label) for label in classifier.classes_]
    y_index = np.searchsorted(classifier.classes_, y)
    oof_proba = classifier.oof_proba_
    del classifier.oof_proba_  # only needed here; keeps the stored artifact small

    thresholds = choose_thresholds(
        oof_proba, y_index, classes, target_precision=target_precision, oos_label=oos_label
    )
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    centroids = class_centroids(matrix[:, features.output_indices_["text"]], y_index, len(classes))
    model = TriageModel(
        version=UNREGISTERED,
        pipeline=Pipeline(pipeline.steps),
        thresholds=thresholds,
        centroids=centroids,
        novelty_floor=0.0,
        oos_label=oos_label,
    )
    in_scope = np.asarray([label != oos_label for label in y])
    training_similarity = model.similarity(matrix)
    model.novelty_floor = NOVELTY_FACTOR * float(np.quantile(training_similarity[in_scope], NOVELTY_QUANTILE))

    metrics = _out_of_fold_metrics(oof_proba, y_index, classes, thresholds, oos_label)
    metrics["temperature"] = round(float(classifier.temperature_), 6)
    metrics["novelty_floor"] = round(model.novelty_floor, 6)
    return TrainResult(
        model=model,
        metrics=metrics,
        data_hash=data_hash(checked, y.tolist()),
        n_rows=len(checked),
        label_counts=dict(sorted(counts.items())),
        params={
            "target_precision": target_precision,
            "oos_label": oos_label,
            "seed": seed,
            "feature_columns": list(FEATURE_COLUMNS),
            "classifier": "LinearSVC(C=0.5, tol=1e-3) + temperature scaling, 5-fold cross-fitted",
            "features": (
                "word 1-2-gram + char_wb 3-5-gram TF-IDF (sublinear) + one-hot channel/free_mail/segment"
            ),
        },
        training_seconds=round(time.perf_counter() - started, 3),
        libraries=library_versions(),
        reference=drift_reference(oof_proba, classes),
    )


def drift_reference(probabilities: npt.NDArray[np.float64], classes: Sequence[str]) -> dict[str, Any]:
    """What predictions looked like out of fold: the baseline the drift metrics (PSI) compare against."""
    chosen = np.argmax(probabilities, axis=1)
    confidence = probabilities[np.arange(len(chosen)), chosen]
    shares = np.bincount(chosen, minlength=len(classes)) / max(len(chosen), 1)
    edges = np.linspace(0.0, 1.0, 11)
    counts, _ = np.histogram(confidence, bins=edges)
    return {
        "label_shares": {label: round(float(share), 6) for label, share in zip(classes, shares, strict=True)},
        "confidence_histogram": {
            "edges": [round(float(edge), 2) for edge in edges],
            "counts": counts.tolist(),
        },
    }


def _out_of_fold_metrics(
    probabilities: npt.NDArray[np.float64],
    y_index: npt.NDArray[np.intp],
    classes: Sequence[str],
    thresholds: dict[str, float],
    oos_label: str | None,
) -> dict[str, Any]:
    """How the thresholds behave on the out-of-fold predictions they were chosen on (optimistic)."""
    chosen = np.argmax(probabilities, axis=1)
    confidence = probabilities[np.arange(len(chosen)), chosen]
    limits = np.array([thresholds[label] for label in classes])[chosen]
    oos_index = list(classes).index(oos_label) if oos_label is not None and oos_label in classes else -1
    automated = (confidence >= limits) & (limits < 1.0) & (chosen != oos_index)
    in_scope = y_index != oos_index
    correct = chosen == y_index
    return {
        "out_of_fold_accuracy": round(float(correct[in_scope].mean()), 6),
        "out_of_fold_coverage": round(float(automated.mean()), 6),
        "out_of_fold_automated_precision": (
            round(float(correct[automated].mean()), 6) if automated.any() else None
        ),
        "out_of_fold_ece": round(expected_calibration_error(confidence[in_scope], correct[in_scope]), 6),
    }
