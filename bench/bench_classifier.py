"""Benchmark the classifier on BANKING77: training time, quality, predictions per second, peak memory.

    python bench/bench_classifier.py [--data ../shared/data/banking77] [--baseline] [--json]

Prints accuracy, macro-F1, coverage at the target automated precision and ECE on the official test
split; training seconds; batch predictions per second; single-prediction p50/p99 latency; peak RSS;
and whether each figure meets its budget (training < 60 s on 2 cores, batch ≥ 5,000 predictions/s,
single p99 < 20 ms).
`--baseline` also measures a plain word 1-2-gram TF-IDF + LogisticRegression for comparison. The
machine's load average is printed too: figures from a shared machine are upper bounds on time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.classifier import frame_from_texts  # noqa: E402
from models.evaluation import evaluate  # noqa: E402
from models.training import train_model  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """Plain TF-IDF (word 1-2-grams) + LogisticRegression with default settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline

    started = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000))
    model.fit(train["text"], train["category"])
    seconds = time.perf_counter() - started
    predicted = model.predict(test["text"])
    return {
        "model": "TfidfVectorizer(ngram_range=(1, 2)) + LogisticRegression(max_iter=1000)",
        "training_seconds": round(seconds, 2),
        "accuracy": round(float((predicted == test["category"]).mean()), 4),
        "macro_f1": round(float(f1_score(test["category"], predicted, average="macro")), 4),
    }


def run(data: Path, *, target_precision: float, with_baseline: bool, jobs: int) -> dict[str, Any]:
    train = pd.read_csv(data / "train.csv")
    test = pd.read_csv(data / "test.csv")
    train_frame = frame_from_texts(train["text"])
    test_frame = frame_from_texts(test["text"])
    started = time.perf_counter()
    result = train_model(
        train_frame,
        train["category"].tolist(),
        target_precision=target_precision,
        n_jobs=jobs if jobs > 1 else None,
    )
    training_seconds = time.perf_counter() - started
    metrics = evaluate(result.model, test_frame, test["category"].tolist())
    model = result.model

    model.predict(test_frame.iloc[:100])  # warm caches
    # Wall time and this process's CPU time: on a shared machine the CPU figure is the stable one.
    started, cpu_started = time.perf_counter(), time.process_time()
    model.predict(test_frame)
    batch_per_second = len(test_frame) / (time.perf_counter() - started)
    batch_per_cpu_second = len(test_frame) / (time.process_time() - cpu_started)
    latencies = []
    cpu_started = time.process_time()
    for index in range(1000):
        row = test_frame.iloc[index % len(test_frame) : index % len(test_frame) + 1]
        started = time.perf_counter()
        model.predict(row)
        latencies.append(time.perf_counter() - started)
    single_cpu_ms = (time.process_time() - cpu_started) / len(latencies) * 1000
    report: dict[str, Any] = {
        "data": str(data),
        "n_train": len(train),
        "n_test": len(test),
        "target_precision": target_precision,
        "training_seconds": round(training_seconds, 2),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "coverage": metrics["coverage"],
        "automated_precision": metrics["automated_precision"],
        "ece": metrics["ece"],
        "out_of_fold": {key: value for key, value in result.metrics.items()},
        "batch_predictions_per_second": round(batch_per_second),
        "batch_predictions_per_cpu_second": round(batch_per_cpu_second),
        "single_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "single_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
        "single_predictions_per_second": round(1 / float(np.mean(latencies))),
        "single_cpu_ms_mean": round(single_cpu_ms, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    # The performance budget of issue 13; wall times on a shared machine are upper bounds.
    report["targets"] = {
        "training_under_60_s": report["training_seconds"] < 60,
        "batch_at_least_5000_per_s": report["batch_predictions_per_second"] >= 5000,
        "single_p99_under_20_ms": report["single_p99_ms"] < 20,
    }
    if with_baseline:
        report["baseline"] = baseline(train, test)
        report["accuracy_gain_over_baseline"] = round(report["accuracy"] - report["baseline"]["accuracy"], 4)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--jobs", type=int, default=2, help="processes fitting the cross-validation folds")
    parser.add_argument(
        "--baseline", action="store_true", help="also measure plain TF-IDF + LogisticRegression"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not (args.data / "train.csv").exists():
        parser.error(f"{args.data} has no train.csv (BANKING77 lives in ../shared/data/banking77)")
    report = run(
        args.data, target_precision=args.target_precision, with_baseline=args.baseline, jobs=args.jobs
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
