"""How good a model is on labelled data, measured the way the lanes use it.

`accuracy` and `macro_f1` judge the argmax on in-scope rows; `coverage` and `automated_precision` judge
what the automated lane would do (an out-of-scope row that is automated counts as wrong); `oos_recall`
is the share of out-of-scope rows sent to people; `ece` is the expected calibration error of the
top-label confidence on in-scope rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import f1_score, precision_recall_fscore_support

if TYPE_CHECKING:
    from models.classifier import TriageModel

ECE_BINS = 15


def expected_calibration_error(
    confidence: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], *, bins: int = ECE_BINS
) -> float:
    """Weighted mean gap between confidence and accuracy over equal-width confidence bins."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for bin_index in range(bins):
        members = which == bin_index
        if members.any():
            gap = abs(float(correct[members].mean()) - float(confidence[members].mean()))
            total += gap * members.sum() / len(confidence)
    return float(total)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def evaluate(
    model: TriageModel, frame: pd.DataFrame, labels: Sequence[str], *, oos_label: str | None = None
) -> dict[str, Any]:
    """Score `model` on `frame` against the true `labels`; returns a JSON-ready dict of metrics.

    Keys: n, n_in_scope, n_oos, accuracy, macro_f1, coverage, automated_precision, oos_recall, ece,
    in_scope_coverage, novel_share, per_class (argmax precision/recall/f1/support and automated count).
    """
    truth = np.asarray([str(label) for label in labels], dtype=object)
    if len(truth) != len(frame):
        raise ValueError(f"{len(frame)} rows but {len(truth)} labels")
    arrays = model.predict_arrays(frame)
    predicted = np.asarray(model.labels, dtype=object)[arrays["chosen"]]
    confidence = arrays["confidence"]
    automated = ~arrays["abstained"]
    correct = predicted == truth
    is_oos = truth == oos_label if oos_label is not None else np.zeros(len(truth), dtype=bool)
    in_scope = ~is_oos
    # An out-of-scope row is never right when automated, even if the model has an out-of-scope class.
    automated_correct = correct & in_scope

    scope_labels = sorted(set(truth[in_scope].tolist()))
    per_class: dict[str, dict[str, float | int]] = {}
    macro_f1 = None
    if in_scope.any():
        macro_f1 = f1_score(
            truth[in_scope], predicted[in_scope], labels=scope_labels, average="macro", zero_division=0
        )
        precision, recall, f1, support = precision_recall_fscore_support(
            truth[in_scope], predicted[in_scope], labels=scope_labels, zero_division=0
        )
        for index, label in enumerate(scope_labels):
            per_class[label] = {
                "precision": round(float(precision[index]), 4),
                "recall": round(float(recall[index]), 4),
                "f1": round(float(f1[index]), 4),
                "support": int(support[index]),
                "automated": int((automated & (predicted == label)).sum()),
            }
    return {
        "model_version": model.version,
        "n": len(truth),
        "n_in_scope": int(in_scope.sum()),
        "n_oos": int(is_oos.sum()),
        "accuracy": _round(correct[in_scope].mean()) if in_scope.any() else None,
        "macro_f1": _round(macro_f1),
        "coverage": _round(automated.mean()) if len(truth) else None,
        "automated_precision": _round(automated_correct[automated].mean()) if automated.any() else None,
        "in_scope_coverage": _round(automated[in_scope].mean()) if in_scope.any() else None,
        "oos_recall": _round((~automated[is_oos]).mean()) if is_oos.any() else None,
        "ece": _round(expected_calibration_error(confidence[in_scope], correct[in_scope])),
        "novel_share": _round((arrays["similarity"] < model.novelty_floor).mean()) if len(truth) else None,
        "per_class": per_class,
    }
