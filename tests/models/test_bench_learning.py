"""The learning-curve bench's pure parts: the day schedule and the lane arithmetic (no training here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_learning.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_learning", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def labels_of(known: int, unknown: int, per_intent: int) -> tuple[list[str], set[str]]:
    labels = [f"k{i}" for i in range(known) for _ in range(per_intent)]
    labels += [f"u{i}" for i in range(unknown) for _ in range(per_intent)]
    return labels, {f"u{i}" for i in range(unknown)}


def test_schedule_seeds_each_known_intent_and_fills_days_without_reuse(bench: ModuleType) -> None:
    labels, unknown = labels_of(known=6, unknown=2, per_intent=40)
    schedule = bench.day_schedule(labels, unknown, days=3, per_day=20, seed_per_intent=10, seed=1)
    seeded = [labels[i] for i in schedule.seed_rows]
    assert sorted(set(seeded)) == [f"k{i}" for i in range(6)]
    assert all(seeded.count(f"k{i}") == 10 for i in range(6))
    assert [len(day) for day in schedule.days] == [20, 20, 20]
    assert all(sum(labels[i] in unknown for i in day) == 5 for day in schedule.days)  # a quarter
    used = schedule.seed_rows + [i for day in schedule.days for i in day]
    assert len(used) == len(set(used))  # no enquiry arrives twice or is also a seed example
    again = bench.day_schedule(labels, unknown, days=3, per_day=20, seed_per_intent=10, seed=1)
    assert again == schedule  # seeded
    other = bench.day_schedule(labels, unknown, days=3, per_day=20, seed_per_intent=10, seed=2)
    assert other.days != schedule.days


def test_schedule_refuses_what_the_data_cannot_fill(bench: ModuleType) -> None:
    labels, unknown = labels_of(known=2, unknown=1, per_intent=12)
    with pytest.raises(ValueError, match="more rows than the data has"):
        bench.day_schedule(labels, unknown, days=5, per_day=20, seed_per_intent=10)
    with pytest.raises(ValueError, match="fewer than 20"):
        bench.day_schedule(labels, unknown, days=1, per_day=4, seed_per_intent=20)


def test_lane_figures_count_an_automated_unknown_as_wrong(bench: ModuleType) -> None:
    truth = ["a", "b", "other", "a", "other"]
    predicted = ["a", "a", "other", "a", "b"]
    automated = [True, True, False, False, True]
    unknown = [False, False, True, False, True]
    figures = bench.lane_figures(truth, predicted, automated, unknown)
    assert (figures.n, figures.automated, figures.unknowns_automated) == (5, 3, 1)
    assert figures.coverage == 0.6
    assert figures.precision == pytest.approx(1 / 3, abs=1e-4)  # a right, b wrong, the unknown wrong
    nothing = bench.lane_figures(truth, predicted, [False] * 5, unknown)
    assert nothing.precision is None and nothing.coverage == 0.0
    with pytest.raises(ValueError):
        bench.lane_figures(truth, predicted[:4], automated, unknown)


def test_target_check_compares_the_last_day_and_floors_every_day(bench: ModuleType) -> None:
    figures = bench.LaneFigures

    def day(coverage: float, precision: float | None) -> object:
        return figures(
            n=100, automated=int(coverage * 100), coverage=coverage, precision=precision, unknowns_automated=0
        )

    product = [day(0.0, None), day(0.3, 0.93), day(0.45, 0.95)]
    oracle = [day(0.0, None), day(0.4, 0.96), day(0.5, 0.96)]
    check = bench.target_check(product, oracle)
    assert check["last_day_coverage_vs_oracle"] == 0.9 and check["coverage_met"]
    assert check["precision_met"] and check["floor_met"] and check["worst_day_precision"] == 0.93
    low = bench.target_check([day(0.3, 0.91), day(0.45, 0.95)], oracle[1:])
    assert not low["floor_met"]
    short = bench.target_check([day(0.3, 0.95), day(0.4, 0.95)], oracle[1:])
    assert not short["coverage_met"]  # 0.4 / 0.5 = 80 %
