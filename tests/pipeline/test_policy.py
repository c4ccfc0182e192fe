"""Policy files: the shipped defaults load; mistakes name the file, the field and the line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.policy import load_policy, score_matrix
from config.settings import DEFAULT_POLICY_DIR
from models.errors import ConfigError
from models.records import Lane


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    return target


def test_defaults_load_and_version_tracks_content(policy_dir: Path) -> None:
    policy = load_policy(policy_dir)
    assert set(policy.intents) == {
        "sales_demo",
        "pricing",
        "support",
        "billing",
        "partnership",
        "careers",
        "press",
        "spam",
        "other",
    }
    assert policy.matrix.tasks["create_or_update_lead"].lane is Lane.AUTOMATE
    assert policy.matrix.tasks["model_promotion"].lane is Lane.HUMAN_ONLY
    path = policy_dir / "lanes.yaml"
    path.write_text(path.read_text().replace("50000", "75000"))
    assert load_policy(policy_dir).version != policy.version


def test_error_names_file_field_and_line(policy_dir: Path) -> None:
    path = policy_dir / "taxonomy.yaml"
    path.write_text(path.read_text().replace("    priority: high\n", "    priority: sky-high\n", 1))
    with pytest.raises(ConfigError) as error:
        load_policy(policy_dir)
    message = str(error.value)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "sky-high" in text)
    assert f"taxonomy.yaml:{line}" in message
    assert "intents.sales_demo.priority" in message


def test_unknown_task_is_refused(policy_dir: Path) -> None:
    path = policy_dir / "taxonomy.yaml"
    path.write_text(path.read_text().replace("task: spam_discard", "task: spam_burn"))
    with pytest.raises(ConfigError, match=r"intents\.spam\.task names 'spam_burn'"):
        load_policy(policy_dir)


def test_matrix_scores_must_fit(policy_dir: Path) -> None:
    path = policy_dir / "decision_matrix.yaml"
    path.write_text(path.read_text().replace("context_depth: 4}", "context_depth: 9}", 1))
    with pytest.raises(ConfigError, match=r"decision_matrix\.yaml"):
        load_policy(policy_dir)


@pytest.mark.parametrize(
    ("matrix", "scores", "expected"),
    [
        ("marketing4", [5, 4, 4, 4], (17, "automate")),  # inbound email triage
        ("marketing4", [4, 3, 3, 4], (14, "hybrid")),  # initial lead scoring
        ("marketing4", [1, 1, 5, 1], (8, "human_only")),  # brand positioning
        ("risk6", [2, 1, 1, 4, 1, 5], (14, "human_in_loop")),  # daily bid optimisation
        ("risk6", [5, 4, 4, 3, 4, 2], (22, "block")),  # automated model promotion
        ("risk6", [2, 2, 2, 2, 2, 2], (12, "delegate")),
    ],
)
def test_worked_examples(matrix: str, scores: list[int], expected: tuple[int, str]) -> None:
    assert score_matrix(matrix, scores) == expected


@pytest.mark.parametrize(
    ("scores", "message"), [([5, 4, 4], "needs 4 scores"), ([6, 4, 4, 4], "between 1 and 5")]
)
def test_bad_scores_are_refused(scores: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        score_matrix("marketing4", scores)
