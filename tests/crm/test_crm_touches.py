"""First touches made in Salesforce (issue 17): the poller against the HTTPS double, on both databases.

Leads are written by the real outbox drain (so the CRM id is stored as in production), then changed in
the double as a person would in Salesforce: a Status moved out of the open statuses, a Task completed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.crm import crm_app
from config.settings import CrmSettings, SalesforceSettings
from connectors.crm.mapping import LeadMapping
from connectors.crm.salesforce import SalesforceCrm
from pipeline.crm_sync import drain_outbox
from pipeline.crm_touches import CHECKPOINT_SOURCE, TouchPollSummary, poll_crm_touches
from sla.policies import load_policies
from sla.report import build_report, summary_figures
from sla.service import TimerStart, start_timers
from sla.touches import record_touch
from store import outbox, review_repo
from store import raw as raw_store
from store.db import transaction
from store.tables import DecisionRow, SlaTimer
from tests.sla.sla_helpers import add_enquiries
from tests.support.salesforce_double import SalesforceDouble

from .test_crm_cli import salesforce_env

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LATER = MONDAY + timedelta(hours=3)  # when the polls run
SDR = "005000000000SDRAAA"
OTHER = "005000000000OTHAAA"
runner = CliRunner()


def _crm(double: SalesforceDouble, mapping: LeadMapping) -> SalesforceCrm:
    return SalesforceCrm(double.settings(), CrmSettings(), mapping, bulk_poll_seconds=0.02)


def _seed(
    factory: sessionmaker[Session], double: SalesforceDouble, crm: SalesforceCrm, ids: list[str]
) -> dict[str, str]:
    """Enquiries with running clocks and their leads in Salesforce; returns enquiry id → Lead Id."""
    with transaction(factory) as session:
        add_enquiries(session, ids, received_at=MONDAY)
        start_timers(
            session,
            [TimerStart(i, MONDAY, "normal", "support", "email", "support", "smb") for i in ids],
            load_policies(),
            now=MONDAY,
        )
        outbox.enqueue(
            session,
            [
                {
                    "idempotency_key": f"lead:{i}",
                    "enquiry_id": i,
                    "operation": "upsert_lead",
                    "payload": {"external_id": i, "email": f"{i}@example.com", "last_name": i},
                }
                for i in ids
            ],
            now=MONDAY,
        )
    double.clock = lambda: MONDAY + timedelta(minutes=1)  # the integration writes the leads
    summary = drain_outbox(factory, crm, batch_size=100, clock=lambda: MONDAY + timedelta(minutes=1))
    assert summary.sent == len(ids)
    leads = double.leads_by_external_id()
    assert {lead["Status"] for lead in leads.values()} == {"Open - Not Contacted"}
    return {i: leads[i]["Id"] for i in ids}


def _poll(
    factory: sessionmaker[Session], crm: SalesforceCrm, *, at: datetime = LATER, **settings: Any
) -> TouchPollSummary:
    return poll_crm_touches(factory, crm, SalesforceSettings(**settings), clock=lambda: at)


def _timer(session: Session, enquiry_id: str) -> SlaTimer:
    return session.scalars(
        sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id, SlaTimer.kind == "first_response")
    ).one()


def _touch_audits(session: Session) -> int:
    return len(session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "first_touch")).all())


def test_a_lead_status_leaving_open_stops_the_clock_at_last_modified_date_once(
    sf_double: SalesforceDouble, mapping: LeadMapping, session_factory: sessionmaker[Session]
) -> None:
    crm = _crm(sf_double, mapping)
    leads = _seed(session_factory, sf_double, crm, ["e1", "e2"])
    with transaction(session_factory) as session:
        sam = review_repo.add_user(session, name="sam", role="sdr", password_hash="x", now=MONDAY)
        sam.crm_user_id = SDR
    contacted = MONDAY + timedelta(minutes=40)
    # sam owns both leads (the team's: sam's CRM user id); one is contacted, one only edited
    sf_double.edit_record(
        "Lead", leads["e1"], {"Status": "Working - Contacted", "OwnerId": SDR}, by=SDR, at=contacted
    )
    sf_double.edit_record("Lead", leads["e2"], {"Phone": "+44 20 1234", "OwnerId": SDR}, by=SDR, at=contacted)

    first = _poll(session_factory, crm)
    assert (first.clocks_stopped, first.stopped) == (1, ["e1"])
    with session_factory() as session:
        timer = _timer(session, "e1")
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (contacted, "sam", "crm")
        assert _timer(session, "e2").stopped_at is None
        audits = _touch_audits(session)
        checkpoint = raw_store.get_checkpoint(session, CHECKPOINT_SOURCE)
    assert audits == 1
    assert checkpoint is not None
    assert checkpoint["leads"]["at"] == (LATER - timedelta(seconds=60)).isoformat()
    # the SOQL asked for exactly the team's changes: datetimes unquoted, ordered for keyset paging
    lead_query = next(q for q in sf_double.queries if "FROM Lead WHERE Enquiry_Id__c != null" in q)
    assert f"OwnerId IN ('{SDR}')" in lead_query
    assert "Status NOT IN ('Open - Not Contacted')" in lead_query
    assert "ORDER BY LastModifiedDate, Id LIMIT 2000" in lead_query

    # a second poll does nothing, even after the lead is edited again later
    sf_double.edit_record("Lead", leads["e1"], {"Status": "Qualified"}, by=SDR, at=LATER)
    again = _poll(session_factory, crm, at=LATER + timedelta(hours=1))
    assert again.clocks_stopped == 0 and again.leads_seen == 1
    with session_factory() as session:
        assert _timer(session, "e1").stopped_at == contacted
        assert _touch_audits(session) == 1
        data = build_report(
            session, load_policies(), since=MONDAY - timedelta(days=1), until=LATER, now=LATER
        )
    by_source = {row["source"]: row["answered"] for row in summary_figures(data)["by_touch_source"]}
    assert by_source == {"crm": 1}


def test_a_completed_task_stops_the_clock_at_its_completion_time(
    sf_double: SalesforceDouble, mapping: LeadMapping, session_factory: sessionmaker[Session]
) -> None:
    crm = _crm(sf_double, mapping)
    leads = _seed(session_factory, sf_double, crm, ["e1", "e2"])
    called = MONDAY + timedelta(minutes=25)
    # an open task is no touch; the completed call is, at its CompletedDateTime
    sf_double.add_task({"WhoId": leads["e2"], "Subject": "Call back"}, by=SDR, at=called)
    task_id = sf_double.add_task({"WhoId": leads["e1"], "Subject": "Intro call"}, by=SDR, at=called)
    sf_double.edit_record("Task", task_id, {"Status": "Completed"}, by=SDR, at=called)
    # edited later (a note added): LastModifiedDate moves, CompletedDateTime stays
    sf_double.edit_record(
        "Task", task_id, {"Description": "left a voicemail too"}, by=SDR, at=LATER - timedelta(hours=1)
    )

    summary = _poll(session_factory, crm)
    assert (summary.tasks_seen, summary.clocks_stopped) == (1, 1)
    with session_factory() as session:
        timer = _timer(session, "e1")
        assert (timer.stopped_at, timer.stopped_by, timer.touch_source) == (
            called,
            f"salesforce:{SDR}",
            "crm",
        )
        assert _timer(session, "e2").stopped_at is None
    assert _poll(session_factory, crm, at=LATER + timedelta(minutes=30)).clocks_stopped == 0


def test_the_earliest_touch_wins_between_crm_and_mailbox(
    sf_double: SalesforceDouble, mapping: LeadMapping, session_factory: sessionmaker[Session]
) -> None:
    crm = _crm(sf_double, mapping)
    leads = _seed(session_factory, sf_double, crm, ["early_mail", "late_mail", "after_crm"])
    crm_at = MONDAY + timedelta(minutes=40)
    with transaction(session_factory) as session:
        # seen before the poll: one mailbox touch earlier than the CRM's, one later
        record_touch(
            session, "early_mail", by="sue", at=MONDAY + timedelta(minutes=20), source="mailbox", now=LATER
        )
        record_touch(
            session, "late_mail", by="sue", at=MONDAY + timedelta(minutes=90), source="mailbox", now=LATER
        )
    for enquiry_id in leads:
        sf_double.edit_record("Lead", leads[enquiry_id], {"Status": "Working - Contacted"}, by=SDR, at=crm_at)

    summary = _poll(session_factory, crm)
    assert sorted(summary.stopped) == ["after_crm", "late_mail"]
    with transaction(session_factory) as session:
        stops = {i: (_timer(session, i).stopped_at, _timer(session, i).touch_source) for i in leads}
        assert stops == {
            "early_mail": (MONDAY + timedelta(minutes=20), "mailbox"),  # the earlier mail stays
            "late_mail": (crm_at, "crm"),  # the CRM touch was earlier: it replaces the mail's
            "after_crm": (crm_at, "crm"),
        }
        # a mailbox touch seen after the poll but made later changes nothing ...
        later = record_touch(
            session, "after_crm", by="sue", at=crm_at + timedelta(minutes=5), source="mailbox", now=LATER
        )
        assert later.stopped is False
        # ... and one made earlier wins over the CRM's
        earlier = record_touch(
            session, "late_mail", by="sue", at=crm_at - timedelta(minutes=5), source="mailbox", now=LATER
        )
        assert earlier.stopped is True
    with session_factory() as session:
        assert (_timer(session, "after_crm").touch_source, _timer(session, "late_mail").touch_source) == (
            "crm",
            "mailbox",
        )


def test_paging_by_limit_and_next_records_url_reads_every_lead_once(
    sf_double: SalesforceDouble, mapping: LeadMapping, session_factory: sessionmaker[Session]
) -> None:
    crm = _crm(sf_double, mapping)
    ids = [f"e{n}" for n in range(7)]
    leads = _seed(session_factory, sf_double, crm, ids)
    same_second = MONDAY + timedelta(minutes=30)  # a mass update: one LastModifiedDate for five leads
    for n, enquiry_id in enumerate(ids):
        at = same_second if n < 5 else same_second + timedelta(minutes=n)
        sf_double.edit_record("Lead", leads[enquiry_id], {"Status": "Working - Contacted"}, by=OTHER, at=at)
    sf_double.query_batch_size = 2  # every answer of more than two records is paged by nextRecordsUrl

    summary = _poll(session_factory, crm, touch_query_limit=3)  # no team list, no users: every lead of ours
    assert (summary.leads_seen, summary.clocks_stopped) == (7, 7)
    assert summary.pages >= 4  # LIMIT 3 cut into pages of 2, three queries
    with session_factory() as session:
        assert {_timer(session, i).touch_source for i in ids} == {"crm"}
        assert _touch_audits(session) == 7
    assert _poll(session_factory, crm, at=LATER + timedelta(hours=1)).leads_seen == 0


def test_leads_owned_outside_the_team_are_not_read(
    sf_double: SalesforceDouble, mapping: LeadMapping, session_factory: sessionmaker[Session]
) -> None:
    crm = _crm(sf_double, mapping)
    leads = _seed(session_factory, sf_double, crm, ["ours", "theirs"])
    at = MONDAY + timedelta(minutes=30)
    sf_double.edit_record(
        "Lead", leads["ours"], {"Status": "Working - Contacted", "OwnerId": SDR}, by=SDR, at=at
    )
    sf_double.edit_record(
        "Lead", leads["theirs"], {"Status": "Working - Contacted", "OwnerId": OTHER}, by=OTHER, at=at
    )
    summary = _poll(session_factory, crm, team_owner_ids=[SDR], open_statuses=["Open - Not Contacted", "New"])
    assert (summary.leads_seen, summary.stopped) == (1, ["ours"])
    with session_factory() as session:
        assert _timer(session, "theirs").stopped_at is None


def test_the_double_answers_soql_as_salesforce_does(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    crm = _crm(sf_double, mapping)
    task_id = sf_double.add_task({"Subject": "x", "Status": "Completed"}, by=SDR, at=MONDAY)
    [[task]] = list(crm.query_pages("SELECT Id, CompletedDateTime, LastModifiedDate FROM Task"))
    assert (task["Id"], task["CompletedDateTime"]) == (task_id, "2026-03-02T09:00:00.000+0000")
    quoted = "SELECT Id FROM Task WHERE LastModifiedDate > '2026-03-02T00:00:00Z'"
    with pytest.raises(Exception, match="must be of type dateTime"):
        list(crm.query_pages(quoted))
    after = "SELECT Id FROM Task WHERE LastModifiedDate >= 2026-03-02T09:00:00Z AND Status = 'completed'"
    assert [len(page) for page in crm.query_pages(after)] == [1]  # text compares without case
    later = "SELECT Id FROM Task WHERE LastModifiedDate > 2026-03-02T10:00:00+01:00"
    assert [len(page) for page in crm.query_pages(later)] == [0]  # 09:00Z is not after 09:00Z


def test_cli_poll_touches(
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    db_url: str,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
) -> None:
    crm = _crm(sf_double, mapping)
    leads = _seed(session_factory, sf_double, crm, ["e1"])
    sf_double.edit_record(
        "Lead", leads["e1"], {"Status": "Working - Contacted"}, by=SDR, at=MONDAY + timedelta(minutes=9)
    )
    env = salesforce_env(sf_double, db_url, tmp_path)
    result = runner.invoke(crm_app, ["poll-touches", "--json"], env=env)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["ok"], payload["clocks_stopped"], payload["stopped"]) == (True, 1, ["e1"])
    again = runner.invoke(crm_app, ["poll-touches"], env=env)
    assert again.exit_code == 0 and "0 completed task(s) read; 0" in again.stdout
    local = runner.invoke(crm_app, ["poll-touches", "--json"], env=env | {"TRIAGE_CRM__BACKEND": "local"})
    assert local.exit_code == 1 and "triage crm touch" in json.loads(local.stdout)["error"]
    # open statuses that leave out the status our own writes set would count every new lead
    wrong = env | {"TRIAGE_SALESFORCE__OPEN_STATUSES": '["New"]'}
    refused = runner.invoke(crm_app, ["poll-touches", "--json"], env=wrong)
    assert refused.exit_code == 1
    assert "writes Lead Status 'Open - Not Contacted'" in json.loads(refused.stdout)["error"]
