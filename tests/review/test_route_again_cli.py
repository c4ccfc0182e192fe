"""`triage review route-again` (issue 12): items of an away, gone or over-capacity owner move by the
routing policy (round robin here, capacity respected), each move audited; a dry run changes nothing.

Through the CLI on both databases; the items come from a real pipeline run (the keyword model)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app
from config.settings import DEFAULT_POLICY_DIR, Settings
from models.records import Channel
from pipeline.process import process_pending
from pipeline.runtime import Runtime
from store.tables import DecisionRow, ReviewItem
from tests.builders import T0, form_json
from tests.review.review_builders import PASSWORD
from tests.support.pipeline_support import KeywordModel, store

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store, and the bundled policy with the sales team on round robin."""
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    policy = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, policy)
    routing = policy / "routing.yaml"
    text = routing.read_text(encoding="utf-8")
    assert "  sales:\n    strategy: least_loaded\n" in text
    routing.write_text(
        text.replace("  sales:\n    strategy: least_loaded\n", "  sales:\n    strategy: round_robin\n")
    )
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(policy))
    return db_url


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def route_again(*args: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(cli("review", "route-again", "--user", "olga", "--json", *args))
    return answer


def run_pipeline(session_factory: sessionmaker[Session], count: int, source: str) -> None:
    forms = [
        form_json(
            submission_id=f"{source}-{n}",
            email=f"person{n}@{source}.example",
            subject=f"Pricing question {n}",
            message="What would the Growth plan cost for our team? Maybe we need more seats.",
        )
        for n in range(count)
    ]
    store(session_factory, Channel.FORM, forms, source=source)
    runtime = Runtime(Settings(), clock=lambda: T0)
    process_pending(runtime.factory, dataclasses.replace(runtime.pipeline_context(), model=KeywordModel()))
    runtime.engine.dispose()


def owners(session_factory: sessionmaker[Session]) -> dict[int, str | None]:
    with session_factory() as session:
        return dict(session.execute(sa.select(ReviewItem.id, ReviewItem.owner).order_by(ReviewItem.id)).all())


def reroute_rows(session_factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with session_factory() as session:
        rows = session.scalars(
            sa.select(DecisionRow).where(DecisionRow.task == "reroute").order_by(DecisionRow.id)
        )
        return [(row.actor, row.reasons[0]) for row in rows]


@pytest.fixture
def six_items(cli_env: str, session_factory: sessionmaker[Session]) -> dict[int, str | None]:
    cli("users", "add", "olga", "--role", "ops_lead", "--password", PASSWORD)
    for name in ("ana", "ben", "cy"):
        cli("users", "add", name, "--role", "sdr", "--password", PASSWORD, "--teams", "sales")
    run_pipeline(session_factory, 6, "first")
    routed = owners(session_factory)
    assert list(routed.values()) == ["ana", "ben", "cy", "ana", "ben", "cy"]  # the rotation
    return routed


def test_an_away_owners_items_move_in_the_rotation_and_each_move_is_audited(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    ids = list(six_items)
    cli("users", "set", "ana", "--away")

    preview = route_again("--dry-run")
    assert preview["dry_run"] is True
    planned = [(m["item_id"], m["from"], m["to"], m["why"]) for m in preview["moved"]]
    # The cursor stood on cy: the rotation goes on at ana (away, skipped), ben, then cy.
    assert planned == [(ids[0], "ana", "ben", "ana is away"), (ids[3], "ana", "cy", "ana is away")]
    assert owners(session_factory) == six_items and reroute_rows(session_factory) == []  # nothing kept

    done = route_again()
    assert [(m["item_id"], m["to"]) for m in done["moved"]] == [(ids[0], "ben"), (ids[3], "cy")]
    assert done["kept"] == 4
    assert list(owners(session_factory).values()) == ["ben", "ben", "cy", "cy", "ben", "cy"]
    audit = reroute_rows(session_factory)
    assert [actor for actor, _ in audit] == ["olga", "olga"]
    assert audit[0][1].startswith(
        "routed again by olga: ana -> ben because ana is away; assigned to ben: team sales"
    )
    assert "round robin" in audit[0][1]

    again = route_again()
    assert again["moved"] == [] and again["kept"] == 6  # nothing left to move
    assert len(reroute_rows(session_factory)) == 2


def test_a_lowered_capacity_moves_the_newest_items_above_it(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    ids = list(six_items)
    cli("users", "set", "cy", "--capacity", "1")
    cli("users", "set", "ana", "--capacity", "2")  # ana is full at 2: only ben can take more
    moved = route_again("--owner", "cy")["moved"]
    assert [(m["item_id"], m["from"], m["to"], m["why"]) for m in moved] == [
        (ids[5], "cy", "ben", "cy is over capacity (2/1 open)"),
    ]
    assert owners(session_factory)[ids[2]] == "cy"  # her oldest stays
    users = {u["name"]: u["open_items"] for u in json.loads(cli("users", "list", "--json"))}
    assert users == {"olga": 0, "ana": 2, "ben": 3, "cy": 1}


def test_unassigned_items_find_an_owner_once_someone_is_back(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    for name in ("ana", "ben", "cy"):
        cli("users", "set", name, "--away")
    run_pipeline(session_factory, 2, "later")
    waiting = [item_id for item_id, owner in owners(session_factory).items() if owner is None]
    assert len(waiting) == 2

    def held() -> set[tuple[int, str | None, str | None, object]]:
        with session_factory() as session:
            rows = session.scalars(sa.select(ReviewItem).where(ReviewItem.id.in_(waiting)))
            return {(i.id, i.owner, i.team, i.assigned_at) for i in rows}

    before = held()
    assert {(owner, team) for _, owner, team, _ in before} == {(None, "overflow")}
    still = route_again("--unassigned", "--now", "2026-11-25T09:00:00Z")
    assert still["moved"] == [] and len(still["unchanged"]) == 2
    assert reroute_rows(session_factory) == [] and held() == before  # nothing changed, nothing audited
    cli("users", "set", "ben", "--back")
    moved = route_again("--unassigned", "--team", "overflow")["moved"]
    assert [(m["item_id"], m["from"], m["to"]) for m in moved] == [(i, None, "ben") for i in waiting]
    # --unassigned left the away owners' items alone.
    assert [owners(session_factory)[i] for i in list(six_items)] == ["ana", "ben", "cy", "ana", "ben", "cy"]


def test_a_team_filter_and_the_text_output(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    cli("users", "set", "ben", "--away")
    assert route_again("--team", "support")["moved"] == []  # no support items
    text = cli("review", "route-again", "--user", "olga", "--team", "sales")
    assert "moved 2 item(s); 4 kept their owner" in text and "ben is away" in text
    assert "ben" not in owners(session_factory).values()


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--user", "ana"], 1, "routing again is for an ops lead or admin"),
        (["--user", "nobody"], 1, "no active user named 'nobody'"),
        (["--user", "olga", "--unassigned", "--owner", "ana"], 2, "exclude each other"),
        (["--user", "olga", "--team", "nowhere"], 2, "team must be one of"),
        (["--user", "olga", "--now", "yesterday"], 2, "not an ISO 8601 date-time"),
    ],
)
def test_refusals(six_items: dict[int, str | None], args: list[str], code: int, says: str) -> None:
    result = runner.invoke(app, ["review", "route-again", "--json", *args])
    assert result.exit_code == code, result.output
    assert says in json.loads(result.output)["error"]


def test_a_disabled_owners_items_move_but_one_claimed_by_a_colleague_stays(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    ids = list(six_items)
    cli("review", "claim", str(ids[0]), "--user", "ben")  # ben works on one of ana's items
    cli("users", "disable", "ana")
    result = route_again()
    assert [(m["item_id"], m["from"], m["why"]) for m in result["moved"]] == [
        (ids[3], "ana", "ana is not an active user")
    ]
    assert result["skipped"] == [{"item_id": ids[0], "why": "claimed by ben, who is working on it"}]
    with session_factory() as session:
        kept = session.get(ReviewItem, ids[0])
        assert kept is not None and (kept.owner, kept.claimed_by, kept.status) == ("ana", "ben", "claimed")


def test_moves_respect_working_hours_at_the_given_instant(
    six_items: dict[int, str | None], session_factory: sessionmaker[Session]
) -> None:
    ids = list(six_items)
    # ben works Berlin mornings, cy Tokyo hours; at 08:00 UTC on a Wednesday ben (09:00) is working and
    # cy (17:00) has just stopped, so ana's items go to ben although the rotation would give one to cy.
    cli("users", "set", "ben", "--timezone", "Europe/Berlin", "--hours", "Mon-Fri 08:00-12:00")
    cli("users", "set", "cy", "--timezone", "Asia/Tokyo", "--hours", "Mon-Fri 09:00-17:00")
    cli("users", "set", "ana", "--away")
    moved = route_again("--now", "2026-11-18T08:00:00Z")["moved"]
    assert [(m["item_id"], m["to"]) for m in moved] == [(ids[0], "ben"), (ids[3], "ben")]
    # At 01:00 UTC cy is at 10:00 in Tokyo and ben asleep: the rotation's next is cy.
    cli("users", "set", "ben", "--away")
    late = route_again("--now", "2026-11-19T01:00:00Z")["moved"]
    assert {m["to"] for m in late} == {"cy"} and len(late) == 4  # ben's items, all to cy
