"""The review service on SQLite and PostgreSQL: ordering, claims (also under contention), actions, audit."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from review import service
from store.tables import Correction, DecisionRow, Enquiry, EnquiryMessage, ReviewItem, SlaTimer
from tests.review.review_builders import NOW, add_enquiry_with_item, add_users


def _kinds(session: Session, enquiry_id: str) -> list[str]:
    rows = session.scalars(
        sa.select(DecisionRow.kind).where(DecisionRow.enquiry_id == enquiry_id).order_by(DecisionRow.id)
    )
    return list(rows)


def test_queue_is_ordered_by_due_time_with_time_left_and_breaches(session: Session) -> None:
    late, _ = add_enquiry_with_item(session, subject="late", due_in_minutes=-30)
    later, _ = add_enquiry_with_item(session, subject="later", due_in_minutes=240)
    soon, _ = add_enquiry_with_item(session, subject="soon", due_in_minutes=10)
    undated, _ = add_enquiry_with_item(session, subject="undated", due_in_minutes=None)
    add_enquiry_with_item(session, subject="finished", status="done")
    session.commit()

    page = service.list_queue(session, now=NOW)

    assert [entry.item_id for entry in page.entries] == [late, soon, later, undated]
    assert page.total == 4
    first = page.entries[0]
    assert first.breached and first.seconds_left == -30 * 60
    assert not page.entries[1].breached and page.entries[1].seconds_left == 600
    assert page.entries[3].seconds_left is None and not page.entries[3].breached
    assert service.format_time_left(first.seconds_left) == "overdue 30m"
    assert service.format_time_left(125 * 60) == "2h 05m"


def test_queue_filters_by_queue_intent_lane_and_pages(session: Session) -> None:
    add_enquiry_with_item(session, intent="billing", queue="finance", lane="human_only")
    support, _ = add_enquiry_with_item(session, intent="support", queue="support", lane="hybrid")
    for minutes in range(5):
        add_enquiry_with_item(session, due_in_minutes=minutes)
    session.commit()

    assert [e.item_id for e in service.list_queue(session, queue="support", now=NOW).entries] == [support]
    assert service.list_queue(session, intent="billing", now=NOW).total == 1
    assert service.list_queue(session, lane="human_only", now=NOW).entries[0].intent == "billing"
    assert service.list_queue(session, lane="hybrid", intent="sales_demo", now=NOW).total == 5
    second = service.list_queue(session, now=NOW, limit=3, offset=3)
    assert len(second.entries) == 3 and second.total == 7


def test_claim_is_exclusive_and_leaves_the_first_response_clock_running(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session)
    session.commit()

    assert service.claim(session, item_id, user="sam", now=NOW)
    session.commit()
    assert not service.claim(session, item_id, user="sue", now=NOW)
    assert service.claim(session, item_id, user="sam", now=NOW)  # holding it already
    session.commit()

    item = session.get(ReviewItem, item_id)
    assert item is not None and item.status == "claimed" and item.claimed_by == "sam"
    timer = session.scalars(sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id)).one()
    # a claim answers no customer (issue 17): the clock runs on
    assert timer.status == "running" and timer.stopped_at is None and timer.stopped_by is None
    assert _kinds(session, enquiry_id) == ["claim"]


def test_two_workers_claiming_at_once_one_wins(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        items = [add_enquiry_with_item(session)[0] for _ in range(20)]
        session.commit()
    barrier = threading.Barrier(2)
    wins: dict[str, list[int]] = {"sam": [], "sue": []}

    def worker(user: str) -> None:
        with session_factory() as session:
            for item_id in items:
                barrier.wait(timeout=30)
                if service.claim(session, item_id, user=user, now=NOW):
                    wins[user].append(item_id)
                session.commit()

    threads = [threading.Thread(target=worker, args=(user,)) for user in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(wins["sam"] + wins["sue"]) == sorted(items), "every item claimed exactly once"
    with session_factory() as session:
        holders = {row[0]: row[1] for row in session.execute(sa.select(ReviewItem.id, ReviewItem.claimed_by))}
        claims = session.scalar(sa.select(sa.func.count()).where(DecisionRow.kind == "claim"))
    assert all(holders[item_id] == "sam" for item_id in wins["sam"])
    assert all(holders[item_id] == "sue" for item_id in wins["sue"])
    assert claims == len(items)


def test_correction_is_a_training_label_and_an_audit_row(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session)
    session.commit()

    service.correct(session, item_id, user="sam", intent="pricing", priority="urgent", queue="sales", now=NOW)
    session.commit()

    label = session.scalars(sa.select(Correction)).one()
    assert (label.enquiry_id, label.corrected_by, label.intent, label.priority, label.queue) == (
        enquiry_id,
        "sam",
        "pricing",
        "urgent",
        "sales",
    )
    assert label.previous == {"intent": "sales_demo", "priority": "high", "queue": "sales"}
    assert label.model_version == "m-2026-11-01"
    enquiry = session.get(Enquiry, enquiry_id)
    assert enquiry is not None and (enquiry.intent, enquiry.priority) == ("pricing", "urgent")
    audit = session.scalars(sa.select(DecisionRow).where(DecisionRow.kind == "correction")).one()
    assert audit.actor == "sam" and audit.intent == "pricing" and audit.policy_version == "human"
    assert "intent: sales_demo → pricing" in audit.reasons
    # acting on an open item claims it first: claim, then correction
    assert _kinds(session, enquiry_id) == ["claim", "correction"]
    timer = session.scalars(sa.select(SlaTimer)).one()
    assert timer.stopped_at is None, "a correction is not a first response"


def test_correction_refuses_values_outside_the_vocabulary(session: Session) -> None:
    item_id, _ = add_enquiry_with_item(session)
    session.commit()
    with pytest.raises(service.ReviewError, match="intent must be one of"):
        service.correct(session, item_id, user="sam", intent="lunch", priority="high", queue="sales", now=NOW)


def test_someone_elses_item_refuses_actions_unless_override(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session, status="claimed", claimed_by="sue")
    session.commit()

    with pytest.raises(service.ItemClaimedError, match="claimed by sue"):
        service.accept(session, item_id, user="sam", now=NOW)
    with pytest.raises(service.ItemClaimedError):
        service.mark_replied(session, item_id, user="sam", text="hi", now=NOW)
    session.rollback()
    service.accept(session, item_id, user="olga", now=NOW, override=True)
    session.commit()
    item = session.get(ReviewItem, item_id)
    assert item is not None and item.status == "done" and item.closed_at == NOW
    assert _kinds(session, enquiry_id) == ["accept"]
    timer = session.scalars(sa.select(SlaTimer).where(SlaTimer.kind == "first_response")).one()
    assert timer.status == "running" and timer.stopped_at is None, "accepting answers no customer"


def test_reply_records_the_message_closes_the_item_and_the_first_touch_wins(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session, due_in_minutes=30)
    session.commit()

    service.claim(session, item_id, user="sam", now=NOW)
    session.commit()
    service.mark_replied(
        session, item_id, user="sam", text="Thanks, booked for Tuesday.", now=NOW + timedelta(hours=2)
    )
    session.commit()

    message = session.scalars(sa.select(EnquiryMessage)).one()
    assert (message.direction, message.author, message.body) == (
        "outbound",
        "sam",
        "Thanks, booked for Tuesday.",
    )
    item = session.get(ReviewItem, item_id)
    assert item is not None and item.status == "done"
    timer = session.scalars(sa.select(SlaTimer)).one()
    # the claim did not stop it; the reply, past due, did
    assert timer.stopped_at == NOW + timedelta(hours=2) and timer.status == "breached"
    assert not service.claim(session, item_id, user="sue", now=NOW)
    with pytest.raises(service.ItemClosedError):
        service.accept(session, item_id, user="sue", now=NOW)
    assert _kinds(session, enquiry_id) == ["claim", "reply"]


def test_reply_after_due_time_counts_as_breached(session: Session) -> None:
    item_id, _ = add_enquiry_with_item(session, due_in_minutes=30)
    session.commit()
    service.mark_replied(session, item_id, user="sam", now=NOW + timedelta(minutes=31))
    session.commit()
    timer = session.scalars(sa.select(SlaTimer)).one()
    assert timer.status == "breached" and timer.stopped_by == "sam"


def test_claim_accept_correct_and_note_never_stop_the_first_response_clock(session: Session) -> None:
    item_id, enquiry_id = add_enquiry_with_item(session, due_in_minutes=30)
    session.commit()
    service.claim(session, item_id, user="sam", now=NOW)
    service.add_note(session, item_id, user="sam", text="Will call back.", now=NOW)
    service.correct(session, item_id, user="sam", intent="pricing", priority="high", queue="sales", now=NOW)
    service.accept(session, item_id, user="sam", now=NOW)
    session.commit()
    timer = session.scalars(sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id)).one()
    assert (timer.status, timer.stopped_at, timer.stopped_by) == ("running", None, None)
    item = session.get(ReviewItem, item_id)
    assert item is not None and item.status == "done"


def test_reassign_and_release_and_notes(session: Session) -> None:
    add_users(session)
    item_id, enquiry_id = add_enquiry_with_item(session)
    session.commit()

    service.claim(session, item_id, user="sam", now=NOW)
    service.reassign(session, item_id, user="sam", to_user="sue", now=NOW)
    session.commit()
    item = session.get(ReviewItem, item_id)
    assert item is not None and item.claimed_by == "sue"
    with pytest.raises(service.ItemClaimedError):
        service.reassign(session, item_id, user="sam", to_user=None, now=NOW)
    with pytest.raises(service.ReviewError, match="no user named"):
        service.reassign(session, item_id, user="sue", to_user="nobody", now=NOW)
    service.reassign(session, item_id, user="sue", to_user=None, now=NOW)
    service.add_note(session, item_id, user="sam", text="Customer called too.", now=NOW)
    session.commit()
    assert item.status == "open" and item.claimed_by is None
    notes = session.scalars(sa.select(DecisionRow.reasons).where(DecisionRow.kind == "note")).all()
    assert notes == [["Customer called too."]]
    assert _kinds(session, enquiry_id) == ["claim", "reassign", "reassign", "note"]
    with pytest.raises(service.ItemNotFoundError):
        service.add_note(session, 99_999, user="sam", text="x", now=NOW)
