"""The classifier on its own: features, calibration, thresholds, abstention and explanations."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from models.classifier import FEATURE_COLUMNS, fit_temperature, frame_from_texts
from models.errors import ConfigError
from models.evaluation import expected_calibration_error
from models.training import TrainResult, choose_thresholds, data_hash, train_model
from tests.models.conftest import OOS, toy_rows

IN_SCOPE = ["hello, we were charged twice. thanks", "hi team, the dashboard will not load. regards"]


def test_frame_from_texts_fills_neutral_structured_values() -> None:
    frame = frame_from_texts(["a", "b"], channels=["email", "chat"])
    assert list(frame.columns) == list(FEATURE_COLUMNS)
    assert frame["body"].tolist() == ["a", "b"]
    assert frame["subject"].tolist() == ["", ""]
    assert frame["channel"].tolist() == ["email", "chat"]
    assert frame["free_mail"].tolist() == [False, False]
    assert frame["segment"].tolist() == ["unknown", "unknown"]
    with pytest.raises(ValueError, match="expected 2 values"):
        frame_from_texts(["a", "b"], segments=["smb"])


def test_fast_path_matches_the_pipeline_exactly(toy_result: TrainResult) -> None:
    model = toy_result.model
    frame = frame_from_texts(
        [*IN_SCOPE, "", "unlike anything"],
        subjects=["Invoice", None, "x", ""],  # type: ignore[list-item]
        channels=["email", "form", "weird-channel", "chat"],
        free_mail=[True, False, True, False],
        segments=["enterprise", "smb", "unknown", "mid_market"],
    )
    fast = model.features(frame).toarray()
    reference = model.pipeline.named_steps["features"].transform(frame)
    assert np.allclose(fast, reference.toarray(), atol=1e-6)
    probabilities = model.predict_arrays(frame)["probabilities"]
    assert np.allclose(probabilities, model.pipeline.predict_proba(frame), atol=1e-5)
    assert fast[:, -11:].sum(axis=1).tolist() == [3.0, 3.0, 2.0, 3.0]  # one-hot: unknown channel ignored


def test_predictions_explain_with_terms_from_the_text(toy_result: TrainResult) -> None:
    frame = frame_from_texts(IN_SCOPE)
    predictions = toy_result.model.predict(frame)
    assert [p.intent for p in predictions] == ["billing", "support"]
    for text, prediction in zip(IN_SCOPE, predictions, strict=True):
        assert 1 <= len(prediction.explanation) <= 5
        weights = [weight for _, weight in prediction.explanation]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        words = set(re.findall(r"\w+", text.lower()))
        for term, _ in prediction.explanation:
            assert set(term.split()) <= words, term
        assert prediction.model_version == toy_result.model.version


def test_out_of_scope_and_unlike_anything_go_to_people(toy_result: TrainResult) -> None:
    model = toy_result.model
    frame = frame_from_texts([IN_SCOPE[0], "the football match ended two nil. cheers", "qwxz vbnm plok zzkj"])
    first, oos, gibberish = model.predict(frame)
    assert not first.abstained and first.confidence >= first.threshold
    assert oos.intent == OOS and oos.abstained
    assert gibberish.abstained
    assert model.predict_arrays(frame)["similarity"][2] < model.novelty_floor


def test_empty_frame_and_missing_columns(toy_result: TrainResult) -> None:
    assert toy_result.model.predict(frame_from_texts([])) == []
    with pytest.raises(ValueError, match="lacks columns"):
        toy_result.model.predict(pd.DataFrame({"body": ["x"]}))


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 5))
    truth = np.array([rng.choice(5, p=row) for row in softmax(logits / 2.0, axis=1)])
    assert fit_temperature(logits, truth) == pytest.approx(2.0, rel=0.1)


def test_thresholds_reach_the_target_on_their_data_and_are_stricter_for_a_worse_class() -> None:
    rng = np.random.default_rng(1)
    n, classes = 3000, ["a", "b", "c", OOS]
    truth = rng.integers(0, 3, size=n)
    confidence = rng.uniform(0.3, 1.0, size=n)
    chosen = np.where(rng.uniform(size=n) < confidence, truth, (truth + 1) % 3)  # calibrated by construction
    chosen[truth == 2] = 0  # class "c" is never predicted; rows of "c" are always wrong as "a"
    chosen[:200] = 3  # some rows predicted out of scope
    probabilities = np.full((n, 4), 0.0)
    probabilities[np.arange(n), chosen] = confidence
    probabilities[np.arange(n), (chosen + 1) % 4] = 1 - confidence
    thresholds = choose_thresholds(probabilities, truth, classes, target_precision=0.9, oos_label=OOS)
    assert thresholds[OOS] == 1.0
    limits = np.array([thresholds[c] for c in classes])[chosen]
    automated = (confidence >= limits) & (limits < 1.0) & (chosen != 3)
    assert automated.sum() > 100
    assert thresholds["a"] > thresholds["b"]  # "a" also collects every "c" row: it must be stricter
    assert (chosen[automated] == truth[automated]).mean() >= 0.9
    with pytest.raises(ConfigError):
        choose_thresholds(probabilities, truth, classes, target_precision=1.5)


def test_expected_calibration_error() -> None:
    confidence = np.full(1000, 0.9)
    assert expected_calibration_error(confidence, np.arange(1000) < 900) == pytest.approx(0.0)
    assert expected_calibration_error(confidence, np.arange(1000) < 600) == pytest.approx(0.3)


def test_training_refuses_labels_it_cannot_calibrate() -> None:
    frame, labels = toy_rows(per_label=3)
    with pytest.raises(ConfigError, match="fewer than 2"):
        train_model(frame.iloc[:4], [*labels[:3], "lonely"], n_jobs=None)


def test_data_hash_changes_with_a_corrected_label() -> None:
    frame, labels = toy_rows(per_label=3)
    corrected = [*labels[:-1], "billing"]
    assert data_hash(frame, labels) == data_hash(frame, list(labels))
    assert data_hash(frame, labels) != data_hash(frame, corrected)
