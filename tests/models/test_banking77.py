"""BANKING77 (public data beside the repo): the figures the issue asks for, on held-out data.

Every tenth intent is relabelled out of scope, so one training proves both: the automated lane reaches
the target precision on the official test split, and out-of-scope enquiries go to people.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.evaluation import evaluate
from tests.models.conftest import OOS, Banking77


@pytest.mark.slow
def test_thresholds_reach_target_precision_on_held_out_data(banking77: Banking77) -> None:
    result = banking77.result
    # ~20 s on an idle 2-core machine, 60-85 s when other suites share the cores (docs/classifier.md).
    assert result.training_seconds < 180
    metrics = evaluate(result.model, banking77.test_frame, banking77.test_labels, oos_label=OOS)
    print({key: value for key, value in metrics.items() if key != "per_class"})
    assert metrics["automated_precision"] >= 0.95
    assert metrics["coverage"] >= 0.6
    assert metrics["accuracy"] >= 0.88 and metrics["macro_f1"] >= 0.88
    assert metrics["oos_recall"] >= 0.9
    assert metrics["ece"] <= 0.05


@pytest.mark.slow
def test_prediction_speed(banking77: Banking77) -> None:
    model = banking77.result.model
    frame = banking77.test_frame
    model.predict(frame.iloc[:50])
    started = time.perf_counter()
    predictions = model.predict(frame)
    per_second = len(frame) / (time.perf_counter() - started)
    latencies = []
    for index in range(200):
        row = frame.iloc[index : index + 1]
        started = time.perf_counter()
        model.predict(row)
        latencies.append(time.perf_counter() - started)
    p99_ms = float(np.percentile(latencies, 99) * 1000)
    print(f"batch {per_second:.0f}/s, single p99 {p99_ms:.1f} ms")
    assert len(predictions) == len(frame)
    # The figures are 2,000/s and 20 ms on a quiet machine; CI shares its two cores, so allow 2x.
    assert per_second >= 1_000
    assert p99_ms <= 40
