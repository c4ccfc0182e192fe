"""Salesforce through the HTTPS double: exactly once through outages, timeouts, field errors, expiry.

The double speaks Salesforce's documented shapes over TLS (tests/support/salesforce_double.py); the
client is the real simple-salesforce. Tests that touch the outbox run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import sqlalchemy as sa
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceResourceNotFound,
)
from sqlalchemy.orm import Session, sessionmaker

from config.settings import CrmSettings
from connectors.crm.base import LeadWrite, TaskWrite
from connectors.crm.mapping import LeadMapping
from connectors.crm.salesforce import SalesforceCrm, classify_failure
from models.errors import FatalError, RetriableError
from pipeline.crm_sync import DrainSummary, drain_outbox
from store import outbox
from store.tables import CrmOutbox
from tests.support.salesforce_double import FieldErrorRule, SalesforceDouble

from .builders import T0, StepClock, fill_outbox


def make_crm(
    double: SalesforceDouble, mapping: LeadMapping, *, bulk_threshold: int = 2000, **settings: Any
) -> SalesforceCrm:
    return SalesforceCrm(
        double.settings(**settings),
        CrmSettings(bulk_threshold=bulk_threshold),
        mapping,
        bulk_poll_seconds=0.02,
    )


def drain_until_done(
    factory: sessionmaker[Session],
    crm: SalesforceCrm,
    clock: StepClock,
    *,
    batch_size: int = 100,
    rounds: int = 10,
) -> list[DrainSummary]:
    """Drain, jumping past every backoff, until nothing is pending (as scheduled runs would)."""
    summaries = []
    for _ in range(rounds):
        summaries.append(drain_outbox(factory, crm, batch_size=batch_size, backoff_seconds=30, clock=clock))
        with factory() as session:
            if outbox.counts_by_status(session).get("pending", 0) == 0:
                return summaries
        clock.advance(hours=2)
    raise AssertionError(f"outbox not drained after {rounds} rounds: {summaries}")


def assert_each_lead_once(double: SalesforceDouble, factory: sessionmaker[Session], count: int) -> None:
    leads = double.leads_by_external_id()
    assert len(leads) == count and double.lead_count() == count
    assert len(double.created) == count and set(double.created.values()) == {1}
    with factory() as session:
        rows = session.scalars(sa.select(CrmOutbox).where(CrmOutbox.operation == "upsert_lead")).all()
    assert {row.status for row in rows} == {"sent"}
    assert {row.crm_id for row in rows} == {lead["Id"] for lead in leads.values()}


# -- the failure table ---------------------------------------------------------------------------------
def _sf_error(cls: type, status: int, code: str, message: str = "m") -> Exception:
    return cls("https://x/services/data", status, "Lead", [{"errorCode": code, "message": message}])  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("error", "reaction"),
    [
        (requests.ReadTimeout("read timed out"), "retry"),
        (requests.ConnectionError("refused"), "retry"),
        (_sf_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID"), "reauthenticate"),
        (_sf_error(SalesforceGeneralError, 429, "TOO_MANY_REQUESTS"), "retry"),
        (_sf_error(SalesforceGeneralError, 403, "REQUEST_LIMIT_EXCEEDED"), "retry"),
        (_sf_error(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"), "retry"),
        (_sf_error(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), "retry"),
        (_sf_error(SalesforceMalformedRequest, 400, "INVALID_FIELD", "No such column 'X__c'"), "record"),
        (_sf_error(SalesforceMalformedRequest, 400, "JSON_PARSER_ERROR"), "record"),
        (
            _sf_error(
                SalesforceResourceNotFound, 404, "NOT_FOUND", "Provided external ID field does not exist"
            ),
            "fatal",
        ),
        (
            _sf_error(
                SalesforceMalformedRequest, 400, "INVALID_TYPE", "sObject type 'Lead' is not supported"
            ),
            "fatal",
        ),
        (_sf_error(SalesforceGeneralError, 403, "INSUFFICIENT_ACCESS"), "fatal"),
        (SalesforceAuthenticationFailed("INVALID_LOGIN", "Invalid username, password"), "fatal"),
        (SalesforceAuthenticationFailed(503, "<html>down</html>"), "retry"),
        (
            SalesforceOperationError(
                "Job failure. Response content: InvalidBatch : Field name not found : X"
            ),
            "record",
        ),
        (SalesforceOperationError("Job failure. Response content: InternalServerError"), "retry"),
    ],
)
def test_failure_table(error: Exception, reaction: str) -> None:
    failure = classify_failure(error)
    assert failure.reaction == reaction
    assert "Salesforce said" in failure.message


# -- exactly once --------------------------------------------------------------------------------------
def test_500_leads_with_an_outage_in_the_middle_end_exactly_once(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 500)
    sf_double.fail_requests(3, after=2, status=503)  # composite requests 3, 4 and 5 meet the outage
    crm = make_crm(sf_double, mapping)
    summaries = drain_until_done(session_factory, crm, clock)
    first = summaries[0]
    assert (
        (first.sent, first.retried) == (200, 100) and first.stopped_by and "server error" in first.stopped_by
    )
    assert sum(summary.sent for summary in summaries) == 500
    assert_each_lead_once(sf_double, session_factory, 500)
    lead = sf_double.leads_by_external_id()[f"{7:032x}"]
    assert (lead["Email"], lead["LastName"], lead["LeadSource"]) == ("buyer7@example.com", "Buyer7", "Email")

    # A re-run sends nothing: no request reaches Salesforce, and re-enqueued keys are ignored.
    requests_before = sf_double.api_request_count()
    rerun = drain_outbox(session_factory, crm, clock=clock)
    assert (rerun.sent, rerun.batches) == (0, 0)
    assert sf_double.api_request_count() == requests_before
    with session_factory() as session, session.begin():
        rows = [
            {
                "idempotency_key": row.idempotency_key,
                "enquiry_id": row.enquiry_id,
                "operation": row.operation,
                "payload": row.payload,
            }
            for row in session.scalars(sa.select(CrmOutbox).limit(5))
        ]
        assert outbox.enqueue(session, rows, now=T0) == 0


def test_a_timeout_after_salesforce_wrote_updates_instead_of_duplicating(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 50)
    sf_double.delay_requests(1, 1.5)  # Salesforce does the write, but answers after the client gave up
    crm = make_crm(sf_double, mapping, timeout_seconds=0.5)
    summaries = drain_until_done(session_factory, crm, clock)
    assert summaries[0].stopped_by and "did not answer" in summaries[0].stopped_by
    assert_each_lead_once(sf_double, session_factory, 50)


def test_a_field_error_isolates_one_record(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 20)
    # A validation rule rejects one record; a value Salesforce cannot read rejects a whole request.
    sf_double.reject_records(
        FieldErrorRule("Lead", lambda record: record.get("Email") == "buyer7@example.com")
    )
    sf_double.reject_records(
        FieldErrorRule(
            "Lead",
            lambda record: record.get("Email") == "buyer13@example.com",
            status_code="JSON_PARSER_ERROR",
            message="Cannot deserialize instance of double from VALUE_STRING",
            fields=["AnnualRevenue"],
            request_level=True,
        )
    )
    crm = make_crm(sf_double, mapping)
    summary = drain_outbox(session_factory, crm, clock=clock)
    assert (summary.sent, summary.failed, summary.retried) == (18, 2, 0)
    with session_factory() as session:
        failed = {row.enquiry_id: row.last_error for row in outbox.failures(session)}
    assert failed == {
        f"{7:032x}": "FIELD_CUSTOM_VALIDATION_EXCEPTION: Email: invalid email address (fields: Email)",
        f"{13:032x}": "JSON_PARSER_ERROR: Cannot deserialize instance of double from VALUE_STRING "
        "(fields: AnnualRevenue)",
    }
    assert len(sf_double.leads_by_external_id()) == 18

    # The admin fixes the rule; `crm retry` queues the two again and they go through, once.
    sf_double.clear_rules()
    with session_factory() as session, session.begin():
        assert outbox.requeue_failed(session, now=clock()) == 2
    assert drain_outbox(session_factory, crm, clock=clock).sent == 2
    assert_each_lead_once(sf_double, session_factory, 20)


def test_an_expired_session_recovers(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 40)
    crm = make_crm(sf_double, mapping)
    assert drain_outbox(session_factory, crm, batch_size=20, max_batches=1, clock=clock).sent == 20
    sf_double.expire_sessions()
    summary = drain_outbox(session_factory, crm, batch_size=20, clock=clock)
    assert (summary.sent, summary.retried, summary.stopped_by) == (20, 0, None)
    assert sf_double.logins == 2
    assert_each_lead_once(sf_double, session_factory, 40)


def test_an_expired_session_recovers_in_the_middle_of_bulk(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    crm = make_crm(sf_double, mapping, bulk_threshold=5)
    leads = [
        LeadWrite(f"lead:{n}", f"e{n}", {"last_name": "L", "company": "C", "channel": "chat"})
        for n in range(10)
    ]
    assert all(result.ok for result in crm.upsert_leads(leads))
    sf_double.expire_sessions()
    results = crm.upsert_leads(leads)
    assert all(result.ok for result in results) and sf_double.logins == 2
    assert len(sf_double.jobs) == 2 and set(sf_double.created.values()) == {1}
    assert sf_double.leads_by_external_id()["e3"]["LeadSource"] == "Chat"


def test_a_session_id_alone_cannot_log_in_again(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    crm = make_crm(sf_double, mapping, username=None, password=None, session_id=sf_double.issue_session())
    assert crm.upsert_leads([LeadWrite("lead:1", "e1", {})])[0].ok
    sf_double.expire_sessions()
    with pytest.raises(FatalError, match="set a fresh TRIAGE_SALESFORCE__SESSION_ID"):
        crm.upsert_leads([LeadWrite("lead:1", "e1", {})])


def test_throttling_is_retriable(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    crm = make_crm(sf_double, mapping)
    sf_double.fail_requests(1, status=429, error_code="TOO_MANY_REQUESTS", message="Too many requests")
    with pytest.raises(RetriableError, match="throttling"):
        crm.upsert_leads([LeadWrite("lead:1", "e1", {})])
    assert crm.upsert_leads([LeadWrite("lead:1", "e1", {})])[0].ok


# -- Bulk API 2.0 --------------------------------------------------------------------------------------
def test_large_batches_go_through_bulk_and_a_field_error_stays_with_its_record(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 120)
    sf_double.reject_records(
        FieldErrorRule("Lead", lambda record: record.get("Email") == "buyer42@example.com")
    )
    crm = make_crm(sf_double, mapping, bulk_threshold=100)
    summary = drain_outbox(session_factory, crm, batch_size=100, clock=clock)
    assert (summary.sent, summary.failed, summary.batches) == (119, 1, 2)
    assert len(sf_double.jobs) == 1  # the first batch of 100 as a job, the last 20 through Collections
    with session_factory() as session:
        (failed,) = outbox.failures(session)
    assert failed.last_error == "FIELD_CUSTOM_VALIDATION_EXCEPTION:Email: invalid email address:Email"
    assert len(sf_double.leads_by_external_id()) == 119 and set(sf_double.created.values()) == {1}


def test_a_bulk_job_rejected_as_a_whole_is_resent_record_by_record(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    sf_double.remove_field("Lead", "Status")  # the mapping's constant Status no longer exists
    crm = make_crm(sf_double, mapping, bulk_threshold=2)
    results = crm.upsert_leads([LeadWrite(f"lead:{n}", f"e{n}", {}) for n in range(3)])
    assert [result.ok for result in results] == [False] * 3
    assert results[0].error == "INVALID_FIELD: No such column 'Status' on sobject of type Lead"
    assert not results[0].retriable
    assert sf_double.jobs and next(iter(sf_double.jobs.values())).info["state"] == "Failed"


def test_a_stuck_bulk_job_is_given_up_and_retried_later(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    sf_double.hold_bulk_jobs = True
    crm = SalesforceCrm(
        sf_double.settings(),
        CrmSettings(bulk_threshold=2),
        mapping,
        bulk_poll_seconds=0.02,
        bulk_timeout_seconds=0.3,
    )
    with pytest.raises(RetriableError, match="Job timeout"):
        crm.upsert_leads([LeadWrite(f"lead:{n}", f"e{n}", {}) for n in range(3)])
    assert [job.info["state"] for job in sf_double.jobs.values()] == ["Aborted"]


# -- tasks ---------------------------------------------------------------------------------------------
def test_tasks_land_once_on_their_lead(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 5, with_tasks=True)
    crm = make_crm(sf_double, mapping)
    assert drain_outbox(session_factory, crm, clock=clock).sent == 10
    tasks = sf_double.tasks()
    leads = sf_double.leads_by_external_id()
    assert len(tasks) == 5
    assert {task["WhoId"] for task in tasks} == {lead["Id"] for lead in leads.values()}
    assert {task["Priority"] for task in tasks} == {"High"} and {task["ActivityDate"] for task in tasks} == {
        "2026-11-24"
    }
    # A re-send of the same task (e.g. a crash before the outbox row was marked) updates, not duplicates.
    eid = next(iter(leads))
    again = crm.create_tasks(
        [TaskWrite(f"task:{eid}", eid, {"subject": "Again"}), TaskWrite("task:x", "nope", {})]
    )
    assert again[0].ok and not again[1].ok and "not in Salesforce" in (again[1].error or "")
    assert len(sf_double.tasks()) == 5


# -- crm check -----------------------------------------------------------------------------------------
def test_check_passes_on_a_ready_org(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    result = make_crm(sf_double, mapping).check()
    assert result.ok and "Lead.Enquiry_Id__c and Task.Triage_Key__c are External ID fields" in result.message


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            lambda d: d.remove_field("Lead", "Enquiry_Id__c"),
            "create a Text field Enquiry_Id__c on Lead with 'External ID'",
        ),
        (
            lambda d: d.remove_field("Task", "Triage_Key__c"),
            "create a Text field Triage_Key__c on Task (Activity)",
        ),
        (lambda d: d.remove_field("Lead", "Industry"), "Lead has no field(s) Industry that"),
        (lambda d: d.objects["Lead"]["Enquiry_Id__c"].update(externalId=False), "tick 'External ID'"),
    ],
)
def test_check_says_how_to_fix_what_is_wrong(
    sf_double: SalesforceDouble, mapping: LeadMapping, breakage: Any, expected: str
) -> None:
    breakage(sf_double)
    result = make_crm(sf_double, mapping).check()
    assert not result.ok
    assert expected in result.message


def test_check_with_a_wrong_password(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    result = make_crm(sf_double, mapping, password="rotated").check()
    assert not result.ok
    assert "Check TRIAGE_SALESFORCE__USERNAME, __PASSWORD and __SECURITY_TOKEN" in result.message
    assert "INVALID_LOGIN" in result.message  # Salesforce's own words follow the advice


def test_check_with_a_missing_ca_bundle(
    sf_double: SalesforceDouble, mapping: LeadMapping, tmp_path: Any
) -> None:
    result = make_crm(sf_double, mapping, ca_bundle=tmp_path / "absent.pem").check()
    assert not result.ok and "TRIAGE_SALESFORCE__CA_BUNDLE" in result.message


def test_check_when_salesforce_cannot_be_reached(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    settings = sf_double.settings(instance_url="https://127.0.0.1:9", timeout_seconds=1)
    result = SalesforceCrm(settings, CrmSettings(), mapping).check()
    assert not result.ok and "did not answer" in result.message


def test_nothing_configured_is_a_fatal_error_with_the_settings_to_set(mapping: LeadMapping) -> None:
    from config.settings import SalesforceSettings

    result = SalesforceCrm(SalesforceSettings(), CrmSettings(), mapping).check()
    assert not result.ok and "set TRIAGE_SALESFORCE__USERNAME" in result.message
