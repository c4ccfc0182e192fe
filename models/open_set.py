"""The open-set evaluation protocol: how the automated lane behaves on traffic with unknown intents.

BANKING77's intents are shuffled (fixed seed) and cut into quarters. Each rotation holds one quarter
out: the model is trained on the training rows of the other three quarters only, then scored on the
whole official test split (rows of the held-out quarter are unknown intents) plus SpamAssassin ham
bodies (out-of-domain text). An automated unknown or ham row counts as wrong.

Beside the product it measures a plain baseline: word 1-2-gram TF-IDF + LogisticRegression with one
global confidence threshold, tuned the same way as the product's thresholds (on training data only,
with whole intents held out inside training and the same binomial bound; `models.training`), and the
same baseline with the point estimate on those simulated unknowns instead of the bound
(`baseline_point`: what one tuned threshold without a bound gives).

`bench/eval_open_set.py` is the one command that prints the figures; `tests/models/test_open_set.py`
runs a reduced version.
"""

from __future__ import annotations

import email
import email.policy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.classifier import frame_from_texts
from models.training import (
    DEFAULT_DELTA,
    OpenSetScores,
    concatenate_scores,
    learn_then_test,
    open_set_folds,
    train_model,
)

UNKNOWN = "__unknown__"
HAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
HAM_MAX_CHARS = 3_000

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Rotation:
    index: int
    held_out: tuple[str, ...]


def rotations(intents: Sequence[str], *, count: int = 4, seed: int = 0) -> list[Rotation]:
    """`count` disjoint held-out sets of intents (a 1/count share each), from a seeded shuffle."""
    shuffled = sorted(intents)
    random.Random(seed).shuffle(shuffled)
    return [Rotation(index, tuple(sorted(shuffled[index::count]))) for index in range(count)]


def ham_bodies(folder: Path, *, limit: int, seed: int = 0) -> list[str]:
    """Plain-text bodies of SpamAssassin ham mails (first HAM_MAX_CHARS characters), a seeded sample."""
    paths = sorted(path for name in HAM_FOLDERS for path in (folder / name).glob("*.txt"))
    random.Random(seed).shuffle(paths)
    bodies: list[str] = []
    for path in paths:
        if len(bodies) >= limit:
            break
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in message.walk():
            if part.get_content_type() != "text/plain":
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace").strip()
            if text:
                bodies.append(text[:HAM_MAX_CHARS])
                break
    return bodies


def lane_figures(
    predicted: npt.NDArray[Any],
    automated: BoolArray,
    truth: npt.NDArray[Any],
    in_scope: BoolArray,
    out_of_domain: BoolArray,
) -> dict[str, Any]:
    """Automated precision (unknowns automated count as wrong), coverage, in-scope accuracy."""
    correct = (predicted == truth) & in_scope
    return {
        "automated_precision": round(float(correct[automated].mean()), 4) if automated.any() else None,
        "coverage": round(float(automated.mean()), 4),
        "in_scope_coverage": round(float(automated[in_scope].mean()), 4),
        "in_scope_accuracy": round(float((predicted == truth)[in_scope].mean()), 4),
        "unknowns_automated": int((automated & ~in_scope).sum()),
        "out_of_domain_automated": int((automated & out_of_domain).sum()),
        "automated": int(automated.sum()),
    }


class Baseline:
    """Word 1-2-gram TF-IDF + LogisticRegression, one global threshold on the top probability."""

    def __init__(self, *, target_precision: float, delta: float, seed: int, n_jobs: int | None) -> None:
        self.target_precision = target_precision
        self.delta = delta
        self.seed = seed
        self.n_jobs = n_jobs

    @staticmethod
    def _fit(texts: Sequence[str], labels: Sequence[str]) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
        return model.fit(list(texts), list(labels))

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Baseline:
        """Fit on everything; choose the threshold on simulated-unknown folds as the product does."""
        from sklearn.utils.parallel import Parallel, delayed

        x = np.asarray(texts, dtype=object)
        y = np.asarray(labels, dtype=object)
        classes = np.unique(y)
        folds = open_set_folds(y, oos_label=None, seed=self.seed)
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(self._fit)(x[rows].tolist(), y[rows].tolist())
            for rows in [*(train for train, _, _ in folds), np.arange(len(y))]
        )
        parts: list[OpenSetScores] = []
        for model, (_, scored, held_out) in zip(fitted[:-1], folds, strict=True):
            probabilities = model.predict_proba(x[scored].tolist())
            top = np.argmax(probabilities, axis=1)
            chosen = np.searchsorted(classes, model.classes_[top])
            unknown = np.asarray([label in held_out for label in y[scored].tolist()], dtype=bool)
            parts.append(
                OpenSetScores(
                    confidence=probabilities[np.arange(len(top)), top],
                    chosen=chosen,
                    wrong=(classes[chosen] != y[scored]) | unknown,
                    similarity=np.ones(len(scored)),
                    unknown=unknown,
                    scored=np.ones(len(scored), dtype=bool),
                )
            )
        scores = concatenate_scores(parts)
        choice = learn_then_test(
            scores,
            np.zeros(len(classes)),
            target_precision=self.target_precision,
            delta=self.delta,
            novelty_floors=(0.0,),
        )
        self.threshold = float(choice["confidence_floor"]) if choice["feasible"] else 1.0
        self.point_threshold = point_threshold(scores, self.target_precision)
        self.model = fitted[-1]
        return self

    def predict(self, texts: Sequence[str]) -> tuple[npt.NDArray[Any], BoolArray, BoolArray]:
        """Predicted labels, automated with the bounded threshold, automated with the point estimate."""
        probabilities = self.model.predict_proba(list(texts))
        top = np.argmax(probabilities, axis=1)
        confidence = probabilities[np.arange(len(top)), top]
        return (
            self.model.classes_[top],
            (confidence >= self.threshold) & (self.threshold < 1.0),
            (confidence >= self.point_threshold) & (self.point_threshold < 1.0),
        )


def point_threshold(scores: OpenSetScores, target_precision: float) -> float:
    """The lowest confidence at which the simulated-unknown precision reaches the target (no bound)."""
    order = np.argsort(-scores.confidence, kind="stable")
    precision = 1.0 - np.cumsum(scores.wrong[order]) / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(precision >= target_precision)
    return float(scores.confidence[order][reaching[-1]]) if len(reaching) else 1.0


def run_protocol(
    banking77: Path,
    spamassassin: Path,
    *,
    target_precision: float = 0.95,
    rotation_count: int = 4,
    ham_count: int = 500,
    train_share: float = 1.0,
    with_baseline: bool = True,
    open_set: bool = True,
    max_rotations: int | None = None,
    seed: int = 0,
    n_jobs: int | None = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every rotation's figures for the product and the baseline, and their average and worst case.

    `train_share` < 1 trains on a stratified share of the training rows (the reduced test uses it);
    `open_set=False` measures the product's thresholds as they were before the open-set fit;
    `max_rotations` runs only the first few rotations.
    """
    train = pd.read_csv(banking77 / "train.csv")
    test = pd.read_csv(banking77 / "test.csv")
    if train_share < 1.0:
        train = train.groupby("category", group_keys=False).sample(frac=train_share, random_state=seed)
    ham = ham_bodies(spamassassin, limit=ham_count, seed=seed)
    intents = sorted(train["category"].unique())
    results: list[dict[str, Any]] = []
    for rotation in rotations(intents, count=rotation_count, seed=seed)[:max_rotations]:
        held_out = set(rotation.held_out)
        known = train[~train["category"].isin(held_out)]
        texts = [*test["text"].tolist(), *ham]
        truth = np.asarray(
            [UNKNOWN if label in held_out else label for label in test["category"]] + [UNKNOWN] * len(ham),
            dtype=object,
        )
        in_scope = truth != UNKNOWN
        out_of_domain = np.arange(len(truth)) >= len(test)
        started = time.perf_counter()
        result = train_model(
            frame_from_texts(known["text"]),
            known["category"].tolist(),
            target_precision=target_precision,
            seed=seed,
            n_jobs=n_jobs,
            open_set=open_set,
        )
        seconds = time.perf_counter() - started
        arrays = result.model.predict_arrays(frame_from_texts(texts))
        predicted = np.asarray(result.model.labels, dtype=object)[arrays["chosen"]]
        product = lane_figures(predicted, ~arrays["abstained"], truth, in_scope, out_of_domain)
        product["training_seconds"] = round(seconds, 1)
        product["promised"] = result.metrics.get("expected_automated_precision")
        entry: dict[str, Any] = {
            "rotation": rotation.index,
            "held_out_intents": len(held_out),
            "n_test": len(truth),
            "n_unknown": int((~in_scope).sum()),
            "product": product,
        }
        if with_baseline:
            baseline = Baseline(
                target_precision=target_precision, delta=DEFAULT_DELTA, seed=seed, n_jobs=n_jobs
            ).fit(known["text"].tolist(), known["category"].tolist())
            base_predicted, base_automated, point_automated = baseline.predict(texts)
            base_predicted = np.asarray(base_predicted, dtype=object)
            entry["baseline"] = lane_figures(base_predicted, base_automated, truth, in_scope, out_of_domain)
            entry["baseline"]["threshold"] = round(float(baseline.threshold), 4)
            entry["baseline_point"] = lane_figures(
                base_predicted, point_automated, truth, in_scope, out_of_domain
            )
            entry["baseline_point"]["threshold"] = round(float(baseline.point_threshold), 4)
        results.append(entry)
        if progress is not None:
            progress(f"rotation {rotation.index}: {entry}")
    return {
        "target_precision": target_precision,
        "open_set_thresholds": open_set,
        "train_share": train_share,
        "ham_bodies": len(ham),
        "rotations": results,
        "summary": summarise(results),
    }


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average and worst rotation per system; coverage relative to the baseline."""
    summary: dict[str, Any] = {}
    for system in ("product", "baseline", "baseline_point"):
        rows = [entry[system] for entry in results if system in entry]
        if not rows:
            continue
        precisions = [row["automated_precision"] or 0.0 for row in rows]
        summary[system] = {
            "precision_mean": round(float(np.mean(precisions)), 4),
            "precision_worst": round(float(np.min(precisions)), 4),
            "coverage_mean": round(float(np.mean([row["coverage"] for row in rows])), 4),
            "in_scope_accuracy_mean": round(float(np.mean([row["in_scope_accuracy"] for row in rows])), 4),
        }
    for system in ("baseline", "baseline_point"):
        if "product" in summary and system in summary and summary[system]["coverage_mean"] > 0:
            summary[f"coverage_vs_{system}"] = round(
                summary["product"]["coverage_mean"] / summary[system]["coverage_mean"], 4
            )
    return summary
