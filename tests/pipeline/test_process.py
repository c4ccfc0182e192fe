"""The pipeline on SQLite and PostgreSQL: dedupe, threading, quarantine, lanes, crashes and re-runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from models.records import Channel
from pipeline.process import PipelineContext, process_pending
from sla.service import TimerStart
from store.db import make_engine, make_session_factory, transaction, upgrade_schema
from store.flags import set_automation_paused
from store.tables import (
    CrmOutbox,
    DecisionRow,
    Enquiry,
    EnquiryMessage,
    Quarantine,
    RawRecord,
    ReviewItem,
    ShadowPrediction,
    SlaTimer,
)
from tests.builders import chat_json, email_bytes, form_json
from tests.support.pipeline_support import ShadowKeywordModel, store


def count(session: Session, table: type) -> int:
    return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def table_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return {
            t.__tablename__: count(session, t)
            for t in (Enquiry, EnquiryMessage, DecisionRow, CrmOutbox, ReviewItem, SlaTimer, Quarantine)
        }


def statuses(factory: sessionmaker[Session]) -> dict[str, str]:
    with factory() as session:
        return {r.external_key: r.status for r in session.scalars(sa.select(RawRecord))}


def test_email_dedupe_threading_skips_and_quarantine(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    mails = [
        email_bytes(message_id="<a@x>"),  # 0 new
        email_bytes(message_id="<a@x>"),  # 1 exact duplicate
        email_bytes(message_id="<a@x>", body="A different text that reuses the Message-ID."),  # 2 new
        email_bytes(
            message_id="<b@x>",
            subject="Re: Demo request for our sales team",
            body="Tuesday works.",
            in_reply_to="<a@x>",
        ),  # 3 reply by header
        email_bytes(
            message_id="<c@x>", subject="RE: demo request for our  sales team", body="Also Thursday?"
        ),  # 4 by subject
        email_bytes(
            message_id="<d@x>", subject="Out of office", headers={"Auto-Submitted": "auto-replied"}
        ),  # 5
        b"\x00\x01\x02 not a mail at all",  # 6 quarantined
    ]
    store(session_factory, Channel.EMAIL, mails)
    summary = process_pending(session_factory, context, batch_size=3)

    assert statuses(session_factory) == {
        "email-0": "enquiry",
        "email-1": "duplicate",
        "email-2": "enquiry",
        "email-3": "threaded",
        "email-4": "threaded",
        "email-5": "skipped",
        "email-6": "quarantined",
    }
    assert sum(summary.outcomes.values()) == summary.processed == 7
    with session_factory() as session:
        first = session.scalar(
            sa.select(Enquiry).where(Enquiry.message_key == "a@x").order_by(Enquiry.created_at)
        )
        assert first is not None
        bodies = sorted(m.body for m in session.scalars(sa.select(EnquiryMessage)))
        assert bodies == ["Also Thursday?", "Tuesday works."]
        quarantined = session.scalars(sa.select(Quarantine)).one()
        assert "not an email" in quarantined.reason or "no RFC 822" in quarantined.reason
        assert count(session, DecisionRow) == count(session, Enquiry) == 2


def test_rerun_changes_nothing(session_factory: sessionmaker[Session], context: PipelineContext) -> None:
    store(
        session_factory,
        Channel.EMAIL,
        [email_bytes(message_id=f"<m{i}@x>", body=f"Demo please, team of {i}") for i in range(5)],
    )
    store(
        session_factory,
        Channel.FORM,
        [form_json(submission_id=f"f{i}", message=f"What does it cost for {i} seats?") for i in range(5)],
    )
    process_pending(session_factory, context)
    before = table_counts(session_factory)
    store(
        session_factory,
        Channel.EMAIL,
        [email_bytes(message_id=f"<m{i}@x>", body=f"Demo please, team of {i}") for i in range(5)],
    )
    second = process_pending(session_factory, context)
    assert second.processed == 0  # the same source keys are not stored again
    assert table_counts(session_factory) == before
    assert before["enquiries"] == 10 and before["decisions"] == 10


def test_enquiry_ids_grow_with_intake_and_a_record_keeps_its_id(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    """Ids in intake order keep every index keyed by an enquiry id appending at one end (ingest at 1M
    stored enquiries, docs/benchmarks.md); a record processed again derives the id it had."""
    from pipeline.normalise import enquiry_id_for
    from store.raw import PendingRecord

    store(
        session_factory,
        Channel.EMAIL,
        [email_bytes(message_id=f"<order{i}@x>", body=f"Pricing for {i} seats, please") for i in range(40)],
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        rows = session.execute(sa.select(Enquiry.raw_id, Enquiry.id).order_by(Enquiry.raw_id)).all()
        raws = {r.id: r for r in session.scalars(sa.select(RawRecord))}
    ids = [enquiry_id for _, enquiry_id in rows]
    assert len(ids) == 40 and ids == sorted(ids) and len(set(ids)) == 40
    assert all(len(i) == 32 and int(i, 16) >= 0 and i[12] == "5" for i in ids)
    for raw_id, enquiry_id in rows:
        raw = raws[raw_id]
        again = PendingRecord(raw.id, raw.source, raw.channel, raw.external_key, b"", raw.received_at)
        assert enquiry_id_for(again) == enquiry_id
    # The same raw id with another key is another enquiry: the hash part tells them apart.
    first = raws[rows[0][0]]
    other = PendingRecord(
        first.id, first.source, first.channel, first.external_key + "x", b"", first.received_at
    )
    assert enquiry_id_for(other) != ids[0] and enquiry_id_for(other)[:12] == ids[0][:12]


def test_crash_mid_run_loses_and_doubles_nothing(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    store(
        session_factory,
        Channel.FORM,
        [form_json(submission_id=f"f{i}", message=f"Need a demo for {i} people") for i in range(9)],
    )
    real_start = context.start_timers
    calls = {"n": 0}

    def crash_on_second_batch(session: Session, requests: Sequence[TimerStart]) -> dict[str, datetime]:
        calls["n"] += 1
        if calls["n"] == 2:
            # The database going away (not a record's fault: a record's would be isolated and retried).
            raise sa_exc.OperationalError("power cut", None, ConnectionError("power cut"))
        return real_start(session, requests)

    context.start_timers = crash_on_second_batch
    with pytest.raises(sa_exc.OperationalError, match="power cut"):
        process_pending(session_factory, context, batch_size=4)
    assert table_counts(session_factory)["enquiries"] == 4  # batch 1 committed, batch 2 rolled back whole
    context.start_timers = real_start
    process_pending(session_factory, context, batch_size=4)
    counts = table_counts(session_factory)
    assert counts["enquiries"] == counts["decisions"] == counts["sla_timers"] // 2 == 9
    assert set(statuses(session_factory).values()) == {"enquiry"}


def test_forms_honeypot_and_validation(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    store(
        session_factory,
        Channel.FORM,
        [
            form_json(submission_id="ok", message="Can I get a demo?"),
            form_json(submission_id="bot", website="http://seo.example", message="Cheap backlinks"),
            form_json(submission_id="bad", message=""),
            b"{not json",
        ],
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        bot = session.scalar(sa.select(Enquiry).where(Enquiry.message_key == "form:bot"))
        assert bot is not None and bot.intent == "spam" and bot.lane == "automate"
        assert bot.model_version == "rule:honeypot"
        keys = set(session.scalars(sa.select(CrmOutbox.idempotency_key)))
        assert f"lead:{bot.id}" not in keys  # spam never becomes a lead
        reasons = sorted(q.reason for q in session.scalars(sa.select(Quarantine)))
        assert any("message" in r for r in reasons) and any("not valid JSON" in r for r in reasons)


def test_chat_continuation_threads_only_new_messages(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    store(session_factory, Channel.CHAT, [chat_json("c-9", ("Hi, can I book a demo?",))], source="chat-a")
    process_pending(session_factory, context)
    store(
        session_factory,
        Channel.CHAT,
        [
            chat_json("c-9", ("Hi, can I book a demo?", "For 30 people, ideally Friday.")),
            chat_json("c-9", ("Hi, can I book a demo?", "For 30 people, ideally Friday.")),
        ],
        source="chat-b",
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        assert count(session, Enquiry) == 1
        assert [m.body for m in session.scalars(sa.select(EnquiryMessage))] == [
            "For 30 people, ideally Friday."
        ]
    with session_factory() as session:
        assert sorted(session.scalars(sa.select(RawRecord.status))) == ["duplicate", "enquiry", "threaded"]


def test_lanes_kill_switch_abstention_and_arr(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    store(
        session_factory,
        Channel.EMAIL,
        [
            email_bytes(message_id="<1@x>", body="We want a demo."),
            email_bytes(message_id="<2@x>", body="maybe we want something"),
            email_bytes(
                message_id="<3@x>", sender="CIO <cio@megacorp-industries.com>", body="Demo for 5,000 staff"
            ),
        ],
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        lanes = {e.message_key: e.lane for e in session.scalars(sa.select(Enquiry))}
        assert lanes == {"1@x": "automate", "2@x": "human_only", "3@x": "hybrid"}
        reasons = {d.enquiry_id: d.reasons for d in session.scalars(sa.select(DecisionRow))}
        assert any("ARR" in " ".join(r) for r in reasons.values())
        # the two that go to people, and the day's spot check of the automated one (issue 13)
        assert count(session, ReviewItem) == 3
        assert session.scalars(sa.select(ReviewItem.lane).where(ReviewItem.lane == "automate")).all() == [
            "automate"
        ]
    with transaction(session_factory) as session:
        set_automation_paused(session, True, reason="model drift under investigation", by="ops")
    store(
        session_factory,
        Channel.EMAIL,
        [email_bytes(message_id="<4@x>", body="Another demo please")],
        source="later",
    )
    process_pending(session_factory, context)
    with session_factory() as session:
        paused = session.scalar(sa.select(Enquiry).where(Enquiry.message_key == "4@x"))
        assert paused is not None and paused.lane == "human_only"
        row = session.scalar(sa.select(DecisionRow).where(DecisionRow.enquiry_id == paused.id))
        assert row is not None and any("paused: model drift" in r for r in row.reasons)
        assert row.policy_version == context.policy.version


def test_no_model_sends_everything_to_people(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    context.model = None
    store(session_factory, Channel.EMAIL, [email_bytes(message_id="<n@x>")])
    process_pending(session_factory, context)
    with session_factory() as session:
        enquiry = session.scalars(sa.select(Enquiry)).one()
        assert enquiry.lane == "human_only" and enquiry.model_version == "none"


def test_worker_processes_prepare_ahead_and_change_nothing(
    session_factory: sessionmaker[Session], context: PipelineContext, tmp_path: Path
) -> None:
    """Parsing, enriching and classifying in worker processes, a batch ahead, gives the inline result."""
    mails = [email_bytes(message_id=f"<w{i}@x>", body=f"Demo please, team of {i}") for i in range(23)]
    mails[5] = b"not a mail"
    mails[9] = email_bytes(message_id="<w1@x>", body="Demo please, team of 1")  # a duplicate
    store(session_factory, Channel.EMAIL, mails)
    context.parse_workers = 2
    context.parallel_minimum = 1
    summary = process_pending(session_factory, context, batch_size=4)
    with session_factory() as session:
        parallel = sorted(
            (e.message_key, e.intent, e.lane, e.confidence, e.enrichment["segment"])
            for e in session.scalars(sa.select(Enquiry))
        )
        statuses = sorted(session.scalars(sa.select(RawRecord.status)))
    assert summary.processed == 23 and summary.batches == 6
    assert statuses.count("quarantined") == 1 and statuses.count("duplicate") == 1
    assert {"normalise", "classify"} <= set(summary.stage_seconds)

    inline = tmp_path / "inline.db"
    engine = make_engine(f"sqlite:///{inline}")
    upgrade_schema(engine)
    factory = make_session_factory(engine)
    store(factory, Channel.EMAIL, mails)
    context.parse_workers = 1
    process_pending(factory, context, batch_size=4)
    with factory() as session:
        expected = sorted(
            (e.message_key, e.intent, e.lane, e.confidence, e.enrichment["segment"])
            for e in session.scalars(sa.select(Enquiry))
        )
    engine.dispose()
    assert parallel == expected and len(expected) == 21


@pytest.mark.parametrize("workers", [1, 2])
def test_a_shadow_model_is_scored_beside_the_active_one_and_never_acts(
    session_factory: sessionmaker[Session], context: PipelineContext, workers: int
) -> None:
    context.shadow = ShadowKeywordModel()
    context.parse_workers, context.parallel_minimum = workers, 1
    store(
        session_factory,
        Channel.EMAIL,
        [email_bytes(message_id=f"<s{i}@x>", body=f"What does it cost, {i}?") for i in range(7)],
    )
    process_pending(session_factory, context, batch_size=3)
    with session_factory() as session:
        enquiries = list(session.scalars(sa.select(Enquiry)))
        shadows = {row.enquiry_id: row for row in session.scalars(sa.select(ShadowPrediction))}
    assert len(enquiries) == 7 and set(shadows) == {e.id for e in enquiries}
    assert {e.intent for e in enquiries} == {"pricing"} and {e.model_version for e in enquiries} == {
        "test-keywords"
    }
    assert {(s.intent, s.model_version) for s in shadows.values()} == {("support", "test-shadow")}


def _deeply_nested_multipart(depth: int) -> bytes:
    head = b"From: x@y.example\r\nSubject: nested\r\nMessage-ID: <deep@x>\r\n"
    parts = [head]
    for level in range(depth):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode())
    parts.append(b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    for level in reversed(range(depth)):
        parts.append(f"--b{level}--\r\n".encode())
    return b"".join(parts)


def test_a_record_whose_parser_raises_anything_is_quarantined_and_the_batch_goes_on(
    session_factory: sessionmaker[Session], context: PipelineContext
) -> None:
    # 2,000 nested multiparts made the stdlib parser raise RecursionError and stopped the whole batch;
    # now the nesting limit refuses it before the parser runs (issue 16).
    mails = [_deeply_nested_multipart(2_000), email_bytes(message_id="<good@x>")]
    store(session_factory, Channel.EMAIL, mails)
    process_pending(session_factory, context, batch_size=10)

    assert statuses(session_factory) == {"email-0": "quarantined", "email-1": "enquiry"}
    with session_factory() as session:
        reason = session.scalars(sa.select(Quarantine)).one().reason
    assert "nested" in reason
