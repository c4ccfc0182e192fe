"""Two worker processes on one PostgreSQL database never handle one row twice.

Each test starts two real processes (multiprocessing, spawn) that wait on a barrier and then work the
same rows at once: pending raw records, the CRM outbox, SLA timers and escalations, review claims.
Small batches make the workers interleave; every test also checks that both of them did some work, so
an overlap that never happened cannot pass for safety.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config.settings import Settings
from models.records import Channel
from pipeline.runtime import Runtime
from store.db import make_engine
from store.tables import Base

pytestmark = pytest.mark.slow

RECORDS = 120
BATCH = 5
T0 = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
WORKER_TIMEOUT = 120
ROLE_ADDRESSES = {"ops_lead": "ops@acme-triage.example", "manager": "boss@acme-triage.example"}


# --- what each worker process runs (top-level functions: spawn imports this module) -----------------


def _runtime(url: str, home: str) -> Runtime:
    return Runtime(Settings(home=Path(home), database_url=url))


def _process_worker(url: str, home: str, barrier: Any) -> dict[str, Any]:
    from pipeline.process import process_pending

    runtime = _runtime(url, home)
    context = runtime.pipeline_context()
    barrier.wait()
    summary = process_pending(runtime.factory, context, batch_size=BATCH)
    return {"processed": summary.processed, "enquiries": summary.outcomes.get("enquiry", 0)}


def _drain_worker(url: str, home: str, barrier: Any) -> dict[str, Any]:
    from connectors.crm.local import LocalCrm
    from pipeline.crm_sync import drain_outbox
    from store.tables import CrmOutbox

    runtime = _runtime(url, home)
    backend = LocalCrm(runtime.factory)
    sent = 0
    barrier.wait()
    deadline = time.monotonic() + WORKER_TIMEOUT
    # A task waits (a short backoff) while its lead is in flight in the other worker, so drain until
    # nothing is pending rather than once.
    while time.monotonic() < deadline:
        sent += drain_outbox(runtime.factory, backend, batch_size=BATCH, backoff_seconds=0.05).sent
        with runtime.factory() as session:
            pending = session.scalar(
                sa.select(sa.func.count()).select_from(CrmOutbox).where(CrmOutbox.status == "pending")
            )
        if not pending:
            break
        time.sleep(0.05)
    return {"sent": sent}


def _watch_worker(url: str, home: str, barrier: Any, smtp_port: int, now_iso: str) -> dict[str, Any]:
    from connectors.notify import SmtpNotifier, SmtpSettings
    from sla.watch import watch_pass
    from store.tables import SlaEvent, SlaTimer

    runtime = _runtime(url, home)
    notifier = SmtpNotifier(
        SmtpSettings(host="127.0.0.1", port=smtp_port, starttls=False),
        {role: [address] for role, address in ROLE_ADDRESSES.items()},
    )
    now = datetime.fromisoformat(now_iso)
    totals: Counter[str] = Counter()
    barrier.wait()
    deadline = time.monotonic() + WORKER_TIMEOUT
    while time.monotonic() < deadline:
        summary = watch_pass(runtime.factory, runtime.sla_policies, notifier, now=now, max_timers=BATCH)
        # A pass that finds another pass running steps aside (the watch's advisory lock).
        skipped = any("skipped" in failure for failure in summary.failures)
        totals.update(
            passes=1,
            skipped=int(skipped),
            breached=summary.breached,
            fired=summary.escalations_fired,
            delivered=summary.events_delivered,
            messages=summary.messages_sent,
        )
        with runtime.factory() as session:
            to_check = session.scalar(
                sa.select(sa.func.count()).select_from(SlaTimer).where(SlaTimer.next_check_at <= now)
            )
            unsent = session.scalar(
                sa.select(sa.func.count()).select_from(SlaEvent).where(SlaEvent.sent_at.is_(None))
            )
        if not to_check and not unsent:
            break
        if skipped:
            time.sleep(0.05)
    return dict(totals)


def _claim_worker(url: str, home: str, barrier: Any, user: str, item_ids: list[int]) -> dict[str, Any]:
    from review.service import claim
    from store.db import transaction
    from store.tables import Enquiry, ReviewItem

    runtime = _runtime(url, home)
    with runtime.factory() as session:  # connect and configure the ORM before the race, not during it
        first = session.get(ReviewItem, item_ids[0])
        assert first is not None and session.get(Enquiry, first.enquiry_id) is not None
    won = []
    for item_id in item_ids:
        # Both reach every item together, so each claim is a real race (one process cannot finish the
        # whole list before the other has started).
        barrier.wait()
        with transaction(runtime.factory) as session:
            if claim(session, item_id, user=user):
                won.append(item_id)
    return {"won": won}


def _run_job(
    job: Callable[..., dict[str, Any]], queue: Any, index: int, url: str, home: str, barrier: Any, *args: Any
) -> None:
    try:
        queue.put((index, "ok", job(url, home, barrier, *args)))
    except BaseException as error:  # the parent must hear about any failure, not wait for a timeout
        barrier.abort()
        queue.put((index, "error", f"{type(error).__name__}: {error}"))
        raise


def run_two(
    job: Callable[..., dict[str, Any]], url: str, home: Path, args: tuple[tuple[Any, ...], tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Start `job` in two spawned processes that pass one barrier together; return their results in order."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=90)
    queue = context.Queue()
    processes = [
        context.Process(target=_run_job, args=(job, queue, index, url, str(home), barrier, *extra))
        for index, extra in enumerate(args)
    ]
    for process in processes:
        process.start()
    try:
        results = sorted(queue.get(timeout=WORKER_TIMEOUT + 60) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [detail for _, status, detail in results if status == "error"]
    assert not errors, errors
    return [detail for _, _, detail in results]


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, emptied."""
    engine = make_engine(postgres_url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_url


def form_posts(count: int) -> list[dict[str, Any]]:
    """Distinct form posts (distinct senders and texts, so none is a duplicate or a follow-up)."""
    return [
        {
            "submission_id": f"conc-{index}",
            "form_id": "contact",
            "submitted_at": (T0 + timedelta(minutes=index)).isoformat(),
            "email": f"buyer{index}@company{index}.example",
            "name": f"Buyer {index}",
            "company": f"Company {index}",
            "subject": f"Pricing for {10 + index} seats",
            "message": f"Hello, what would {10 + index} seats cost on annual billing? Reference {index}.",
        }
        for index in range(count)
    ]


@pytest.fixture
def seeded(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, Runtime]]:
    """RECORDS pending form records stored through the file import, as `triage import` stores them."""
    from pipeline import jobs

    home = tmp_path / "home"
    path = tmp_path / "forms.jsonl"
    path.write_text("".join(json.dumps(post) + "\n" for post in form_posts(RECORDS)))
    runtime = _runtime(pg_url, str(home))
    summary = jobs.import_path(runtime, path, Channel.FORM)
    assert summary.stored == RECORDS
    yield pg_url, home, runtime
    runtime.engine.dispose()


@pytest.fixture
def processed(seeded: tuple[str, Path, Runtime]) -> tuple[str, Path, Runtime]:
    """The seeded records processed in this process: enquiries, review items, timers, outbox rows."""
    from pipeline import jobs

    url, home, runtime = seeded
    assert jobs.process(runtime).processed == RECORDS
    return url, home, runtime


def scalar(runtime: Runtime, statement: str) -> Any:
    with runtime.factory() as session:
        return session.execute(sa.text(statement)).scalar()


def rows(runtime: Runtime, statement: str) -> list[tuple[Any, ...]]:
    with runtime.factory() as session:
        return [tuple(row) for row in session.execute(sa.text(statement))]


# --- the tests -----------------------------------------------------------------------------------------


def test_two_workers_process_each_raw_record_once(seeded: tuple[str, Path, Runtime]) -> None:
    url, home, runtime = seeded
    results = run_two(_process_worker, url, home, ((), ()))
    assert all(result["processed"] > 0 for result in results), results  # both really took part
    assert sum(result["processed"] for result in results) == RECORDS
    assert sum(result["enquiries"] for result in results) == RECORDS
    assert scalar(runtime, "SELECT count(*) FROM raw_records WHERE status = 'pending'") == 0
    assert scalar(runtime, "SELECT count(*) FROM enquiries") == RECORDS
    assert scalar(runtime, "SELECT count(DISTINCT raw_id) FROM enquiries") == RECORDS
    # One triage audit row per enquiry (and one assignment row, issue 12), one review item, one lead
    # write each: nothing decided or queued twice.
    assert (
        rows(
            runtime,
            "SELECT enquiry_id FROM decisions WHERE kind IN ('triage', 'assignment') "
            "GROUP BY enquiry_id, kind HAVING count(*) <> 1",
        )
        == []
    )
    assert scalar(runtime, "SELECT count(DISTINCT enquiry_id) FROM decisions") == RECORDS
    assert scalar(runtime, "SELECT count(*) FROM review_items") == RECORDS
    assert scalar(runtime, "SELECT count(*) FROM crm_outbox WHERE operation = 'upsert_lead'") == RECORDS


def test_two_workers_on_sqlite_process_each_raw_record_once(tmp_path: Path) -> None:
    """One machine, SQLite, two intake runs at once: still one audit row per enquiry."""
    from pipeline import jobs

    url = f"sqlite:///{tmp_path / 'triage.db'}"
    home = tmp_path / "home"
    path = tmp_path / "forms.jsonl"
    path.write_text("".join(json.dumps(post) + "\n" for post in form_posts(RECORDS)))
    runtime = _runtime(url, str(home))
    try:
        assert jobs.import_path(runtime, path, Channel.FORM).stored == RECORDS
        results = run_two(_process_worker, url, home, ((), ()))
        assert scalar(runtime, "SELECT count(*) FROM enquiries") == RECORDS
        assert scalar(runtime, "SELECT count(*) FROM decisions WHERE kind = 'triage'") == RECORDS
        assert sum(result["processed"] for result in results) == RECORDS
    finally:
        runtime.engine.dispose()


def test_two_workers_open_one_enquiry_for_a_mail_two_mailboxes_stored(pg_url: str, tmp_path: Path) -> None:
    """The same mail in two mailboxes (cc'd to sales@ and info@) is one enquiry, even with two workers."""
    from models.records import RawRecordIn
    from store import raw
    from store.db import transaction
    from tests.builders import email_bytes

    home = tmp_path / "home"
    runtime = _runtime(pg_url, str(home))
    groups = 8
    for group in range(groups):
        # Batch-sized groups: one worker claims a group's originals while the other claims their copies.
        mails = [
            (
                f"k{group}-{i}",
                email_bytes(
                    message_id=f"<m{group}-{i}@client.example>",
                    sender=f"Person {group}{i} <p{group}{i}@firm{group}{i}.example>",
                    subject=f"Demo request {group}-{i}",
                    body=f"We would like a demo for {group * BATCH + i} people.",
                    sent=T0 + timedelta(minutes=group * BATCH + i),
                ),
            )
            for i in range(BATCH)
        ]
        for source in ("imap:sales", "imap:info"):
            records = [
                RawRecordIn(
                    source=source, channel=Channel.EMAIL, external_key=key, payload=payload, received_at=T0
                )
                for key, payload in mails
            ]
            with transaction(runtime.factory) as session:
                raw.save_batch(session, records, source=source, state={}, now=T0)
    try:
        results = run_two(_process_worker, pg_url, home, ((), ()))
        assert sum(result["processed"] for result in results) == 2 * groups * BATCH
        assert (
            scalar(runtime, "SELECT count(*) FROM raw_records WHERE status = 'duplicate'") == groups * BATCH
        )
        assert scalar(runtime, "SELECT count(*) FROM enquiries") == groups * BATCH
    finally:
        runtime.engine.dispose()


def test_two_workers_send_each_outbox_row_once(processed: tuple[str, Path, Runtime]) -> None:
    url, home, runtime = processed
    queued = scalar(runtime, "SELECT count(*) FROM crm_outbox")
    leads = scalar(runtime, "SELECT count(*) FROM crm_outbox WHERE operation = 'upsert_lead'")
    assert queued == 2 * RECORDS  # a lead and a follow-up task for each enquiry people handle
    results = run_two(_drain_worker, url, home, ((), ()))
    assert all(result["sent"] > 0 for result in results), results
    assert sum(result["sent"] for result in results) == queued  # each write sent by exactly one worker
    assert rows(runtime, "SELECT status, attempts, count(*) FROM crm_outbox GROUP BY status, attempts") == [
        ("sent", 1, queued)
    ]
    assert scalar(runtime, "SELECT count(*) FROM crm_leads") == leads
    assert scalar(runtime, "SELECT count(*) FROM crm_tasks") == queued - leads


ESCALATION_LINE = re.compile(r"^- \[(\w+)\] enquiry (\S+) · .* · policy \S+ · (\w+) (\d+)% of ")


def test_two_workers_fire_and_send_each_escalation_once(processed: tuple[str, Path, Runtime]) -> None:
    from email.message import Message

    from sla.watch import DIGEST_LINES
    from tests.sla.sla_helpers import smtp_server

    url, home, runtime = processed
    timers = scalar(runtime, "SELECT count(*) FROM sla_timers")
    assert timers >= RECORDS
    later = T0 + timedelta(days=30)  # every clock has run out and every tier is due
    with smtp_server() as sink:
        results = run_two(
            _watch_worker, url, home, ((sink.port, later.isoformat()), (sink.port, later.isoformat()))
        )
        received = list(sink.messages)
    # Each worker either did some of the work or stepped aside for the other: they really overlapped.
    assert all(r.get("breached", 0) + r.get("fired", 0) + r.get("skipped", 0) > 0 for r in results), results
    assert (
        sum(result.get("breached", 0) for result in results)
        == scalar(runtime, "SELECT count(*) FROM sla_timers WHERE status = 'breached'")
        == timers
    )
    events = rows(
        runtime,
        "SELECT t.enquiry_id, t.kind, e.action, e.detail::text, e.sent_at IS NOT NULL FROM sla_events e "
        "JOIN sla_timers t ON t.id = e.timer_id WHERE e.event_key LIKE 'escalation:%'",
    )
    assert events and all(sent for *_, sent in events)
    assert sum(result.get("fired", 0) for result in results) == len(events)  # each tier fired once
    assert sum(result.get("messages", 0) for result in results) == len(received)
    expected: Counter[tuple[str, ...]] = Counter()
    for enquiry_id, kind, action, detail_text, _ in events:
        detail = json.loads(detail_text)
        for role in set(detail["roles"]) & set(ROLE_ADDRESSES):
            expected[(role, action, enquiry_id, kind, str(detail["percent"]))] += 1
    assert max(expected.values()) == 1
    address_roles = {address: role for role, address in ROLE_ADDRESSES.items()}
    seen: Counter[tuple[str, ...]] = Counter()
    for recipients, message in received:
        assert isinstance(message, Message)
        payload = message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        text = payload.decode(message.get_content_charset() or "utf-8")
        for recipient in recipients:
            for line in text.splitlines():
                match = ESCALATION_LINE.match(line)
                if match:
                    seen[(address_roles[recipient], *match.groups())] += 1
    # No escalation reached a role twice, and every line names an escalation that fired. (A digest lists
    # at most DIGEST_LINES escalations by name, so the complete set is compared only when it fits.)
    assert seen and max(seen.values()) == 1
    assert set(seen) <= set(expected)
    for role in ROLE_ADDRESSES:
        wanted = {key for key in expected if key[0] == role}
        if len(wanted) <= DIGEST_LINES:
            assert {key for key in seen if key[0] == role} == wanted, role


def test_two_people_claiming_the_same_items_get_one_winner_each(processed: tuple[str, Path, Runtime]) -> None:
    url, home, runtime = processed
    item_ids = [row[0] for row in rows(runtime, "SELECT id FROM review_items ORDER BY id")]
    assert len(item_ids) == RECORDS
    # Both go through the queue in the same order, so they race for the same row again and again.
    results = run_two(_claim_worker, url, home, (("ana", item_ids), ("ben", item_ids)))
    won_by_ana, won_by_ben = (set(result["won"]) for result in results)
    assert won_by_ana and won_by_ben
    assert won_by_ana.isdisjoint(won_by_ben)
    assert won_by_ana | won_by_ben == set(item_ids)
    holders = dict(rows(runtime, "SELECT id, claimed_by FROM review_items"))
    assert {holders[i] for i in won_by_ana} == {"ana"} and {holders[i] for i in won_by_ben} == {"ben"}
    claim_audits = rows(
        runtime, "SELECT enquiry_id, count(*) FROM decisions WHERE kind = 'claim' GROUP BY enquiry_id"
    )
    assert len(claim_audits) == RECORDS and {count for _, count in claim_audits} == {1}
    # A claim answers no customer (issue 17): every first-response clock is still running.
    stopped = rows(
        runtime,
        "SELECT t.stopped_at FROM sla_timers t "
        "JOIN review_items r ON r.enquiry_id = t.enquiry_id WHERE t.kind = 'first_response'",
    )
    assert len(stopped) == RECORDS and all(at is None for (at,) in stopped)
