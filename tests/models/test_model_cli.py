"""`triage model` end to end on the embedded database: train, evaluate, list, show, shadow, promote,
rollback, compare; and that it never imports Prefect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from app.commands.model import model_app
from tests.models.conftest import OOS, toy_rows, write_csv

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(model_app, list(args))
    return result.exit_code, result.output


def _json(*args: str) -> dict:  # type: ignore[type-arg]
    code, output = _run(*args, "--json")
    assert code == 0, output
    return json.loads(output)


def test_model_commands_end_to_end(triage_home: Path, tmp_path: Path) -> None:
    frame, labels = toy_rows(per_label=12)
    data = write_csv(tmp_path / "train.csv", frame, labels)
    jsonl = tmp_path / "train.jsonl"
    pd.DataFrame({"message": frame["body"], "intent": labels}).to_json(jsonl, orient="records", lines=True)

    first = _json(
        "train",
        "--data",
        str(data),
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--oos-label",
        OOS,
        "--jobs",
        "1",
    )
    assert first["status"] == "candidate" and first["n_rows"] == len(labels)
    second = _json(
        "train",
        "--data",
        str(jsonl),
        "--text-col",
        "message",
        "--label-col",
        "intent",
        "--seed",
        "1",
        "--jobs",
        "1",
    )
    metrics = _json(
        "evaluate",
        "--data",
        str(data),
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--oos-label",
        OOS,
        "--version",
        first["version"],
    )
    for key in ("n", "accuracy", "macro_f1", "coverage", "automated_precision", "oos_recall", "ece"):
        assert key in metrics
    assert metrics["n"] == len(labels) and metrics["oos_recall"] == 1.0
    newest = _json("evaluate", "--data", str(data), "--text-col", "text", "--label-col", "label")
    assert newest["model_version"] == second["version"]  # no --version: the newest candidate

    code, output = _run("promote", first["version"])
    assert code == 2 and "approved-by" in output
    code, output = _run("promote", first["version"], "--approved-by", "  ")
    assert code == 2
    assert _json("promote", first["version"], "--approved-by", "Olga Ops")["previous_active"] is None
    assert _json("shadow", second["version"])["active"] == first["version"]
    comparison = _json("compare")
    assert comparison["active"] == first["version"] and comparison["n_compared"] == 0
    # The second model was trained without --oos-label: its "not_ours" is a label the taxonomy lacks.
    code, output = _run("promote", second["version"], "--approved-by", "Olga Ops")
    assert code == 2 and OOS in output and "--allow-unmapped" in output
    promoted = _json("promote", second["version"], "--approved-by", "Olga Ops", "--allow-unmapped")
    assert promoted["previous_active"] == first["version"] and promoted["unmapped_labels"] == [OOS]
    rolled = _json("rollback", "--actor", "olga")
    assert rolled == {"active": first["version"], "retired": second["version"]}
    code, output = _run("rollback")
    assert code == 2 and "no previous active" in output

    listing = _json("list")["versions"]
    assert {row["version"]: row["status"] for row in listing} == {
        first["version"]: "active",
        second["version"]: "retired",
    }
    shown = _json("show", first["version"])
    assert shown["approved_by"] == "Olga Ops"
    assert shown["provenance"]["data_hash"] == first["data_hash"]
    assert [event["action"] for event in shown["events"]] == ["register", "promote", "rollback"]

    code, output = _run("evaluate", "--data", str(data), "--text-col", "nope", "--label-col", "label")
    assert code == 2 and "no column" in output


def test_model_cli_does_not_import_prefect() -> None:
    code = "import sys, app.commands.model; print('prefect' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
