"""The Salesforce account directory inside a real `triage run` (issue 12): a mail from a contact of a
Salesforce account is matched over SOQL, lands in the review queue owned by the account's owner, and
its lead goes back to Salesforce with that OwnerId; with Salesforce answering 503, intake goes on and
the audit row says so. The double follows the documented endpoints (tests/support/salesforce_double.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app
from store.tables import DecisionRow, Enquiry, ReviewItem
from tests.builders import email_bytes
from tests.review.review_builders import PASSWORD
from tests.support.salesforce_double import SalesforceDouble

from .test_crm_cli import salesforce_env

runner = CliRunner()
ZOE_CRM_ID = "005000000000ZOEAAA"


def cli(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


def org_and_people(sf: SalesforceDouble, env: dict[str, str], tmp_path: Path) -> tuple[str, Path]:
    """BigCo in Salesforce, owned by zoe; zoe and al in the sales team here; one mail from BigCo's CFO."""
    account = sf.add_record(
        "Account",
        Name="BigCo",
        Domain__c="bigco.example",
        AnnualRevenue=240000,
        OwnerId=ZOE_CRM_ID,
        Type="Customer - Direct",
        CreatedDate="2020-01-01T00:00:00.000+0000",
    )
    # The contact's address is not on the account's domain: only the Contact.Email rule can match it.
    sf.add_record("Contact", LastName="Fox", Email="Dana.Fox@bigco-holdings.example", AccountId=account)
    for name, extra in (("al", []), ("zoe", ["--crm-user-id", ZOE_CRM_ID])):
        cli(env, "users", "add", name, "--role", "sdr", "--password", PASSWORD, "--teams", "sales", *extra)
    mail = tmp_path / "mail" / "cfo.eml"
    mail.parent.mkdir()
    mail.write_bytes(
        email_bytes(
            message_id="<cfo-1@bigco-holdings.example>",
            sender="Dana Fox <dana.fox@bigco-holdings.example>",
            subject="Pricing for 200 more seats",
            body="What would the Growth plan cost for 200 more seats on annual billing?",
        )
    )
    return account, mail


def test_a_salesforce_contacts_mail_goes_to_the_account_owner_with_the_real_arr(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    env = salesforce_env(sf_double, db_url, tmp_path)
    account, mail = org_and_people(sf_double, env, tmp_path)
    assert cli(env, "import", str(mail), "--channel", "email", "--json")["stored"] == 1
    summary = cli(env, "run", "--direct", "--json")
    assert summary["enquiries"] == 1
    # The lookups were SOQL against the double: Contact by e-mail with the account's fields.
    assert any("FROM Contact WHERE Email IN" in query for query in sf_double.queries)

    listing = cli(env, "review", "list", "--json")
    [item] = listing["items"]
    # al would win a least-loaded tie by name: zoe has it because she owns the account.
    assert (item["owner"], item["team"], item["account"], item["customer"]) == ("zoe", "sales", "BigCo", True)
    with session_factory() as session:
        triage = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "triage")).one()
        reasons = " | ".join(triage.reasons)
        assert triage.reasons[0].startswith("account match by exact contact e-mail: BigCo")
        assert "real ARR 240,000 USD" in reasons
        assignment = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "assignment")).one()
        assert assignment.reasons == ["assigned to zoe: account owner of BigCo (1/25 open)"]
        enquiry = session.scalars(sa.select(Enquiry)).one()
        assert enquiry.enrichment["arr_source"] == "crm" and enquiry.enrichment["arr_estimate"] == 240000
        assert (enquiry.enrichment["account_id"], enquiry.enrichment["account_match"]) == (
            account,
            "contact_email",
        )
    # The lead the run wrote to Salesforce carries the owner's CRM id.
    [lead] = sf_double.leads_by_external_id().values()
    assert lead["OwnerId"] == ZOE_CRM_ID and lead["Email"] == "dana.fox@bigco-holdings.example"


def test_salesforce_answering_503_never_blocks_intake_and_the_audit_says_so(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    env = salesforce_env(sf_double, db_url, tmp_path)
    _, mail = org_and_people(sf_double, env, tmp_path)
    cli(env, "import", str(mail), "--channel", "email")
    sf_double.fail_requests(count=1000)  # every API request, lookups and lead writes alike
    summary = cli(env, "run", "--direct", "--json")
    assert summary["enquiries"] == 1
    with session_factory() as session:
        triage = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "triage")).one()
        assert triage.reasons[0] == "account lookup unavailable (salesforce): bundled firmographics used"
        item = session.scalars(sa.select(ReviewItem)).one()
        assert (item.status, item.owner) == ("open", "al")  # routed without the account: least loaded
        enquiry = session.scalars(sa.select(Enquiry)).one()
        assert enquiry.enrichment.get("arr_source") != "crm"
    assert sf_double.leads_by_external_id() == {}  # the lead waits in the outbox for the next run
