"""Done-when of issue 16, end to end through the CLI: a folder of bombs plus one normal mail, imported
and run once, leaves every bomb quarantined with a reason, the mail an enquiry, nothing pending."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from store.db import make_engine
from store.tables import Enquiry, RawRecord
from tests.builders import email_bytes
from tests.support.bombs import bomb_corpus, write_bomb_folders

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def triage(home: Path, *args: str) -> Any:
    env = {**os.environ, "TRIAGE_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    env.pop("TRIAGE_DATABASE_URL", None)
    env.pop("PREFECT_API_URL", None)
    # A generous timeout: it proves the run finished (it once hung for 300 s); speed lives in bench/.
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_bombs_plus_one_mail_run_once_quarantine_every_bomb_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    bombs = bomb_corpus()
    mail, forms = write_bomb_folders(tmp_path / "in", bombs)
    (mail / "normal.eml").write_bytes(email_bytes(message_id="<normal@example.com>"))
    home = tmp_path / "home"
    assert triage(home, "import", str(mail), "--channel", "email", "--json")["stored"] == 9
    assert triage(home, "import", str(forms), "--channel", "form", "--json")["stored"] == 3

    first = triage(home, "run", "--json")
    assert first["enquiries"] == 1 and first["quarantined"] == len(bombs)

    listed = triage(home, "quarantine", "list", "--json")
    reasons = [item["reason"] for item in listed]
    assert len(reasons) == len(bombs) and all(reasons)
    for bomb in bombs:  # each bomb was caught by the limit meant for it
        assert any(bomb.reason_hint in reason.lower() for reason in reasons), (bomb.name, reasons)

    engine = make_engine(f"sqlite:///{home / 'triage.db'}")
    with engine.connect() as connection:
        statuses = [row[0] for row in connection.execute(sa.select(RawRecord.status))]
        enquiries = connection.execute(sa.select(Enquiry.message_key)).scalars().all()
    engine.dispose()
    assert "pending" not in statuses and len(statuses) == len(bombs) + 1
    assert enquiries == ["normal@example.com"]

    second = triage(home, "run", "--json")
    assert second["processed"] == 0 and second["enquiries"] == 0 and second["quarantined"] == 0
