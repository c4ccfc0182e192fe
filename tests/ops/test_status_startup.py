"""`triage status` starts lean: the database and its queries, not the runtime (issue 15).

The command must answer in under a second at 1M enquiries; its queries take ~100 ms, so what is left
is start-up. These tests run the real command in a fresh interpreter and check which libraries it
loaded: Prefect, scikit-learn and FastAPI each cost hundreds of milliseconds and status needs none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "sklearn", "fastapi", "starlette", "uvicorn", "httpx", "numpy", "scipy", "skops")
# Runs the console entry point with the given arguments, then reports on stderr which of HEAVY (and,
# as a control, sqlalchemy) were imported; the command's own output stays on stdout.
WRAPPER = (
    "import atexit, json, sys\n"
    f"heavy = {HEAVY!r} + ('sqlalchemy',)\n"
    "atexit.register(lambda: sys.stderr.write('LOADED ' + json.dumps("
    "[name for name in heavy if name in sys.modules]) + '\\n'))\n"
    "sys.argv = ['triage', *sys.argv[1:]]\n"
    "from app.cli import main\n"
    "main()\n"
)


def _triage(home: Path, db_url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    environment = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": db_url}
    environment.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr
    return done, json.loads(marker[-1].removeprefix("LOADED "))


def test_status_imports_no_prefect_sklearn_or_fastapi(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done, loaded = _triage(home, db_url, "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["pending_records"] == 0
    assert data["active_model"] is None
    assert data["automation_paused"] is False
    assert "sqlalchemy" in loaded  # the wrapper sees imports: it queried the database
    assert [name for name in loaded if name != "sqlalchemy"] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_help_still_lists_every_command_group(db_url: str, tmp_path: Path) -> None:
    done, loaded = _triage(tmp_path / "home", db_url, "--help")
    assert done.returncode == 0, done.stderr
    for name in ("status", "run", "serve", "import", "demo", "erase", "model", "crm", "sla", "report",
                 "review", "users", "policy", "taxonomy", "audit", "flows", "db", "automation"):  # fmt: skip
        assert f" {name} " in done.stdout, name
    assert [name for name in loaded if name != "sqlalchemy"] == []
