"""The scorer: scoring arrays that load without scikit-learn and predict exactly what the model predicts."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sqlalchemy.orm import Session

from models import registry
from models.artifact import ModelArtifact, find_artifact
from models.classifier import frame_from_texts
from models.errors import FatalError
from models.scoring import Scorer, Tokeniser, load_scorer
from models.training import TrainResult
from tests.models.conftest import Banking77

STARTER = Path(__file__).resolve().parents[2] / "models" / "starter_data" / "train.csv"
AWKWARD = [
    "",
    "a",
    "I",
    "ok",
    "  leading and   trailing\twhite\n\nspace  ",
    "Grüße aus Köln — Straße, façade, ÆØÅ",
    "emoji 🚀🚀 and CJK 你好世界 and Ünïcödé",
    "x-y_z 3.14 re: fw: [ticket #123] e-mail@example.com",
    "ALL CAPS SHOUTING!!! and MiXeD",
    "one two",
]


def _texts() -> list[str]:
    with STARTER.open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)] + AWKWARD


@pytest.mark.parametrize(
    ("analyzer", "ngram_range", "token_pattern"),
    [
        ("word", (1, 2), r"(?u)\b\w+\b"),
        ("word", (1, 1), r"(?u)\b\w\w+\b"),
        ("word", (2, 3), r"(?u)\b\w\w+\b"),
        ("char_wb", (3, 5), r"(?u)\b\w\w+\b"),
        ("char_wb", (1, 2), r"(?u)\b\w\w+\b"),
    ],
)
def test_tokeniser_cuts_the_terms_scikit_learn_cuts(
    analyzer: str, ngram_range: tuple[int, int], token_pattern: str
) -> None:
    vectoriser = TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, token_pattern=token_pattern)
    reference = vectoriser.build_analyzer()
    ours = Tokeniser.from_vectoriser(vectoriser)
    for text in _texts():
        assert ours.terms(text) == reference(text), text


@pytest.mark.parametrize(
    "settings",
    [{"analyzer": "char"}, {"stop_words": "english"}, {"strip_accents": "unicode"}, {"binary": True}],
)
def test_settings_the_scorer_cannot_reproduce_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="cannot reproduce"):
        Tokeniser.from_vectoriser(TfidfVectorizer(**settings))  # type: ignore[arg-type]


def test_a_saved_scorer_predicts_what_the_model_predicts(tmp_path: Path, toy_result: TrainResult) -> None:
    model = toy_result.model
    frame = frame_from_texts(
        [*AWKWARD, "we were charged twice", "the dashboard will not load"],
        channels=["email", "chat", "form", "weird"] * 3,
        free_mail=[True, False] * 6,
        segments=["smb", "enterprise", "unknown"] * 4,
    )
    sha256 = model.scorer.save(tmp_path / "scorer.npz")
    loaded = load_scorer(
        tmp_path / "scorer.npz", sha256=sha256, version=model.version, novelty_floor=model.novelty_floor
    )
    columns = {name: frame[name].tolist() for name in frame.columns}
    assert loaded.predict(columns) == model.predict(frame)
    assert np.array_equal(loaded.features(columns).toarray(), model.features(frame).toarray())


def test_a_changed_scorer_file_is_refused(tmp_path: Path, toy_result: TrainResult) -> None:
    path = tmp_path / "scorer.npz"
    sha256 = toy_result.model.scorer.save(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(FatalError, match="SHA-256"):
        load_scorer(path, sha256=sha256, version="m-x", novelty_floor=0.1)


def _registered(session: Session, home: Path, result: TrainResult) -> ModelArtifact:
    version = registry.register_candidate(session, home, result, trained_by="tester", data_description="toy")
    session.commit()
    return find_artifact(session, home, version)


def test_the_registry_saves_a_scorer_and_the_pipeline_loads_it_without_scikit_learn(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    artifact = _registered(session, tmp_path, toy_result)
    version = artifact.version
    scorer = artifact.load_scorer()
    assert isinstance(scorer, Scorer) and scorer.version == version
    assert artifact.provenance["scorer_sha256"] and (artifact.path.parent / "scorer.npz").exists()
    probe = frame_from_texts(["please refund the duplicate charge", "recipe for banana bread"])
    assert scorer.predict({name: probe[name].tolist() for name in probe.columns}) == toy_result.model.predict(
        probe
    )

    # A process that loads the scorer and predicts never imports scikit-learn, skops or pandas.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from models.artifact import ModelArtifact\n"
        f"artifact = ModelArtifact({version!r}, Path({str(artifact.path)!r}), {artifact.provenance!r})\n"
        "columns = {'subject': ['Invoice'], 'body': ['we were charged twice'], 'channel': ['email'],"
        " 'free_mail': [False], 'segment': ['smb']}\n"
        "print(artifact.load_scorer().predict(columns)[0].intent)\n"
        "print(sorted(m for m in ('sklearn', 'skops', 'pandas') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert output == [
        toy_result.model.predict(frame_from_texts(["we were charged twice"], subjects=["Invoice"]))[0].intent,
        "[]",
    ]


def test_an_artifact_registered_before_scorers_loads_the_whole_model(
    session: Session, tmp_path: Path, toy_result: TrainResult
) -> None:
    artifact = _registered(session, tmp_path, toy_result)
    version = artifact.version
    for key in ("scorer_file", "scorer_sha256"):
        del artifact.provenance[key]
    model = artifact.load_scorer()
    assert not isinstance(model, Scorer) and model.version == version


def test_banking77_features_match_the_pipeline(banking77: Banking77) -> None:
    """Real text at scale: every feature of every BANKING77 test row equals scikit-learn's."""
    model, frame = banking77.result.model, banking77.test_frame
    reference = model.pipeline.named_steps["features"].transform(frame)
    ours = model.features(frame)
    assert ours.shape == reference.shape
    assert abs(ours - reference).max() < 1e-6
