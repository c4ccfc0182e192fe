"""`triage db size`, `triage db prune` and `triage erase` through the real CLI, on both databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TRIAGE_DATABASE_URL": db_url,
        "TRIAGE_HOME": str(tmp_path),
        "TRIAGE_PSEUDONYMISATION_KEY": "a-test-key",
    }


def run(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.output


def test_size_prune_and_erase_answer_for_scripts_and_people(env: dict[str, str]) -> None:
    size = run(env, "db", "size", "--json")
    assert {"raw_records", "enquiries", "crm_outbox"} <= {t["table"] for t in size["tables"]}
    assert set(size["policy_would_free"]) == {"outbox_payloads", "raw_bodies", "enquiry_bodies"}
    assert "retention would empty" in run(env, "db", "size")

    dry = run(env, "db", "prune", "--dry-run", "--json")
    assert dry["dry_run"] is True and dry["raw_bodies"]["rows"] == 0
    assert "would prune" in run(env, "db", "prune", "--dry-run")

    nobody = run(env, "erase", "--email", "nobody@nowhere.example", "--requested-by", "dpo", "--json")
    assert nobody["found"] is False and nobody["tombstone_id"] is not None
    assert "nothing held for that address" in run(
        env, "erase", "--email", "nobody@nowhere.example", "--requested-by", "dpo", "--dry-run"
    )


def test_erase_list_shows_each_tombstone_without_the_address(env: dict[str, str]) -> None:
    assert run(env, "erase", "--list", "--json") == {"tombstones": []}
    assert "no erasure has been made" in run(env, "erase", "--list")
    address = "Nobody@Nowhere.example"
    run(env, "erase", "--email", address, "--requested-by", "dpo", "--dry-run", "--json")  # no tombstone
    first = run(env, "erase", "--email", address, "--requested-by", "dpo", "--json")
    second = run(env, "erase", "--email", "other@nowhere.example", "--requested-by", "legal", "--json")

    listed = run(env, "erase", "--list", "--json")["tombstones"]
    assert [t["id"] for t in listed] == [second["tombstone_id"], first["tombstone_id"]]
    assert [t["requested_by"] for t in listed] == ["legal", "dpo"]
    assert listed[1]["subject_hmac"] == first["subject_hmac"] and listed[1]["rows_erased"] == 0
    assert all(t["requested_at"] and t["completed_at"] for t in listed)
    assert "nowhere.example" not in json.dumps(listed).lower()
    assert len(run(env, "erase", "--list", "--limit", "1", "--json")["tombstones"]) == 1
    text = run(env, "erase", "--list")
    assert "legal" in text and "dpo" in text and "nowhere" not in text.lower()

    refused = runner.invoke(app, ["erase", "--requested-by", "dpo"], env=env)
    assert refused.exit_code != 0 and "--email" in refused.output


def test_db_recount_reports_each_family(env: dict[str, str]) -> None:
    data = run(env, "db", "recount", "--json")
    assert set(data["families"]) == {
        "raw_records", "enquiries", "confidence", "review_items", "sla_timers", "crm_outbox",
        "drift_intents", "drift_confidence", "reply_outbox", "first_touches", "review_owners",
        "intake_runs", "stage_seconds",
    }  # fmt: skip
    assert not any(data["changed"].values())
