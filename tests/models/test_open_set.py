"""Open-set thresholds (issue 13): simulated unknowns, the Learn-then-Test bound, and the protocol."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.stats import beta

from models import training
from models.classifier import frame_from_texts
from models.open_set import ham_bodies, rotations, run_protocol
from models.training import (
    MIN_OPEN_SET_INTENTS,
    OpenSetScores,
    learn_then_test,
    min_rows_to_certify,
    novel_share,
    open_set_folds,
    train_model,
)
from tests.conftest import shared_data


def _labels(intents: int, per_intent: int) -> np.ndarray:
    return np.asarray([f"intent_{i:02d}" for i in range(intents) for _ in range(per_intent)], dtype=object)


def test_folds_hold_whole_intents_out_and_score_a_quarter_unknowns() -> None:
    labels = _labels(16, 40)
    folds = open_set_folds(labels, oos_label=None, seed=0)
    assert len(folds) == 8
    for train, scored, held_out in folds:
        trained = set(labels[train].tolist())
        assert held_out and not held_out & trained  # the held-out intents are never trained on
        assert not set(train.tolist()) & set(scored[~np.isin(labels[scored], list(held_out))].tolist())
        unknown = np.isin(labels[scored], list(held_out))
        assert 0.2 <= unknown.mean() <= 0.3
    assert set().union(*(held_out for _, _, held_out in folds)) == set(labels.tolist())


def test_too_few_intents_or_the_oos_label_are_never_held_out() -> None:
    assert open_set_folds(_labels(MIN_OPEN_SET_INTENTS - 1, 10), oos_label=None, seed=0) == []
    labels = np.concatenate([_labels(12, 10), np.asarray(["not_ours"] * 10, dtype=object)])
    for train, _, held_out in open_set_folds(labels, oos_label="not_ours", seed=0):
        assert "not_ours" not in held_out and "not_ours" in set(labels[train].tolist())


def _scores(n: int, seed: int = 0) -> OpenSetScores:
    """Confidence that separates right from wrong imperfectly: errors are likelier at low confidence."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    wrong = rng.uniform(size=n) > confidence**4
    return OpenSetScores(
        confidence=confidence,
        chosen=np.zeros(n, dtype=np.intp),
        wrong=wrong,
        similarity=rng.uniform(size=n),
        unknown=rng.uniform(size=n) < 0.25,
        scored=np.ones(n, dtype=bool),
    )


def test_learn_then_test_bounds_the_error_rate_of_what_it_automates() -> None:
    scores = _scores(20_000)
    choice = learn_then_test(scores, np.zeros(1), target_precision=0.9, delta=0.1, margin=0.0)
    assert choice["feasible"]
    automated = (scores.confidence >= choice["confidence_floor"]) & (
        scores.similarity >= choice["novelty_floor"]
    )
    errors, n = int(scores.wrong[automated].sum()), int(automated.sum())
    assert (n, errors) == (choice["automated"], choice["errors"])
    assert choice["procedure"] == "fixed-sequence"
    level = choice["level"]
    assert level == pytest.approx(0.1 / len(training.NOVELTY_QUANTILES))
    assert beta.ppf(1 - level, errors + 1, n - errors) <= 0.1  # the Clopper-Pearson bound holds
    assert choice["precision_lower_bound"] < choice["expected_precision"]
    # the point estimate alone would have automated more: the bound costs coverage, on purpose
    order = np.argsort(-scores.confidence)
    point = np.flatnonzero(1 - np.cumsum(scores.wrong[order]) / np.arange(1, len(order) + 1) >= 0.9)
    assert point[-1] + 1 > n


def test_fixed_sequence_stops_at_its_first_failure_and_bonferroni_tests_every_pair() -> None:
    # Floors 0.9, 0.8, 0.7 automate 300, 600, 900 rows; the band between 0.8 and 0.9 is 20 % wrong.
    confidence = np.repeat([0.95, 0.85, 0.75], 300)
    wrong = np.zeros(900, dtype=bool)
    wrong[300:360] = True
    scores = OpenSetScores(
        confidence=confidence,
        chosen=np.zeros(900, dtype=np.intp),
        wrong=wrong,
        similarity=np.ones(900),
        unknown=np.zeros(900, dtype=bool),
        scored=np.ones(900, dtype=bool),
    )
    floors = (0.9, 0.8, 0.7)
    sequential = learn_then_test(
        scores, np.zeros(1), target_precision=0.9, margin=0.0, confidence_floors=floors
    )
    # 0.9 passes (0 errors of 300), 0.8 fails (60 of 600 = 10 %, not below 10 % surely): the sequence
    # ends there, although 0.7 (60 of 900) would pass on its own.
    assert sequential["feasible"] and sequential["confidence_floor"] == 0.9
    assert sequential["pairs_tested"] == 2
    wide = learn_then_test(
        scores,
        np.zeros(1),
        target_precision=0.9,
        margin=0.0,
        confidence_floors=floors,
        procedure="bonferroni",
    )
    assert wide["feasible"] and wide["confidence_floor"] == 0.7 and wide["pairs_tested"] == 3
    assert wide["level"] == pytest.approx(0.1 / 3)
    # Floors automating fewer rows than the minimum are skipped before testing, whatever their errors.
    skipped = learn_then_test(
        scores, np.zeros(1), target_precision=0.9, margin=0.0, confidence_floors=floors, min_tested_rows=700
    )
    assert skipped["feasible"] and skipped["confidence_floor"] == 0.7 and skipped["pairs_tested"] == 1


def test_min_rows_to_certify_is_the_smallest_n_whose_bound_reaches_the_target() -> None:
    n = min_rows_to_certify(0.04, 0.1)
    assert beta.ppf(0.9, 1, n) <= 0.04 < beta.ppf(0.9, 1, n - 1)
    assert n == 57  # no error at all: ln(0.1) / ln(0.96) rows
    assert min_rows_to_certify(0.04, 0.1 / 294) > 3 * n  # what Bonferroni over the old grid needed
    n3 = min_rows_to_certify(0.04, 0.1, errors=3)
    assert beta.ppf(0.9, 4, n3 - 3) <= 0.04 < beta.ppf(0.9, 4, n3 - 4)


def test_the_teams_out_of_scope_rows_count_towards_the_unknown_share() -> None:
    assert novel_share(0, 100) == 0.25  # no out-of-scope label: a quarter never seen
    # 10 % out of scope: never-seen rows make up the rest of the quarter.
    share = novel_share(10, 100)
    assert share + 0.10 * (1 - share) == pytest.approx(0.25)
    assert novel_share(40, 100) == 0.125  # the floor: half the unknowns are always never seen
    labels = np.concatenate([_labels(16, 40), np.asarray(["not_ours"] * 80, dtype=object)])
    for _, scored, held_out in open_set_folds(labels, oos_label="not_ours", seed=0):
        novel = np.isin(labels[scored], list(held_out)).mean()
        unknown = novel + (labels[scored] == "not_ours").mean()
        assert 0.2 <= unknown <= 0.3 and novel >= 0.1


def test_learn_then_test_refuses_to_promise_on_too_few_rows() -> None:
    choice = learn_then_test(_scores(60), np.zeros(1), target_precision=0.95)
    assert not choice["feasible"]


def _synthetic(intents: int = 12, per_intent: int = 40) -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    texts, labels = [], []
    for index in range(intents):
        words = [f"w{index}x{k}" for k in range(6)]
        for _ in range(per_intent):
            texts.append(" ".join(rng.choice(words) for _ in range(5)) + " please help")
            labels.append(f"intent_{index:02d}")
    return texts, labels


def test_training_reports_the_open_set_promise_not_the_out_of_fold_precision() -> None:
    texts, labels = _synthetic()
    result = train_model(frame_from_texts(texts), labels, n_jobs=None)
    metrics = result.metrics
    assert "out_of_fold_automated_precision" not in metrics
    assert metrics["open_set_calibration_unknowns"] > 0
    assert metrics["bound_confidence"] == 0.9
    assert "open-set Learn-then-Test" in result.params["thresholds"]
    if metrics["expected_automated_precision"] is None:  # too few rows to promise anything
        assert all(value >= 1.0 for value in result.model.thresholds.values())
    else:
        assert metrics["automated_precision_lower_bound"] >= 0.95


def test_the_starter_sized_taxonomy_keeps_in_distribution_thresholds_and_says_so() -> None:
    texts, labels = _synthetic(intents=5)
    metrics = train_model(frame_from_texts(texts), labels, n_jobs=None).metrics
    assert metrics["expected_automated_precision"] is None
    assert "in-distribution" in metrics["precision_note"]


def test_rotations_partition_the_intents() -> None:
    intents = [f"i{n}" for n in range(77)]
    held = [set(rotation.held_out) for rotation in rotations(intents, count=4)]
    assert sorted(len(part) for part in held) == [19, 19, 19, 20]
    assert set().union(*held) == set(intents) and sum(len(part) for part in held) == 77


def test_ham_bodies_are_plain_text_without_headers() -> None:
    bodies = ham_bodies(shared_data("spamassassin"), limit=20)
    assert len(bodies) == 20
    assert not any(body.startswith(("Return-Path:", "Received:")) for body in bodies)


@pytest.mark.slow
def test_reduced_open_set_protocol_keeps_unknowns_out_of_the_automated_lane() -> None:
    """Half the training rows, 2 rotations, 100 ham bodies: the full protocol is bench/eval_open_set.py."""
    report = run_protocol(
        shared_data("banking77"),
        shared_data("spamassassin"),
        rotation_count=4,
        ham_count=100,
        train_share=0.5,
        with_baseline=False,
        n_jobs=None,
        max_rotations=2,
    )
    for entry in report["rotations"]:
        product = entry["product"]
        assert product["in_scope_accuracy"] >= 0.85
        if product["automated"]:
            assert product["automated_precision"] >= 0.9
            assert product["out_of_domain_automated"] <= 2
            assert product["unknowns_automated"] / entry["n_unknown"] <= 0.15
