"""Retention on SQLite and PostgreSQL: old bodies go in batches, rows and keys stay, open work is kept."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.retention import RetentionPolicy, load_retention
from config.settings import DEFAULT_POLICY_DIR
from connectors.crm.local import LocalCrm
from models.errors import ConfigError
from models.records import Channel
from pipeline.crm_sync import drain_outbox
from pipeline.process import PipelineContext, process_pending
from store import retention
from store.db import transaction
from store.tables import CrmOutbox, Enquiry, RawRecord, ReviewItem, SlaTimer
from tests.builders import T0, email_bytes
from tests.support.pipeline_support import context, store  # noqa: F401 - the fixture

POLICY = RetentionPolicy(
    version=1,
    batch_size=2,
    outbox_payloads={"days": 30},
    raw_bodies={"days": 90},
    enquiry_bodies={"days": 365, "keep_subject": True, "keep_body_chars": 20, "keep_corrected": True},
)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def fill(factory: sessionmaker[Session], context: PipelineContext, count: int = 5) -> None:  # noqa: F811
    mails = [
        email_bytes(
            message_id=f"<m{i}@x>",
            sender=f"Buyer {i} <buyer{i}@example.com>",
            subject=f"Pricing question {i}",
            body=f"What would it cost for {i} seats? Call +1 415 555 01{i:02d} or mail buyer{i}@example.com",
        )
        for i in range(count)
    ]
    store(factory, Channel.EMAIL, mails)
    process_pending(factory, dataclasses.replace(context, clock=lambda: T0))
    drain_outbox(factory, LocalCrm(factory, clock=lambda: at(0)), clock=lambda: at(0))


def close_all_work(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        session.execute(sa.update(ReviewItem).values(status="done", closed_at=T0))
        session.execute(sa.update(SlaTimer).values(status="met", stopped_at=T0))


def test_the_default_policy_loads_and_a_bad_one_names_file_and_field(tmp_path: Path) -> None:
    policy = load_retention(DEFAULT_POLICY_DIR)
    assert policy.outbox_payloads.days == 30 and policy.enquiry_bodies.keep_corrected
    (tmp_path / "retention.yaml").write_text("version: 1\nraw_bodies:\n  days: -3\n")
    with pytest.raises(ConfigError) as error:
        load_retention(tmp_path)
    assert "retention.yaml:3: raw_bodies.days" in str(error.value)


def test_prune_empties_old_bodies_in_batches_and_keeps_rows_and_keys(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    fill(session_factory, context)
    close_all_work(session_factory)
    with session_factory() as session:
        keys_before = set(session.execute(sa.select(Enquiry.id, Enquiry.message_key, Enquiry.content_hash)))
        outbox_before = session.execute(sa.select(sa.func.count()).select_from(CrmOutbox)).scalar()

    # Nothing is old enough after ten days.
    assert retention.prune(session_factory, POLICY, clock=lambda: at(10)).outbox_payloads.rows == 0

    dry = retention.prune(session_factory, POLICY, clock=lambda: at(400), dry_run=True)
    assert (
        dry.outbox_payloads.rows == outbox_before
        and dry.raw_bodies.rows == 5
        and dry.enquiry_bodies.rows == 5
    )
    assert dry.raw_bodies.bytes > 0

    # An interrupted run (one batch per pass) loses nothing; the next one goes on from there.
    first = retention.prune(session_factory, POLICY, clock=lambda: at(400), max_batches=1)
    assert first.raw_bodies.rows == 2 and first.enquiry_bodies.rows == 2
    rest = retention.prune(session_factory, POLICY, clock=lambda: at(400))
    assert rest.raw_bodies.rows == 3 and rest.enquiry_bodies.rows == 3
    assert rest.outbox_payloads.rows + first.outbox_payloads.rows == outbox_before
    assert retention.prune(session_factory, POLICY, clock=lambda: at(400), dry_run=True).raw_bodies.rows == 0

    with session_factory() as session:
        assert (
            set(session.execute(sa.select(Enquiry.id, Enquiry.message_key, Enquiry.content_hash)))
            == keys_before
        )
        assert {bytes(p) for p in session.scalars(sa.select(RawRecord.payload))} == {b""}
        writes = session.scalars(sa.select(CrmOutbox)).all()
        assert writes and all(w.payload == {} and w.crm_id and w.payload_pruned_at for w in writes)
        enquiry = session.scalars(sa.select(Enquiry).order_by(Enquiry.id)).first()
        assert enquiry is not None and enquiry.body_pruned_at is not None
        assert len(enquiry.body) <= 20 and "@" not in enquiry.body
        assert enquiry.subject.startswith("Pricing question") and enquiry.intent
    # Re-importing the same source records stores nothing new: the source keys stayed.
    mails = [email_bytes(message_id=f"<m{i}@x>") for i in range(5)]
    store(session_factory, Channel.EMAIL, mails)
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RawRecord)) == 5


def test_prune_keeps_what_open_work_needs(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    fill(session_factory, context, count=3)
    # All review items and timers stay open; one outbox write is still pending, one raw record waits.
    with transaction(session_factory) as session:
        first = session.scalars(sa.select(CrmOutbox.id).order_by(CrmOutbox.id)).first()
        session.execute(sa.update(CrmOutbox).where(CrmOutbox.id == first).values(status="pending"))
    store(session_factory, Channel.EMAIL, [email_bytes(message_id="<late@x>")], source="later")
    open_items = {"open", "claimed"}
    with session_factory() as session:
        people = set(
            session.scalars(sa.select(ReviewItem.enquiry_id).where(ReviewItem.status.in_(open_items)))
        )
        timed = set(session.scalars(sa.select(SlaTimer.enquiry_id).where(SlaTimer.stopped_at.is_(None))))
    summary = retention.prune(session_factory, POLICY, clock=lambda: at(4000))
    with session_factory() as session:
        pending = session.scalars(sa.select(CrmOutbox).where(CrmOutbox.status == "pending")).one()
        assert pending.payload and pending.payload_pruned_at is None
        waiting = session.scalars(sa.select(RawRecord).where(RawRecord.status == "pending")).one()
        assert waiting.payload and waiting.payload_pruned_at is None
        kept = set(session.scalars(sa.select(Enquiry.id).where(Enquiry.body_pruned_at.is_(None))))
    assert people | timed and (people | timed) <= kept
    assert summary.enquiry_bodies.rows == 3 - len(people | timed)


def test_db_size_names_every_table(session_factory: sessionmaker[Session], context: PipelineContext) -> None:  # noqa: F811
    fill(session_factory, context, count=3)
    with session_factory() as session:
        sizes = {item.table: item for item in retention.table_sizes(session)}
    assert {"raw_records", "enquiries", "crm_outbox", "erasures"} <= set(sizes)
    assert sizes["raw_records"].rows == 3 and sizes["raw_records"].bytes > 0
    assert sizes["enquiries"].bytes > 0
