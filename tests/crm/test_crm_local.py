"""The local CRM backend and the outbox drain, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from connectors.crm.base import LeadWrite, TaskWrite
from connectors.crm.local import LocalCrm
from pipeline.crm_sync import drain_outbox
from store import local_crm, outbox
from store.tables import CrmOutbox, LocalLead, LocalTask

from .builders import StepClock, fill_outbox, insert_enquiries, lead_payload


def test_upsert_creates_once_then_updates(session_factory: sessionmaker[Session], clock: StepClock) -> None:
    crm = LocalCrm(session_factory, clock=clock)
    first = crm.upsert_leads([LeadWrite("lead:a", "a", {"email": "a@x.com"}), LeadWrite("lead:b", "b", {})])
    again = crm.upsert_leads(
        [LeadWrite("lead:a", "a", {"email": "new@x.com"}), LeadWrite("lead:a", "a", {"email": "last@x.com"})]
    )
    assert all(result.ok for result in first + again)
    assert again[0].crm_id == first[0].crm_id and first[0].crm_id != first[1].crm_id
    with session_factory() as session:
        assert local_crm.count_leads(session) == 2
        lead = session.scalars(sa.select(LocalLead).where(LocalLead.external_id == "a")).one()
        assert lead.fields == {"email": "last@x.com"}  # the last write of a batch wins


def test_tasks_are_created_once_and_need_their_lead(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    crm = LocalCrm(session_factory, clock=clock)
    crm.upsert_leads([LeadWrite("lead:a", "a", {})])
    tasks = [TaskWrite("task:a", "a", {"subject": "Call"}), TaskWrite("task:z", "z", {"subject": "Call"})]
    first, second = crm.create_tasks(tasks), crm.create_tasks(tasks)
    assert first[0].ok and first[0].crm_id == second[0].crm_id
    assert not first[1].ok and first[1].error == "no lead z"
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(LocalTask)) == 1
    assert crm.check().ok


def test_drain_sends_leads_and_tasks_once_and_a_rerun_sends_nothing(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    # Leads and tasks in one batch: on SQLite this once held the write lock across the task write (30 s).
    fill_outbox(session_factory, 30, with_tasks=True)
    crm = LocalCrm(session_factory, clock=clock)
    summary = drain_outbox(session_factory, crm, batch_size=100, clock=clock)
    assert (summary.sent, summary.retried, summary.failed, summary.stopped_by) == (60, 0, 0, None)
    with session_factory() as session:
        assert outbox.counts_by_status(session) == {"sent": 60}
        assert local_crm.count_leads(session) == 30
        assert session.scalar(sa.select(sa.func.count()).select_from(LocalTask)) == 30
        sent_ids = {row.crm_id for row in session.scalars(sa.select(CrmOutbox))}
    assert len(sent_ids) == 60

    rerun = drain_outbox(session_factory, crm, batch_size=100, clock=clock)
    assert (rerun.sent, rerun.batches) == (0, 0)
    with session_factory() as session, session.begin():
        eid = session.scalars(sa.select(CrmOutbox.enquiry_id)).first()
        assert eid is not None
        again = [
            {"idempotency_key": f"lead:{eid}", "enquiry_id": eid, "operation": "upsert_lead", "payload": {}}
        ]
        assert outbox.enqueue(session, again, now=clock()) == 0


def test_a_task_waits_for_its_lead_without_spending_attempts(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    with session_factory() as session, session.begin():
        (eid,) = insert_enquiries(session, 1)
        outbox.enqueue(
            session,
            [
                {
                    "idempotency_key": f"task:{eid}",
                    "enquiry_id": eid,
                    "operation": "create_task",
                    "payload": {"subject": "Call"},
                }
            ],
            now=clock(),
        )
    crm = LocalCrm(session_factory, clock=clock)
    drain_outbox(session_factory, crm, clock=clock, backoff_seconds=10)
    with session_factory() as session:
        task = session.scalars(sa.select(CrmOutbox)).one()
        assert (task.status, task.attempts, task.last_error) == ("pending", 0, "waiting for the lead")
    with session_factory() as session, session.begin():
        outbox.enqueue(
            session,
            [
                {
                    "idempotency_key": f"lead:{eid}",
                    "enquiry_id": eid,
                    "operation": "upsert_lead",
                    "payload": lead_payload(eid, 0),
                }
            ],
            now=clock(),
        )
    clock.advance(seconds=11)
    summary = drain_outbox(session_factory, crm, clock=clock)
    assert summary.sent == 2


def test_a_drain_that_dies_before_commit_leaves_crm_and_outbox_as_they_were(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    """The local CRM is written in the outbox's own transaction: both change, or neither does."""
    fill_outbox(session_factory, 5, with_tasks=True)
    with session_factory() as session:
        ids = outbox.claim_due_ids(session, limit=100, now=clock())
        sent = local_crm.deliver_from_outbox(session, ids, now=clock(), retry_at=clock())
        assert sent == {"upsert_lead": 5, "create_task": 5}
        session.rollback()  # the process dies here
    with session_factory() as session:
        assert outbox.counts_by_status(session) == {"pending": 10}
        assert local_crm.count_leads(session) == 0
    assert drain_outbox(session_factory, LocalCrm(session_factory, clock=clock), clock=clock).sent == 10


def test_the_newest_write_of_a_lead_wins_within_a_batch(
    session_factory: sessionmaker[Session], clock: StepClock
) -> None:
    (eid,) = fill_outbox(session_factory, 1)
    with session_factory() as session, session.begin():
        update = {"idempotency_key": f"lead-update:{eid}", "enquiry_id": eid, "operation": "upsert_lead"}
        outbox.enqueue(
            session, [{**update, "payload": lead_payload(eid, 0, company="Renamed Ltd")}], now=clock()
        )
    summary = drain_outbox(session_factory, LocalCrm(session_factory, clock=clock), clock=clock)
    assert summary.sent_by_operation == {"upsert_lead": 2}
    with session_factory() as session:
        lead = session.scalars(sa.select(LocalLead)).one()
        assert lead.fields["company"] == "Renamed Ltd"
        assert {row.crm_id for row in session.scalars(sa.select(CrmOutbox))} == {f"L{lead.id}"}
