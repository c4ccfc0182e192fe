"""`triage review ...` and `triage users ...` through typer's runner, against a real database."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.review import review_app, users_app
from review.auth import authenticate
from store.tables import Correction, ReviewItem, User
from tests.review.review_builders import PASSWORD, add_enquiry_with_item

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    return db_url


def test_users_add_prompts_for_a_hidden_password_and_lists(
    cli_env: str, session_factory: sessionmaker[Session]
) -> None:
    result = runner.invoke(users_app, ["add", "sam", "--role", "sdr"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert (
        runner.invoke(users_app, ["add", "olga", "--role", "ops_lead", "--password", PASSWORD]).exit_code == 0
    )
    assert runner.invoke(users_app, ["add", "olga", "--role", "sdr", "--password", PASSWORD]).exit_code == 1
    assert runner.invoke(users_app, ["add", "bob", "--role", "king", "--password", PASSWORD]).exit_code == 2
    with session_factory() as session:
        assert authenticate(session, "sam", PASSWORD) is not None
        stored = session.scalars(sa.select(User.password_hash).where(User.name == "sam")).one()
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
    listed = json.loads(runner.invoke(users_app, ["list", "--json"]).output)
    assert [(user["name"], user["role"]) for user in listed] == [("olga", "ops_lead"), ("sam", "sdr")]
    assert runner.invoke(users_app, ["deactivate", "sam"]).exit_code == 0
    assert runner.invoke(users_app, ["deactivate", "nobody"]).exit_code == 1
    with session_factory() as session:
        assert authenticate(session, "sam", PASSWORD) is None


def test_review_list_claim_correct_reply_json(cli_env: str, session_factory: sessionmaker[Session]) -> None:
    runner.invoke(users_app, ["add", "sam", "--role", "sdr", "--password", PASSWORD])
    runner.invoke(users_app, ["add", "sue", "--role", "sdr", "--password", PASSWORD])
    with session_factory() as session:
        first, _ = add_enquiry_with_item(session, subject="first", due_in_minutes=-5_000_000)
        add_enquiry_with_item(session, subject="second", due_in_minutes=5_000_000)
        session.commit()

    listing = json.loads(runner.invoke(review_app, ["list", "--json"]).output)
    assert listing["total"] == 2 and [item["subject"] for item in listing["items"]] == ["first", "second"]
    assert listing["items"][0]["breached"] is True

    claimed = runner.invoke(review_app, ["claim", str(first), "--user", "sam", "--json"])
    assert claimed.exit_code == 0 and json.loads(claimed.output)["claimed_by"] == "sam"
    lost = runner.invoke(review_app, ["claim", str(first), "--user", "sue", "--json"])
    assert lost.exit_code == 1 and json.loads(lost.output)["ok"] is False
    assert runner.invoke(review_app, ["claim", str(first), "--user", "nobody"]).exit_code == 1

    corrected = runner.invoke(
        review_app,
        [
            "correct",
            str(first),
            "--user",
            "sam",
            "--intent",
            "billing",
            "--priority",
            "low",
            "--queue",
            "finance",
            "--json",
        ],
    )
    assert corrected.exit_code == 0, corrected.output
    bad = runner.invoke(
        review_app,
        ["correct", str(first), "--user", "sam", "--intent", "x", "--priority", "low", "--queue", "finance"],
    )
    assert bad.exit_code == 1
    # without an SMTP server and a from address a reply cannot go out: refused, nothing recorded
    refused = runner.invoke(review_app, ["reply", str(first), "--user", "sam", "--text", "Done.", "--json"])
    assert refused.exit_code == 1 and "TRIAGE_OUTBOUND__FROM_ADDRESS" in refused.output
    replied = runner.invoke(
        review_app, ["answered", str(first), "--user", "sam", "--reason", "called back", "--json"]
    )
    assert replied.exit_code == 0 and json.loads(replied.output)["ok"] is True

    with session_factory() as session:
        assert session.scalars(sa.select(Correction.queue)).all() == ["finance"]
        item = session.get(ReviewItem, first)
        assert item is not None and item.status == "done" and item.queue == "finance"
    mine = runner.invoke(review_app, ["list", "--mine", "sam"])
    assert mine.exit_code == 0 and "0 open" in mine.output


def test_users_carry_routing_fields_and_go_away_and_back(cli_env: str) -> None:
    added = runner.invoke(
        users_app,
        [
            "add", "ana", "--role", "sdr", "--password", PASSWORD, "--teams", "Sales, support,,sales",
            "--capacity", "2", "--weight", "3", "--timezone", "Europe/Berlin",
            "--email", "ana@example.com", "--crm-user-id", "005000000000001",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert runner.invoke(users_app, ["add", "bo", "--role", "sdr", "--password", PASSWORD]).exit_code == 0
    bad_zone = ["add", "cy", "--role", "sdr", "--password", PASSWORD, "--timezone", "Mars/Olympus"]
    assert runner.invoke(users_app, bad_zone).exit_code == 2
    listed = {user["name"]: user for user in json.loads(runner.invoke(users_app, ["list", "--json"]).output)}
    assert set(listed) == {"ana", "bo"}
    ana, bo = listed["ana"], listed["bo"]
    assert ana["teams"] == ["sales", "support"]
    assert (ana["capacity"], ana["weight"], ana["timezone"]) == (2, 3, "Europe/Berlin")
    assert (ana["email"], ana["crm_user_id"], ana["away"]) == ("ana@example.com", "005000000000001", False)
    defaults = (bo["teams"], bo["capacity"], bo["weight"], bo["timezone"], bo["away"])
    assert defaults == ([], 25, 1, "UTC", False)
    assert runner.invoke(users_app, ["set", "ana", "--away"]).exit_code == 0
    assert json.loads(runner.invoke(users_app, ["list", "--json"]).output)[0]["away"] is True
    assert runner.invoke(users_app, ["set", "ana", "--back"]).exit_code == 0
    assert json.loads(runner.invoke(users_app, ["list", "--json"]).output)[0]["away"] is False
    assert runner.invoke(users_app, ["set", "ana"]).exit_code == 2
    assert runner.invoke(users_app, ["set", "nobody", "--away"]).exit_code == 1
