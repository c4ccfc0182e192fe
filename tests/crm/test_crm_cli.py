"""`triage crm ...` end to end: real settings from the environment, a real database, the double."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.crm import crm_app
from tests.support.salesforce_double import FieldErrorRule, SalesforceDouble

from .builders import fill_outbox

runner = CliRunner()


def run(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = runner.invoke(crm_app, list(args), env=env)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture
def local_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"TRIAGE_DATABASE_URL": db_url, "TRIAGE_HOME": str(tmp_path), "TRIAGE_CRM__BACKEND": "local"}


def salesforce_env(double: SalesforceDouble, db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TRIAGE_DATABASE_URL": db_url,
        "TRIAGE_HOME": str(tmp_path),
        "TRIAGE_CRM__BACKEND": "salesforce",
        "TRIAGE_SALESFORCE__INSTANCE_URL": double.instance_url,
        "TRIAGE_SALESFORCE__USERNAME": double.username,
        "TRIAGE_SALESFORCE__PASSWORD": double.password,
        "TRIAGE_SALESFORCE__SECURITY_TOKEN": double.security_token,
        "TRIAGE_SALESFORCE__CA_BUNDLE": str(double.ca_bundle),
    }


def test_local_sync_list_check(local_env: dict[str, str], session_factory: sessionmaker[Session]) -> None:
    fill_outbox(session_factory, 12, with_tasks=True)
    synced = run(local_env, "sync", "--json")
    assert (synced["backend"], synced["sent"], synced["outbox"]) == ("local", 24, {"sent": 24})
    listed = run(local_env, "list", "--json", "--limit", "5")
    assert listed["total"] == 12 and len(listed["leads"]) == 5
    assert listed["leads"][0]["email"] == "buyer0@example.com"
    assert "CRM leads (local): 5 of 12" in run(local_env, "list", "--limit", "5")
    assert run(local_env, "check", "--json")["ok"] is True
    assert run(local_env, "failures", "--json") == {"failures": []}
    assert "No failed CRM writes." in run(local_env, "failures")


def test_salesforce_failures_retry_and_check(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    env = salesforce_env(sf_double, db_url, tmp_path)
    fill_outbox(session_factory, 6)
    sf_double.reject_records(
        FieldErrorRule("Lead", lambda record: record.get("Email") == "buyer4@example.com")
    )
    synced = run(env, "sync", "--json")
    assert (synced["backend"], synced["sent"], synced["failed"]) == ("salesforce", 5, 1)

    failures = run(env, "failures", "--json")["failures"]
    assert [(row["enquiry_id"], row["error"]) for row in failures] == [
        (f"{4:032x}", "FIELD_CUSTOM_VALIDATION_EXCEPTION: Email: invalid email address (fields: Email)")
    ]
    assert "triage crm retry" in run(env, "failures")

    sf_double.clear_rules()
    assert "1 failed write(s) queued again." in run(env, "retry", "--id", str(failures[0]["id"]))
    assert run(env, "sync", "--json")["sent"] == 1
    listed = run(env, "list", "--json")
    assert listed["total"] == 6
    assert {lead["id"] for lead in listed["leads"]} == {
        lead["Id"] for lead in sf_double.leads_by_external_id().values()
    }

    assert run(env, "check", "--json")["ok"] is True
    sf_double.remove_field("Lead", "Enquiry_Id__c")
    checked = run(env, "check", "--json", code=1)
    assert checked["ok"] is False and "create a Text field Enquiry_Id__c on Lead" in checked["message"]
    assert "NOT READY" in run(env, "check", code=1)


def test_sync_stops_with_a_message_when_salesforce_refuses_the_login(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    env = salesforce_env(sf_double, db_url, tmp_path) | {"TRIAGE_SALESFORCE__PASSWORD": "wrong"}
    fill_outbox(session_factory, 2)
    result = run(env, "sync", "--json", code=1)
    assert result["ok"] is False and "Salesforce refused the login" in result["error"]


def test_a_broken_mapping_is_reported_by_check(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "crm_mapping.yaml").write_text(
        "version: 1\nlead:\n  fields:\n    e_mail: Email\ntask:\n  fields: {}\n"
    )
    env = salesforce_env(sf_double, db_url, tmp_path) | {"TRIAGE_POLICY_DIR": str(policy)}
    checked = run(env, "check", "--json", code=1)
    assert "crm_mapping.yaml:3: lead.fields" in checked["message"] and "e_mail" in checked["message"]


def test_sync_by_hand_during_a_long_outage_alerts_the_ops_lead_once(
    sf_double: SalesforceDouble, db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    from tests.sla.sla_helpers import smtp_server

    fill_outbox(session_factory, 3)
    with smtp_server() as sink:
        env = salesforce_env(sf_double, db_url, tmp_path) | {
            "TRIAGE_CRM__OUTAGE_ALERT_MINUTES": "0.001",  # an outage is "long" 60 ms after it began
            "TRIAGE_CRM__BACKOFF_SECONDS": "0.02",
            "TRIAGE_NOTIFY__SMTP__HOST": sink.host,
            "TRIAGE_NOTIFY__SMTP__PORT": str(sink.port),
            "TRIAGE_NOTIFY__SMTP__STARTTLS": "false",
            "TRIAGE_NOTIFY__RECIPIENTS": '{"ops_lead": ["ops@example.com"]}',
        }
        sf_double.fail_requests(10, status=503)
        first = run(env, "sync", "--json")  # the outage begins
        time.sleep(0.3)  # past the alert delay and the writes' backoff: the next sync retries them
        second = run(env, "sync", "--json")
        time.sleep(0.3)
        third = run(env, "sync", "--json")
    assert first["stopped_by"] and first["alerted"] is False and first["outbox"] == {"pending": 3}
    assert second["stopped_by"] and second["alerted"] is True
    assert third["alerted"] is False  # one alert per outage, not one per sync
    assert len(sink.messages) == 1
    recipients, message = sink.messages[0]
    assert recipients == ["ops@example.com"] and "CRM unavailable" in str(message["Subject"])
