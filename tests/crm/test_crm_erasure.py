"""Erasure with the Salesforce backend: the lead and its task are deleted there, through the outbox."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.settings import CrmSettings
from connectors.crm.base import LeadDelete
from connectors.crm.local import LocalCrm
from connectors.crm.mapping import LeadMapping
from connectors.crm.salesforce import SalesforceCrm
from pipeline.crm_sync import drain_outbox
from store.erasure import erase_person
from store.tables import CrmOutbox, LocalLead, LocalTask
from tests.support.salesforce_double import SalesforceDouble

from .builders import StepClock, fill_outbox

KEY = b"k"


def test_an_erased_persons_lead_and_task_are_deleted_in_salesforce_and_nothing_else(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    ids = fill_outbox(session_factory, 3, with_tasks=True)
    crm = SalesforceCrm(sf_double.settings(), CrmSettings(), mapping, bulk_poll_seconds=0.02)
    assert drain_outbox(session_factory, crm, clock=clock).sent == 6
    assert len(sf_double.tasks()) == 3

    result = erase_person(
        session_factory,
        "buyer1@example.com",
        requested_by="dpo",
        key=KEY,
        crm_backend="salesforce",
        clock=clock,
    )
    assert result.counts["crm_deletes_queued"] == 1
    # A re-run queues nothing twice (the delete's key is derived from the enquiry).
    with session_factory() as session:
        deletes = session.scalars(sa.select(CrmOutbox).where(CrmOutbox.operation == "delete_lead")).all()
    assert [row.enquiry_id for row in deletes] == [ids[1]] and deletes[0].payload == {
        "task_keys": [f"task:{ids[1]}"]
    }

    clock.advance(minutes=1)
    summary = drain_outbox(session_factory, crm, clock=clock)
    assert summary.sent_by_operation["delete_lead"] == 1
    leads = sf_double.leads_by_external_id()
    assert set(leads) == {ids[0], ids[2]}
    assert len(sf_double.tasks()) == 2 and all(task["WhoId"] != ids[1] for task in sf_double.tasks())
    # Deleting again (a crash before the outbox row was marked) is harmless.
    again = crm.delete_leads([LeadDelete(f"erase:{ids[1]}", ids[1], (f"task:{ids[1]}",))])
    assert again[0].ok


def test_the_local_drain_settles_a_delete_in_sql(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    ids = fill_outbox(session_factory, 2, with_tasks=True)
    local = LocalCrm(session_factory, clock=clock)
    drain_outbox(session_factory, local, clock=clock)
    with session_factory.begin() as session:
        session.add(
            CrmOutbox(
                idempotency_key=f"erase:{ids[0]}",
                enquiry_id=ids[0],
                operation="delete_lead",
                payload={},
                status="pending",
                attempts=0,
                next_attempt_at=clock(),
                created_at=clock(),
            )
        )
    assert drain_outbox(session_factory, local, clock=clock).sent_by_operation["delete_lead"] == 1
    with session_factory() as session:
        assert set(session.scalars(sa.select(LocalLead.external_id))) == {ids[1]}
        assert set(session.scalars(sa.select(LocalTask.lead_external_id))) == {ids[1]}
