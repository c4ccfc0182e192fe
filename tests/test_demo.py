"""The Quick start's main job, as a new user runs it: `triage demo`, then what the three users see.

One demo workspace per module (the demo through Prefect's ephemeral API, as the README runs it);
every test reads it as a new user would, through the CLI and the web app. Nothing here depends on
the day it runs: the demo dates its sample relative to now, and CI runs this under libfaketime too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from store.db import make_engine
from store.tables import DecisionRow, Enquiry, RawRecord

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def triage_run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAGE_HOME": str(home)}
    env.pop("TRIAGE_DATABASE_URL", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def triage(home: Path, *args: str) -> Any:
    result = triage_run(home, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("demo") / "home"
    yield home, triage(home, "demo", "--json")


def scrape(home: Path) -> dict[str, Any]:
    """GET /metrics on the workspace's app, parsed with prometheus_client."""
    code = (
        "import json; from fastapi.testclient import TestClient; from app.web import create_app;"
        "r = TestClient(create_app()).get('/metrics'); print(json.dumps([r.status_code, r.text]))"
    )
    env = {**os.environ, "TRIAGE_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    env.pop("TRIAGE_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status, text = json.loads(result.stdout)
    assert status == 200, text[:2000]
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = [s for family in families.values() for s in family.samples if s.name.startswith("triage_")]
    errors = [s for s in samples if s.name == "triage_metrics_collector_errors_total" and s.value]
    assert not errors, errors  # every collector worked
    return {"families": families, "samples": samples}


def test_demo_books_balance_and_a_rerun_adds_nothing(demo: tuple[Path, dict[str, Any]]) -> None:
    home, summary = demo
    ingested = summary["ingested"]
    assert isinstance(ingested, dict) and all(ingested[c] > 0 for c in ("email", "form", "chat"))
    accounting = summary["accounting"]
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
    assert summary["audit_rows"] == summary["enquiries"]  # one pipeline decision per enquiry
    day = summary["demo_day"]
    worked = (
        day["replied_late"] + day["replied_on_time"] + day["corrected"] + day["accepted"] + day["claimed"]
    )
    assert summary["people_actions"] >= worked > 0
    assert summary["automated"] + summary["review"] == summary["enquiries"]
    # Every non-spam enquiry reached the embedded CRM exactly once.
    assert summary["crm_written"] == summary["enquiries"] - summary["spam_discarded"] - _spam_in_review(home)
    assert isinstance(summary["model_version"], str) and summary["model_version"].startswith("m-")

    again = triage(home, "run", "--json", "--direct")
    assert again["ingested"] == {"email": 0, "form": 0, "chat": 0}
    assert again["processed"] == again["crm_written"] == again["audit_rows"] == again["sla_timers"] == 0
    demo_again = triage(home, "demo", "--json", "--direct")
    assert {k: v for k, v in demo_again.items() if k != "demo_day"} == {
        k: v for k, v in summary.items() if k != "demo_day"
    }
    assert demo_again["demo_day"]["replied_late"] == 0  # the day is worked once per workspace


def test_after_the_demo_the_sla_report_tells_a_story(demo: tuple[Path, dict[str, Any]]) -> None:
    home, _ = demo
    report = triage(home, "report", "sla", "--json")  # no options: the last 7 days
    assert report["timers"] > 0
    assert report["responded"] >= 1 and report["responded_on_time"] >= 1 and report["responded_late"] >= 1
    assert 0.0 < report["breach_rate"] < 1.0
    named = {row["sdr"] for row in report["by_sdr"] if row["answered"]}
    assert {"maya", "leo"} <= named
    assert Path(report["html"]).read_text(encoding="utf-8").count("<svg") >= 2  # the charts
    text = triage_run(home, "report", "sla")
    assert text.returncode == 0 and "maya" in text.stdout and "breached" in text.stdout


def test_after_the_demo_the_queue_has_items_due_soon_and_overdue(demo: tuple[Path, dict[str, Any]]) -> None:
    home, _ = demo
    queue = triage(home, "review", "list", "--json", "--limit", "500")
    left = [entry["seconds_left"] for entry in queue["items"] if entry["seconds_left"] is not None]
    assert any(seconds < 0 for seconds in left), "nothing overdue"
    assert any(0 < seconds < 3 * 86_400 for seconds in left), "nothing due in the next days"


def test_after_the_demo_metrics_serve(demo: tuple[Path, dict[str, Any]]) -> None:
    home, _ = demo
    scraped = scrape(home)
    assert len(scraped["samples"]) >= 20
    drift = {s.labels["kind"] for s in scraped["families"]["triage_drift_psi"].samples}
    assert drift == {"predicted_class", "confidence"}


def test_only_the_demo_sample_is_dated_relative_to_now_and_the_audit_says_so(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    home, _ = demo
    engine = make_engine(f"sqlite:///{home / 'triage.db'}")
    with engine.connect() as connection:
        shifted = connection.execute(
            sa.select(RawRecord.source, sa.func.count())
            .where(RawRecord.time_shift_seconds.is_not(None))
            .group_by(RawRecord.source)
        ).all()
        sources = {source for source, _ in shifted}
        assert sources and all(source.startswith("file:") and "demo_data" in source for source in sources)
        newest = connection.scalar(sa.select(sa.func.max(Enquiry.received_at)))
        oldest = connection.scalar(sa.select(sa.func.min(Enquiry.received_at)))
        said = connection.scalar(
            sa.select(sa.func.count())
            .select_from(DecisionRow)
            .where(
                DecisionRow.kind == "triage", sa.cast(DecisionRow.reasons, sa.String).like("%demo sample%")
            )
        )
    engine.dispose()
    assert said and said > 0
    from store.common import utcnow

    now = utcnow()
    assert newest is not None and oldest is not None
    newest = newest.replace(tzinfo=now.tzinfo) if newest.tzinfo is None else newest
    oldest = oldest.replace(tzinfo=now.tzinfo) if oldest.tzinfo is None else oldest
    assert newest <= now
    assert (now - oldest).days <= 12  # the last five business days (and a weekend or holiday between)


def test_metrics_serve_after_a_promotion_and_a_rollback(
    demo: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = demo
    home = tmp_path / "home"
    shutil.copytree(source, home)
    trained = triage(
        home, "model", "train", "--data", str(ROOT / "models" / "starter_data" / "train.csv"), "--json"
    )
    version = trained["version"]
    assert triage_run(home, "model", "promote", version, "--approved-by", "Olivia Ops").returncode == 0
    promoted = scrape(home)
    # The new model has no traffic yet: no drift figure for it, and nothing fails.
    assert not [
        s for s in promoted["families"]["triage_drift_psi"].samples if s.labels["model_version"] == version
    ]
    assert len(promoted["samples"]) >= 20
    assert triage_run(home, "model", "rollback", "--actor", "Olivia Ops").returncode == 0
    rolled_back = scrape(home)
    assert {s.labels["model_version"] for s in rolled_back["families"]["triage_drift_psi"].samples} != {
        version
    }


def _spam_in_review(home: Path) -> int:
    engine = make_engine(f"sqlite:///{home / 'triage.db'}")
    with engine.connect() as connection:
        count = connection.scalar(
            sa.select(sa.func.count())
            .select_from(Enquiry)
            .where(Enquiry.intent == "spam", Enquiry.lane != "automate")
        )
    engine.dispose()
    return int(count or 0)


@pytest.mark.filterwarnings("ignore")
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


def test_erasing_one_demo_sender_leaves_no_trace_in_the_dump(
    demo: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The issue's check: `sqlite3 triage.db .dump` holds neither the address nor the name afterwards."""
    import sqlite3

    home = tmp_path / "home"
    shutil.copytree(demo[0], home)  # the other tests keep the demo as it was
    address, name = "kaito.morris@peregrell-labs.ca", "kaito morris"

    def dumped() -> str:
        connection = sqlite3.connect(home / "triage.db")
        try:
            text = "\n".join(connection.iterdump()).lower()
            blobs = [
                bytes(b).decode("utf-8", "replace").lower()
                for (b,) in connection.execute("SELECT payload FROM raw_records")
            ]
        finally:
            connection.close()
        return text + "\n".join(blobs)

    assert address in dumped() and name in dumped()
    result = triage(home, "erase", "--email", address, "--requested-by", "dpo", "--json")
    assert result["found"] and result["counts"]["enquiries"] == 2
    text = dumped()
    assert address not in text and name not in text and address.encode().hex() not in text
    engine = make_engine(f"sqlite:///{home / 'triage.db'}")
    with engine.connect() as connection:
        tombstone = connection.execute(
            sa.text("SELECT requested_by, subject_hmac, counts FROM erasures")
        ).one()
    engine.dispose()
    assert tombstone[0] == "dpo" and tombstone[1] == result["subject_hmac"]


def test_demo_leads_get_owners_and_the_report_names_them(demo: tuple[Path, dict[str, Any]]) -> None:
    """Issue 12: the demo's SDRs and accounts exist before intake, so what goes to people is routed."""
    home, _ = demo
    listing = triage(home, "review", "list", "--json", "--limit", "500")
    assert listing["items"] and all(item["owner"] in {"maya", "leo"} for item in listing["items"])
    assert any(item["customer"] and item["account"] for item in listing["items"]) or listing["total"] < 5
    report = triage(home, "report", "sla", "--json")
    names = {row["sdr"] for row in report["by_sdr"]}
    assert {"maya", "leo"} <= names and "(unassigned)" not in names
    users = {user["name"]: user for user in triage(home, "users", "list", "--json")}
    assert users["maya"]["open_items"] + users["leo"]["open_items"] > 0
