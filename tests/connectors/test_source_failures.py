"""A source that fails is seen: the run fails naming it, `triage status` and /metrics show its error.

Real Dovecot, the CLI as an operator runs it, and the Prefect flow's final state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.web import create_app
from config.settings import Settings
from tests.builders import email_bytes
from tests.support.dovecot import DovecotServer, append_messages

ROOT = Path(__file__).resolve().parents[2]


def mailboxes(dovecot: DovecotServer, folder: str, *, bad_password: bool) -> str:
    good = {
        "name": "sales",
        "host": dovecot.host,
        "port": dovecot.port,
        "ssl": False,
        "username": dovecot.user,
        "password": dovecot.password,
        "folder": folder,
        "timeout_seconds": 10,
    }
    wrong = {**good, "name": "support", "password": "not-the-password" if bad_password else dovecot.password}
    return json.dumps([good, wrong])


def triage(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TRIAGE_HOME": str(home), **env}
    environment.pop("TRIAGE_DATABASE_URL", None)
    environment.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def status(home: Path, env: dict[str, str]) -> dict[str, Any]:
    result = triage(home, env, "status", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return {line["source"]: line for line in data["sources"]}


@pytest.mark.slow
def test_a_mailbox_that_refuses_the_login_fails_the_run_and_is_shown(
    dovecot: DovecotServer, imap_folder: str, tmp_path: Path
) -> None:
    append_messages(dovecot, imap_folder, [email_bytes(message_id="<fine@x>")])
    home = tmp_path / "home"
    env = {
        "TRIAGE_MAILBOXES": mailboxes(dovecot, imap_folder, bad_password=True),
        "TRIAGE_PARSE_WORKERS": "1",
    }

    direct = triage(home, env, "run", "--json", "--direct")
    assert direct.returncode == 1, direct.stderr[-2000:]
    summary = json.loads(direct.stdout)
    assert summary["ingested"]["email"] == 1 and summary["enquiries"] == 1  # the good mailbox was read
    assert list(summary["source_errors"]) == ["imap:support"]
    assert "not-the-password" not in direct.stdout + direct.stderr  # the secret is never shown
    assert "imap:support" in direct.stderr

    # Through the Prefect flow, as `triage run` runs it: the same exit and summary.
    flowed = triage(home, env, "run", "--json")
    assert flowed.returncode == 1, flowed.stderr[-3000:]
    assert list(json.loads(flowed.stdout)["source_errors"]) == ["imap:support"]
    assert "source imap:support could not be read" in flowed.stderr

    lines = status(home, env)
    bad, good = lines["imap:support"], lines["imap:sales"]
    assert bad["ok"] is False and bad["consecutive_errors"] == 2 and bad["last_success_at"] is None
    assert "support" in bad["last_error"] and "login" in bad["last_error"].lower()
    assert good["ok"] is True and good["last_error"] is None and good["last_success_at"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRIAGE_HOME", str(home))
        patch.delenv("TRIAGE_DATABASE_URL", raising=False)
        with TestClient(create_app(Settings())) as client:
            text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    errors = {s.labels["source"]: s.value for s in families["triage_source_errors"].samples}
    assert errors == {"imap:support": 2.0, "imap:sales": 0.0}
    success = {s.labels["source"] for s in families["triage_source_last_success_timestamp_seconds"].samples}
    assert success == {"imap:sales"}

    # Fixed: the next run succeeds and the status clears, keeping the count of past failures.
    fixed = {**env, "TRIAGE_MAILBOXES": mailboxes(dovecot, imap_folder, bad_password=False)}
    again = triage(home, fixed, "run", "--json", "--direct")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["source_errors"] == {}
    healed = status(home, fixed)["imap:support"]
    assert healed["ok"] is True and healed["consecutive_errors"] == 0 and healed["errors_total"] == 2


def test_a_broken_policy_file_fails_the_run(tmp_path: Path) -> None:
    import shutil

    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "config" / "defaults", policy)
    with (policy / "sla.yaml").open("a", encoding="utf-8") as handle:
        handle.write("\n  nonsense: [unclosed\n")
    result = triage(tmp_path / "home", {"TRIAGE_POLICY_DIR": str(policy)}, "run", "--json", "--direct")
    assert result.returncode == 2
    assert "sla.yaml" in result.stderr and "configuration error" in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_the_intake_flow_run_ends_failed_naming_the_source(
    dovecot: DovecotServer, imap_folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.intake import intake_flow

    append_messages(dovecot, imap_folder, [email_bytes(message_id="<in-flow@x>")])
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRIAGE_DATABASE_URL", raising=False)
    monkeypatch.setenv("TRIAGE_MAILBOXES", mailboxes(dovecot, imap_folder, bad_password=True))
    monkeypatch.setenv("TRIAGE_PARSE_WORKERS", "1")
    state = intake_flow(return_state=True)
    assert state.is_failed()
    assert state.message and "imap:support" in state.message and "imap:sales" not in state.message
    summary = state.result(raise_on_failure=False)
    assert summary["enquiries"] == 1 and list(summary["source_errors"]) == ["imap:support"]
