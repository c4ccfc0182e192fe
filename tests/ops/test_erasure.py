"""Erasure on request, on SQLite and PostgreSQL: afterwards the database holds nothing of the person.

The proof is a dump: every value of every table (bytes decoded, JSON as text), and on SQLite also
`iterdump()` (with blobs as hex), searched for the address and the name.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from connectors.crm.local import LocalCrm
from models.records import Channel
from pipeline.crm_sync import drain_outbox
from pipeline.process import PipelineContext, process_pending
from review import service
from store.db import transaction
from store.erasure import erase_person, subject_hmac
from store.tables import Base, CrmOutbox, Enquiry, Erasure, ReviewItem
from tests.builders import T0, email_bytes, form_json
from tests.support.pipeline_support import context, store  # noqa: F401 - the fixture

ADDRESS = "dana@brightwater-analytics.com"
NAME = "Dana Fox"
KEY = b"test-pseudonymisation-key"
SIGNED = (
    "Hello, we would maybe like a demo of your platform for 40 sales reps.\n\nBest, Dana Fox\n+1 415 555 0100"
)


def dump(factory: sessionmaker[Session]) -> str:
    """Every value of every table as text; bytes decoded, so addresses inside raw mail are visible."""
    parts: list[str] = []
    with factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        parts.append(bytes(value).decode("utf-8", "replace"))
                    elif isinstance(value, dict | list):
                        parts.append(json.dumps(value, ensure_ascii=False))
                    else:
                        parts.append(str(value))
    return "\n".join(parts).lower()


def sqlite_dump(factory: sessionmaker[Session]) -> str:
    path = factory.kw["bind"].url.database
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump()).lower()
    finally:
        connection.close()


def build_day(factory: sessionmaker[Session], context: PipelineContext) -> None:  # noqa: F811
    mails = [
        email_bytes(message_id="<d1@bw>", body=SIGNED),
        email_bytes(message_id="<d1@bw>", body=SIGNED),  # a duplicate: its raw bytes name her too
        email_bytes(
            message_id="<d2@bw>",
            subject="Re: Demo request for our sales team",
            body="Tuesday works for us. Dana",
            in_reply_to="<d1@bw>",
        ),
        email_bytes(
            message_id="<o1@nw>",
            sender="Olu Park <olu@northwind-logistics.com>",
            subject="Demo for a second team",
            body="Could we also see a demo? A colleague at Brightwater suggested you.",
        ),
    ]
    store(factory, Channel.EMAIL, mails)
    store(factory, Channel.FORM, [form_json()], source="forms")
    process_pending(factory, dataclasses.replace(context, clock=lambda: T0))

    def later() -> datetime:
        return T0 + timedelta(hours=1)

    drain_outbox(factory, LocalCrm(factory, clock=later), clock=later)
    with transaction(factory) as session:
        item = session.scalar(
            sa.select(ReviewItem)
            .join(Enquiry, Enquiry.id == ReviewItem.enquiry_id)
            .where(Enquiry.sender_email == ADDRESS)
        )
        assert item is not None  # her enquiry went to people ("maybe" makes the model abstain)
        at = T0 + timedelta(hours=2)
        service.add_note(session, item.id, user="maya", text=f"Called {NAME} at {ADDRESS}", now=at)
        service.correct(
            session,
            item.id,
            user="maya",
            intent="pricing",
            priority="high",
            queue="sales",
            now=at,
            override=True,
        )


def test_erasure_leaves_nothing_of_the_person_and_a_tombstone(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    build_day(session_factory, context)
    before = dump(session_factory)
    assert ADDRESS in before and NAME.lower() in before
    assert "sam@northwind-logistics.com" in before

    result = erase_person(
        session_factory, ADDRESS.upper(), requested_by="dpo", key=KEY, clock=lambda: T0 + timedelta(days=3)
    )
    assert result.found
    assert result.counts["enquiries"] == 1 and result.counts["messages"] >= 1
    assert result.counts["raw_records"] >= 3  # first mail, its duplicate, the reply
    assert result.counts["crm_leads"] == 1 and result.counts["corrections"] == 1

    after = dump(session_factory)
    assert ADDRESS not in after
    assert NAME.lower() not in after
    assert "415 555 0100" not in after
    if session_factory.kw["bind"].dialect.name == "sqlite":
        text = sqlite_dump(session_factory)
        assert ADDRESS not in text and ADDRESS.encode().hex() not in text
    # Other people are untouched.
    assert "sam@northwind-logistics.com" in after and "olu@northwind-logistics.com" in after

    with session_factory() as session:
        tombstone = session.scalars(sa.select(Erasure)).one()
        assert tombstone.requested_by == "dpo"
        assert tombstone.subject_hmac == subject_hmac(KEY, ADDRESS)
        assert tombstone.counts["enquiries"] == 1
        assert ADDRESS not in json.dumps(tombstone.counts)
        # The enquiry row stays for the audit and the SLA report, without the person.
        enquiry = session.scalars(sa.select(Enquiry).where(Enquiry.subject == "[erased]")).one()
        assert enquiry.sender_email is None and enquiry.body == ""
        assert {
            row.status
            for row in session.scalars(sa.select(CrmOutbox).where(CrmOutbox.enquiry_id == enquiry.id))
        } <= {"sent", "erased"}


def test_dry_run_changes_nothing_and_an_unknown_address_says_so(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    build_day(session_factory, context)
    before = dump(session_factory)
    dry = erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY, dry_run=True)
    assert dry.found and dry.counts["enquiries"] == 1 and dry.tombstone_id is None
    assert dump(session_factory) == before

    nobody = erase_person(session_factory, "nobody@nowhere.example", requested_by="dpo", key=KEY)
    assert not nobody.found
    # A second, real run erases; a third finds nothing left and still leaves its tombstone.
    assert erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY).found
    assert not erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY).found
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Erasure)) == 3


def test_an_interrupted_erasure_changes_nothing_and_can_be_run_again(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_day(session_factory, context)
    before = dump(session_factory)
    import store.erasure as erasure

    def crash(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(erasure, "insert_ignore", crash)
    with pytest.raises(KeyboardInterrupt):
        erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY, crm_backend="salesforce")
    assert dump(session_factory) == before
    monkeypatch.undo()
    result = erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY, crm_backend="salesforce")
    assert result.counts["crm_deletes_queued"] == 1
    assert ADDRESS not in dump(session_factory)
