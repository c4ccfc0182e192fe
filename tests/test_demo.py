"""The Quick start's main job, as a new user runs it: `triage demo`, then `triage run` adds nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def triage(home: Path, *args: str) -> dict[str, object]:
    env = {**os.environ, "TRIAGE_HOME": str(home)}
    env.pop("TRIAGE_DATABASE_URL", None)
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.slow
def test_demo_then_run_adds_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    summary = triage(home, "demo", "--json")  # through Prefect's ephemeral API, as the README runs it

    ingested = summary["ingested"]
    assert isinstance(ingested, dict) and all(ingested[c] > 0 for c in ("email", "form", "chat"))
    accounting = summary["accounting"]
    assert isinstance(accounting, dict)
    assert accounting["records_balance"] and accounting["enquiries_balance"]
    assert accounting["records"] == sum(ingested.values())
    # The books: CRM writes by the automated lane + review + quarantine (+ the named rest)
    # account for every record that is not a duplicate.
    books = accounting["non_duplicate_by_outcome"]
    assert accounting["non_duplicate_balance"]
    assert accounting["non_duplicate_records"] == accounting["records"] - summary["duplicates"]
    assert sum(books.values()) == accounting["non_duplicate_records"]
    assert books["crm_written_automated"] + books["spam_discarded"] == summary["automated"]
    assert (books["review"], books["quarantined"]) == (summary["review"], summary["quarantined"])
    assert summary["pending"] == 0
    assert summary["duplicates"] >= 7 and summary["threaded"] >= 3 and summary["skipped"] == 2
    assert summary["quarantined"] >= 4
    assert summary["audit_rows"] == summary["enquiries"]  # one audit row per decision made
    assert summary["automated"] + summary["review"] == summary["enquiries"]
    # Every non-spam enquiry reached the embedded CRM exactly once.
    assert summary["crm_written"] == summary["enquiries"] - summary["spam_discarded"] - _spam_in_review(home)
    assert isinstance(summary["model_version"], str) and summary["model_version"].startswith("m-")

    again = triage(home, "run", "--json", "--direct")
    assert again["ingested"] == {"email": 0, "form": 0, "chat": 0}
    assert again["processed"] == again["crm_written"] == again["audit_rows"] == again["sla_timers"] == 0
    demo_again = triage(home, "demo", "--json", "--direct")
    assert {k: v for k, v in demo_again.items()} == summary


def _spam_in_review(home: Path) -> int:
    import sqlalchemy as sa

    from store.db import make_engine
    from store.tables import Enquiry

    engine = make_engine(f"sqlite:///{home / 'triage.db'}")
    with engine.connect() as connection:
        count = connection.scalar(
            sa.select(sa.func.count())
            .select_from(Enquiry)
            .where(Enquiry.intent == "spam", Enquiry.lane != "automate")
        )
    engine.dispose()
    return int(count or 0)


def test_the_summary_table_ends_with_the_books(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import print_summary

    books = {"crm_written_automated": 6, "review": 3, "quarantined": 1}
    accounting = {
        "non_duplicate_records": 10,
        "non_duplicate_by_outcome": books,
        "non_duplicate_balance": True,
    }
    print_summary({"enquiries": 9, "accounting": accounting}, "title")
    printed = " ".join(capsys.readouterr().out.split())
    assert "enquiries │ 9" in printed and "non_duplicate" not in printed
    assert (
        "Books: 10 records that are not duplicates = 6 crm written automated + 3 review + 1 quarantined"
        in printed
    )
    assert printed.endswith("(balanced)")
