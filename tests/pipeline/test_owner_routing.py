"""Issue 12 end to end: accounts imported, users added, enquiries matched and routed, as people see them.

Through the CLI (`triage crm accounts import`, `triage users add`, `triage review list --json`,
`triage report sla`) and the pipeline on both databases; the model is the transparent keyword model, so
what is under test is matching and routing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app
from config.settings import Settings
from models.records import Channel
from pipeline.process import process_pending
from pipeline.runtime import Runtime
from store.tables import CrmAccount, CrmContact, CrmOutbox, DecisionRow, Enquiry, ReviewItem
from tests.builders import T0, form_json
from tests.review.review_builders import PASSWORD
from tests.support.pipeline_support import KeywordModel, store

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    return db_url


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def add_user(name: str, *extra: str) -> None:
    cli("users", "add", name, "--role", "sdr", "--password", PASSWORD, *extra)


def run_pipeline(factory: sessionmaker[Session] | None = None) -> Runtime:
    runtime = Runtime(Settings(), clock=lambda: T0)
    context = dataclasses.replace(runtime.pipeline_context(), model=KeywordModel())
    process_pending(factory or runtime.factory, context)
    return runtime


def pricing_forms(count: int, *, domain: str = "northwind-logistics.com") -> list[bytes]:
    return [
        form_json(
            submission_id=f"f-{n}",
            email=f"person{n}@{domain}",
            subject=f"Pricing question {n}",
            message="What would the Growth plan cost for our team? Maybe we need more seats.",
        )
        for n in range(count)
    ]


def test_bigco_sender_is_matched_routed_to_its_owner_and_reported(
    cli_env: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "domain,name,arr,owner,status,contacts\n"
        "bigco.example,BigCo,120000,ana,customer,someone@bigco.example;cfo@bigco.example\n"
        "smallco.example,SmallCo,9000,,prospect,3\n",
        encoding="utf-8",
    )
    first = json.loads(cli("crm", "accounts", "import", str(accounts), "--json"))
    assert (first["added"], first["contacts_added"]) == (2, 2)
    again = json.loads(cli("crm", "accounts", "import", str(accounts), "--json"))
    assert (again["added"], again["updated"], again["unchanged"], again["contacts_added"]) == (0, 0, 2, 0)
    add_user("ana", "--teams", "sales")
    add_user("bo", "--teams", "sales")

    store(
        session_factory,
        Channel.FORM,
        [
            form_json(
                email="someone@bigco.example",
                name="Some One",
                company="",
                subject="Pricing",
                message="What would the Growth plan cost for 200 seats on annual billing?",
            )
        ],
    )
    run_pipeline()

    listing = json.loads(cli("review", "list", "--json"))
    assert listing["total"] == 1
    item = listing["items"][0]
    assert (item["owner"], item["team"], item["account"], item["customer"]) == ("ana", "sales", "BigCo", True)
    assert item["language"] == "en"
    assert item["lane"] in {"hybrid", "human_only"}
    with session_factory() as session:
        triage = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "triage")).one()
        text = " | ".join(triage.reasons)
        assert "account match by exact contact e-mail: BigCo" in text
        assert "real ARR 120,000 USD" in text and "the CRM account's ARR 120,000 USD" in text
        assignment = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "assignment")).one()
        assert assignment.reasons == ["assigned to ana: account owner of BigCo (1/25 open)"]
        enquiry = session.scalars(sa.select(Enquiry)).one()
        assert enquiry.enrichment["arr_estimate"] == 120000 and enquiry.enrichment["arr_source"] == "crm"
        assert enquiry.language == "en"
        lead = session.scalars(sa.select(CrmOutbox).where(CrmOutbox.operation == "upsert_lead")).one()
        assert lead.payload["owner"] == "ana"  # the CRM lead gets its owner too

    report = json.loads(cli("report", "sla", "--since", "2026-11-01", "--until", "2026-12-01", "--json"))
    assert [row["sdr"] for row in report["by_sdr"]] == ["ana"]
    assert [row["key"] for row in report["by_team"]] == ["sales"]


def test_capacities_2_2_50_fill_in_turn_and_leave_no_item_without_owner(
    cli_env: str, session_factory: sessionmaker[Session]
) -> None:
    add_user("ana", "--teams", "sales", "--capacity", "2")
    add_user("ben", "--teams", "sales", "--capacity", "2")
    add_user("cy", "--teams", "sales", "--capacity", "50")
    store(session_factory, Channel.FORM, pricing_forms(30))
    run_pipeline()

    listing = json.loads(cli("review", "list", "--json", "--limit", "500"))
    assert listing["total"] == 30
    owners = [item["owner"] for item in listing["items"]]
    assert None not in owners
    assert {name: owners.count(name) for name in set(owners)} == {"ana": 2, "ben": 2, "cy": 26}
    # Least loaded: while under capacity nobody was skipped, so the first three went one each.
    with session_factory() as session:
        first = list(session.scalars(sa.select(ReviewItem.owner).order_by(ReviewItem.id).limit(3)))
    assert sorted(first) == ["ana", "ben", "cy"]
    users = {user["name"]: user for user in json.loads(cli("users", "list", "--json"))}
    assert (users["ana"]["open_items"], users["cy"]["open_items"]) == (2, 26)


def test_away_member_gets_nothing_and_a_full_team_falls_back_to_the_pool(
    cli_env: str, session_factory: sessionmaker[Session]
) -> None:
    add_user("ana", "--teams", "sales", "--capacity", "1")
    add_user("ben", "--teams", "sales")
    add_user("sue", "--teams", "support", "--capacity", "10")
    cli("users", "set", "ben", "--away")
    store(session_factory, Channel.FORM, pricing_forms(3))
    run_pipeline()
    with session_factory() as session:
        owners = dict(session.execute(sa.select(ReviewItem.id, ReviewItem.owner)).all())
        reasons = [
            row.reasons[0]
            for row in session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "assignment"))
        ]
    assert sorted(owners.values()) == ["ana", "sue", "sue"]
    assert sum("fallback pool overflow" in reason for reason in reasons) == 2


def test_crm_outage_never_blocks_intake_and_says_so(
    cli_env: str, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user("ana", "--teams", "sales")
    store(session_factory, Channel.FORM, pricing_forms(2))
    runtime = Runtime(Settings(), clock=lambda: T0)
    matcher = runtime.account_matcher
    assert matcher is not None

    def unreachable(emails: object) -> dict[str, object]:
        raise ConnectionError("CRM down")

    monkeypatch.setattr(matcher.directory, "lookup", unreachable)
    context = dataclasses.replace(runtime.pipeline_context(), model=KeywordModel())
    summary = process_pending(runtime.factory, context)
    assert summary.outcomes["enquiry"] == 2
    with session_factory() as session:
        reasons = [
            row.reasons[0]
            for row in session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "triage"))
        ]
        assert all(reason.startswith("account lookup unavailable (local)") for reason in reasons)
        assert set(session.scalars(sa.select(ReviewItem.owner))) == {"ana"}


def test_accounts_import_refuses_a_bad_file_naming_the_line(cli_env: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("domain,name,arr,owner,status,contacts\nbigco.example,BigCo,lots,ana,customer,1\n")
    result = runner.invoke(app, ["crm", "accounts", "import", str(bad)])
    assert result.exit_code == 2
    assert "bad.csv:2: arr 'lots' is not a number" in result.output


def test_accounts_import_updates_a_changed_account(
    cli_env: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("domain,name,arr,owner,status,contacts\nhttps://www.BigCo.example/,BigCo,1000,,,2\n")
    cli("crm", "accounts", "import", str(path))
    path.write_text("domain,name,arr,owner,status,contacts\nbigco.example,BigCo,2000,ana,customer,2\n")
    changed = json.loads(cli("crm", "accounts", "import", str(path), "--json"))
    assert (changed["added"], changed["updated"]) == (0, 1)
    with session_factory() as session:
        account = session.scalars(sa.select(CrmAccount)).one()
        assert (account.domain, account.arr, account.owner) == ("bigco.example", 2000, "ana")
        assert session.scalar(sa.select(sa.func.count()).select_from(CrmContact)) == 0


def test_metrics_break_down_by_owner_and_team(cli_env: str, session_factory: sessionmaker[Session]) -> None:
    from app.owner_metrics import owner_metrics

    add_user("ana", "--teams", "sales")
    store(session_factory, Channel.FORM, pricing_forms(3))
    run_pipeline()
    with session_factory() as session:
        families = {family.name: family for family in owner_metrics(session, T0)}
    samples = [
        (s.labels["owner"], s.labels["team"], s.value)
        for s in families["triage_review_open_by_owner"].samples
    ]
    assert samples == [("ana", "sales", 3)]


def sales_hours_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled policy with the sales team working Mon-Fri 09:00-17:00 (each member's zone)."""
    import shutil

    from config.settings import DEFAULT_POLICY_DIR

    target = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    routing = target / "routing.yaml"
    text = routing.read_text(encoding="utf-8")
    bundled = "    strategy: least_loaded\n    # working_hours:"
    assert bundled in text
    routing.write_text(
        text.replace(
            bundled, '    strategy: least_loaded\n    working_hours: {start: "09:00", end: "17:00"}\n    #'
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("TRIAGE_POLICY_DIR", str(target))
    return target


def test_per_user_hours_through_the_cli_and_a_pipeline_run(
    cli_env: str, session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sales_hours_policy(tmp_path, monkeypatch)
    # T0 is Wednesday 09:30 UTC: Berlin 10:30 (team hours: working), New York 04:30 (not), Tokyo 18:30
    # (not by the team's hours, but by her own evening shift).
    add_user("berlin", "--teams", "sales", "--timezone", "Europe/Berlin")
    add_user("newyork", "--teams", "sales", "--timezone", "America/New_York")
    add_user("tokyo", "--teams", "sales", "--timezone", "Asia/Tokyo", "--hours", "mon-fri 17:00-24:00")
    users = {user["name"]: user for user in json.loads(cli("users", "list", "--json"))}
    assert users["tokyo"]["working_hours"] == "Mon-Fri 17:00-24:00"
    assert users["berlin"]["working_hours"] is None  # the team's
    assert "Mon-Fri 17:00-24:00 Asia/Tokyo" in cli("users", "list")

    store(session_factory, Channel.FORM, pricing_forms(4))
    run_pipeline()
    with session_factory() as session:
        owners = sorted(session.scalars(sa.select(ReviewItem.owner)))
    assert owners == ["berlin", "berlin", "tokyo", "tokyo"]

    # Back to the team's hours: Tokyo is off at 18:30, so the next four all go to Berlin.
    assert "hours of the team" in cli("users", "set", "tokyo", "--hours", "team")
    store(session_factory, Channel.FORM, pricing_forms(4, domain="contoso-freight.com"), source="later")
    run_pipeline()
    with session_factory() as session:
        owners = sorted(session.scalars(sa.select(ReviewItem.owner)))
    assert owners == ["berlin"] * 6 + ["tokyo"] * 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--hours", "Mon-Fri 17:00-09:00"], "cannot cross midnight"),
        (["--hours", "weekdays 9 to 5"], "is not DAYS HH:MM-HH:MM"),
        (["--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_hours_or_zone_are_refused_before_anything_is_stored(
    cli_env: str, session_factory: sessionmaker[Session], args: list[str], says: str
) -> None:
    add_user("ana", "--teams", "sales")
    result = runner.invoke(app, ["users", "set", "ana", *args])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    refused = runner.invoke(app, ["users", "add", "bo", "--role", "sdr", "--password", PASSWORD, *args])
    assert refused.exit_code == 2 and says in " ".join(refused.output.split())
    names = [user["name"] for user in json.loads(cli("users", "list", "--json"))]
    assert names == ["ana"]
    assert json.loads(cli("users", "list", "--json"))[0]["working_hours"] is None


def test_users_set_changes_each_routing_field(cli_env: str) -> None:
    add_user("ana", "--teams", "sales")
    said = cli(
        "users", "set", "ana", "--away", "--hours", "Tue-Sat 10:00-18:00", "--timezone", "Asia/Tokyo",
        "--capacity", "3", "--weight", "2", "--teams", "Support, sales", "--email", "ana@team.example",
        "--crm-user-id", "005ANA",
    )  # fmt: skip
    assert "hours Tue-Sat 10:00-18:00" in said and "capacity 3" in said
    [ana] = json.loads(cli("users", "list", "--json"))
    assert {
        key: ana[key] for key in ("away", "working_hours", "timezone", "capacity", "weight", "teams")
    } == {
        "away": True,
        "working_hours": "Tue-Sat 10:00-18:00",
        "timezone": "Asia/Tokyo",
        "capacity": 3,
        "weight": 2,
        "teams": ["support", "sales"],
    }
    assert (ana["email"], ana["crm_user_id"]) == ("ana@team.example", "005ANA")
    nothing = runner.invoke(app, ["users", "set", "ana"])
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
