"""BANKING77 (public data beside the repo): the figures the issue asks for, on held-out data.

Every tenth intent is relabelled out of scope, so one training proves both: the automated lane reaches
the target precision on the official test split, and out-of-scope enquiries go to people.
"""

from __future__ import annotations

import pytest

from models.evaluation import evaluate
from tests.models.conftest import OOS, Banking77


@pytest.mark.slow
def test_thresholds_reach_target_precision_on_held_out_data(banking77: Banking77) -> None:
    result = banking77.result  # training time is measured in bench/bench_classifier.py, not asserted here
    metrics = evaluate(result.model, banking77.test_frame, banking77.test_labels, oos_label=OOS)
    print({key: value for key, value in metrics.items() if key != "per_class"})
    assert metrics["automated_precision"] >= 0.95
    # The open-set floors (issue 13) give up closed-set coverage (0.79 before) so that traffic holding
    # unknown intents keeps the target too: measured 0.55 at 0.994 precision (docs/classifier.md).
    assert metrics["coverage"] >= 0.5
    assert metrics["accuracy"] >= 0.88 and metrics["macro_f1"] >= 0.88
    assert metrics["oos_recall"] >= 0.9
    assert metrics["ece"] <= 0.05
