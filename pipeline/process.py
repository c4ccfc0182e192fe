"""Process pending raw records in batches: normalise, dedupe, thread, enrich, classify, decide, act.

One batch is one transaction: enquiries, audit rows, outbox rows, SLA timers, review items and the
raw records' new status commit together or not at all, so a crash mid-run leaves the batch pending
and a re-run produces exactly what one clean run would have. Side effects outside the database (CRM
writes, notifications) happen later from outboxes keyed by enquiry id.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from config.policy import Policy
from connectors.enrichment import Firmographics
from models.lanes import decide
from models.records import Channel, Decision, EnquiryIn, Enrichment, Lane, Prediction, RawStatus
from pipeline.accounts import AccountMatcher
from pipeline.gc_pauses import fewer_gc_pauses
from pipeline.isolation import DEFAULT_BUDGET_SECONDS, WorkerPool, bisect, problem_text
from pipeline.normalise import RawPayload, content_hash, enquiry_id_for, is_reply_subject, normalise_subject
from pipeline.prepare import ModelSource, Prepared, Preparer, init_worker, prepare_in_worker
from pipeline.routing import Assignment, Router, RouteRequest, assignment_audit_row
from pipeline.spot_checks import spot_check_items
from sla.service import TimerStart
from store import enquiries as enquiry_store
from store import flags, outbox, raw
from store.common import SQLITE_WRITE_CHUNK, Clock, lock_keys, utcnow
from store.db import transaction
from store.raw import PendingRecord

log = logging.getLogger(__name__)
# Between two write parts on SQLite: three of a waiting writer's 1-ms looks (store/db.write_transaction).
SQLITE_PART_GAP_SECONDS = 0.003
PARALLEL_MINIMUM = 1_000  # pending records below which starting worker processes costs more than it saves


# Starts SLA timers inside the batch's transaction; returns enquiry id → first-response due time.
TimerStarter = Callable[[Session, Sequence[TimerStart]], dict[str, datetime]]
# Told of customers' follow-ups (enquiry id, when): a clock paused "waiting on the customer" resumes.
ReplyHook = Callable[[Session, Sequence[tuple[str, datetime]]], None]
# Queues the automated lane's acknowledgements: (enquiry row, decision) pairs, the batch's instant.
AutoReplyHook = Callable[[Session, Sequence[tuple[dict[str, Any], Decision]], datetime], int]
# Told of the team's own mail in a thread (enquiry id, the mail's Date, sender address): a first touch.
TeamTouchHook = Callable[[Session, Sequence[tuple[str, datetime, str]]], None]


@dataclass
class PipelineContext:
    """Everything a batch needs besides the database: loaded once per run."""

    policy: Policy
    firmographics: Firmographics
    model: ModelSource  # loaded where it classifies: in the workers when there are any
    start_timers: TimerStarter
    shadow: ModelSource = None
    max_body_chars: int = 50_000
    on_customer_replies: ReplyHook | None = None
    # The team's own mail domains: their mail threaded on an enquiry is an outbound first touch.
    team_domains: frozenset[str] = frozenset()
    # Sources that are a mailbox's Sent folder: all their mail is the team's, and never an enquiry.
    sent_sources: frozenset[str] = frozenset()
    on_team_touches: TeamTouchHook | None = None
    auto_replies: AutoReplyHook | None = None  # None: the automated lane sends no acknowledgement
    parse_workers: int = 1  # >1: parse, enrich and classify run in worker processes, a batch ahead
    parallel_minimum: int = PARALLEL_MINIMUM
    clock: Clock = utcnow  # stamps the batch: created_at, audit rows, when outbox writes fall due
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS  # wall-clock parse budget per record
    max_record_attempts: int = 3  # failed batches a record may cause before it is quarantined
    accounts: AccountMatcher | None = None  # CRM account matching, one lookup per batch (issue 12)
    router: Router | None = None  # owner routing of what goes to people (routing.yaml)
    sqlite_write_chunk: int = SQLITE_WRITE_CHUNK  # records per write transaction on SQLite

    def preparer(self) -> Preparer:
        return Preparer(
            self.model,
            self.firmographics,
            self.policy.lanes,
            self.max_body_chars,
            self.shadow,
            hook_mappings=self.policy.hook_mappings,
            budget_seconds=self.budget_seconds,
        )


@dataclass
class ProcessSummary:
    """What one pass did, by outcome; every processed raw record is in exactly one outcome."""

    processed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    lanes: Counter[str] = field(default_factory=Counter)
    spam_discarded: int = 0
    leads_queued: int = 0
    timers_started: int = 0
    review_items: int = 0
    audit_rows: int = 0
    auto_replies_queued: int = 0
    spot_checks: int = 0
    batches: int = 0
    held_back: int = 0  # records whose batch failed because of them, left pending for a later run
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def counts(self) -> ProcessSummary:
        """A copy of the counts (not the timings), to put back when a batch's transaction fails."""
        return copy.deepcopy(self)

    def restore(self, saved: ProcessSummary) -> None:
        timings = self.stage_seconds
        self.__dict__.update(copy.deepcopy(saved).__dict__)
        self.stage_seconds = timings

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage_seconds": {stage: round(seconds, 4) for stage, seconds in self.stage_seconds.items()},
            "processed": self.processed,
            "outcomes": dict(self.outcomes),
            "by_channel": dict(self.by_channel),
            "lanes": dict(self.lanes),
            "spam_discarded": self.spam_discarded,
            "leads_queued": self.leads_queued,
            "timers_started": self.timers_started,
            "review_items": self.review_items,
            "audit_rows": self.audit_rows,
            "auto_replies_queued": self.auto_replies_queued,
            "spot_checks": self.spot_checks,
            "batches": self.batches,
            "held_back": self.held_back,
        }


def process_pending(
    factory: sessionmaker[Session],
    context: PipelineContext,
    *,
    batch_size: int = 500,
    max_batches: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ProcessSummary:
    """Work through every pending raw record, one transaction per batch.

    With `parse_workers > 1` on a large backlog, worker processes parse, enrich and classify the next
    batch while this process writes the current one (the only process that touches the database). The
    first batch is prepared here, while the workers start.
    """
    summary = ProcessSummary()
    preparer = context.preparer()
    with ExitStack() as stack:
        stack.enter_context(fewer_gc_pauses())
        pool: WorkerPool | None = None
        if context.parse_workers > 1:
            with factory() as session:
                pending = raw.count_pending(session)
            if pending >= context.parallel_minimum:
                pool = stack.enter_context(
                    WorkerPool(
                        context.parse_workers,
                        _worker_context(),
                        init_worker,
                        (preparer,),
                        context.budget_seconds,
                    )
                )
        # Records whose batch failed because of them: left out of this run's claims (issue 16).
        held_back: set[int] = set()
        ahead: _Ahead | None = None
        # SQLite has one write lock for the whole database and a claim takes it: parse and classify
        # before claiming, so web hooks and review pages that write meanwhile wait only for the batch's
        # writes, not for its parsing. PostgreSQL's claim locks rows only, so it claims first.
        prepare_first = factory.kw["bind"].dialect.name == "sqlite"
        while max_batches is None or summary.batches < max_batches:
            if prepare_first:
                early, ahead = _prepare_before_claim(
                    factory, preparer, pool, ahead, context, batch_size, summary, held_back
                )
                if early is None:
                    break
                # Written in parts, each its own short transaction: the write lock is held for one
                # part's writes, so a web hook storing a raw body waits tens of milliseconds, not a
                # whole batch's (issue 14).
                parts: list[_Early | None] = list(early.parts(context.sqlite_write_chunk))
            else:
                parts = [None]
            for number, part in enumerate(parts):
                if number:
                    # Leave the write lock free a moment between parts: a web hook waiting for it
                    # looks every millisecond (store/db.write_transaction) and gets in here.
                    time.sleep(SQLITE_PART_GAP_SECONDS)
                written, ahead = _claim_and_write(
                    factory, context, preparer, part, ahead, pool, batch_size, summary, held_back
                )
                if not written:
                    break
                if on_batch is not None:
                    on_batch(written)
            else:
                summary.batches += 1
                continue
            break
    return summary


def _claim_and_write(
    factory: sessionmaker[Session],
    context: PipelineContext,
    preparer: Preparer,
    early: _Early | None,
    ahead: _Ahead | None,
    pool: WorkerPool | None,
    batch_size: int,
    summary: ProcessSummary,
    held_back: set[int],
) -> tuple[int, _Ahead | None]:
    """Claim the next records and write them in one transaction; (records written, the batch the
    workers prepare meanwhile). `early`: records already prepared from a peek (SQLite)."""
    saved = summary.counts()
    records: list[PendingRecord] = []
    prepared: Sequence[Prepared] | None = None
    limit = len(early.ids) if early is not None else batch_size
    try:
        with transaction(factory) as session:
            records = raw.claim_pending(session, limit=limit, exclude=held_back)
            if not records:
                return 0, ahead
            ids = [record.id for record in records]
            if early is not None:
                # Another process took some of the peeked rows: prepare what was claimed, here.
                prepared = early.prepared if early.ids == ids else _prepare_here(records, preparer, summary)
            else:
                ready = ahead if ahead is not None and ahead.ids == ids else None
                ahead = None
                if pool is not None:  # the workers start on the next batch while this one is written
                    upcoming = raw.peek_pending(
                        session, after_id=ids[-1], limit=batch_size, exclude=held_back
                    )
                    if upcoming:
                        ahead = _Ahead.submit(pool, upcoming, context.parse_workers)
                if ready is not None:
                    prepared = _wait_for(ready, summary)
                else:
                    # The first batch (the workers are still starting), or another worker took
                    # some of the rows prepared ahead: prepare it here.
                    prepared = _prepare_here(records, preparer, summary)
            process_batch(session, records, context, summary, prepared)
    except Exception as error:
        if not records or prepared is None or _not_the_records_fault(error):
            raise
        # The batch's transaction failed and no single record is named: retry it in halves,
        # each in its own transaction, until the record at fault is found (and held back).
        summary.restore(saved)
        log.warning("a batch of %d records failed (%s): isolating the record at fault", len(records), error)
        _isolate(factory, list(zip(records, prepared, strict=True)), context, summary, held_back)
    return len(records), ahead


@dataclass
class _Early:
    """A batch prepared from a peek, before the claim that confirms it."""

    ids: list[int]
    prepared: list[Prepared]

    def parts(self, size: int) -> Iterator[_Early]:
        for start in range(0, len(self.ids), size):
            yield _Early(self.ids[start : start + size], self.prepared[start : start + size])


def _prepare_before_claim(
    factory: sessionmaker[Session],
    preparer: Preparer,
    pool: WorkerPool | None,
    ahead: _Ahead | None,
    context: PipelineContext,
    batch_size: int,
    summary: ProcessSummary,
    held_back: set[int],
) -> tuple[_Early | None, _Ahead | None]:
    """Peek the next batch (no lock), hand the one after it to the workers, and prepare this one."""
    with factory() as session:
        peeked = raw.peek_pending(session, after_id=0, limit=batch_size, exclude=held_back)
        upcoming = (
            raw.peek_pending(session, after_id=peeked[-1].id, limit=batch_size, exclude=held_back)
            if peeked and pool is not None
            else []
        )
    if not peeked:
        return None, None
    ids = [record.id for record in peeked]
    current = ahead if ahead is not None and ahead.ids == ids else None
    following = (
        _Ahead.submit(pool, upcoming, context.parse_workers) if pool is not None and upcoming else None
    )
    prepared = (
        _wait_for(current, summary) if current is not None else _prepare_here(peeked, preparer, summary)
    )
    return _Early(ids, prepared), following


def _wait_for(ahead: _Ahead, summary: ProcessSummary) -> list[Prepared]:
    waiting = time.perf_counter()
    prepared = ahead.results(summary)
    # How long this process waited for the workers: large when they cannot keep up.
    summary.stage_seconds["wait_for_workers"] += time.perf_counter() - waiting
    return prepared


PreparedChunk = tuple[list[Prepared], dict[str, float]]
# Imported once by the fork server, before it forks the workers (which load models.scoring.Scorer
# arrays: numpy and scipy, no scikit-learn).
WORKER_PRELOAD = ["pipeline.prepare", "models.scoring"]


def _worker_context() -> multiprocessing.context.ForkServerContext:
    # forkserver, not fork: a flow run has threads, and forking a threaded process can deadlock.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


def _payloads(records: Sequence[PendingRecord]) -> list[RawPayload]:
    return [RawPayload(r.channel, r.payload, r.source, r.received_at, r.time_shift_seconds) for r in records]


def _chunks(items: list[RawPayload], parts: int) -> list[list[RawPayload]]:
    size = max(1, -(-len(items) // parts))
    return [items[start : start + size] for start in range(0, len(items), size)]


def _collect(
    pool: WorkerPool,
    futures: Sequence[Future[PreparedChunk]],
    chunks: Sequence[list[RawPayload]],
    summary: ProcessSummary,
) -> list[Prepared]:
    prepared: list[Prepared] = []
    for future, chunk in zip(futures, chunks, strict=True):
        part, timings = pool.result(future, chunk, prepare_in_worker, lambda c, _: _prepare_alone(pool, c))
        prepared.extend(part)
        for stage, seconds in timings.items():
            summary.stage_seconds[stage] += seconds  # CPU seconds (Preparer): the cost of a stage
    return prepared


def _prepare_alone(pool: WorkerPool, chunk: list[RawPayload]) -> PreparedChunk:
    """A chunk whose worker died or overran, prepared again in halves in single-use processes until
    the record at fault stands alone; it is quarantined with what happened to it."""

    def run(part: Sequence[RawPayload]) -> list[Prepared]:
        return pool.run_alone(prepare_in_worker, list(part))[0]

    def alone(_: RawPayload, error: BaseException) -> Prepared:
        return Prepared(None, problem=problem_text(error, "its worker failed"))

    return bisect(chunk, run, alone), {}


@dataclass
class _Ahead:
    """The next batch, being prepared in the workers while this one is written."""

    ids: list[int]
    pool: WorkerPool
    chunks: list[list[RawPayload]]
    futures: list[Future[PreparedChunk]]

    @classmethod
    def submit(cls, pool: WorkerPool, rows: Sequence[PendingRecord], workers: int) -> _Ahead:
        chunks = _chunks(_payloads(rows), workers)
        futures = [pool.submit(prepare_in_worker, chunk) for chunk in chunks]
        return cls([row.id for row in rows], pool, chunks, futures)

    def results(self, summary: ProcessSummary) -> list[Prepared]:
        return _collect(self.pool, self.futures, self.chunks, summary)


def _prepare_here(
    records: Sequence[PendingRecord], preparer: Preparer, summary: ProcessSummary
) -> list[Prepared]:
    prepared, timings = preparer(_payloads(records))
    for stage, seconds in timings.items():
        summary.stage_seconds[stage] += seconds
    return prepared


def _not_the_records_fault(error: Exception) -> bool:
    """A lost or locked database fails every batch alike: the run fails (and is retried), no record is
    blamed."""
    return isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError)


def _isolate(
    factory: sessionmaker[Session],
    batch: list[tuple[PendingRecord, Prepared]],
    context: PipelineContext,
    summary: ProcessSummary,
    held_back: set[int],
) -> None:
    """Write a failed batch again in halves, each in its own transaction, down to the one record whose
    write fails alone: it is held back for the rest of the run, its attempts counted, and quarantined
    at `max_record_attempts`."""

    def run(part: Sequence[tuple[PendingRecord, Prepared]]) -> list[None]:
        saved = summary.counts()
        try:
            with transaction(factory) as session:
                still = raw.lock_pending(session, [record.id for record, _ in part])
                mine = [(record, ready) for record, ready in part if record.id in still]
                if mine:
                    process_batch(
                        session, [r for r, _ in mine], context, summary, [ready for _, ready in mine]
                    )
        except Exception as error:
            summary.restore(saved)
            if _not_the_records_fault(error):
                raise _DatabaseTrouble(error) from error
            raise
        return [None] * len(part)

    def alone(item: tuple[PendingRecord, Prepared], error: BaseException) -> None:
        if isinstance(error, _DatabaseTrouble):
            raise error.__cause__ or error
        record = item[0]
        held_back.add(record.id)
        reason = problem_text(error, "its batch could not be written")
        with transaction(factory) as session:
            quarantined = raw.record_failure(
                session, record, reason, max_attempts=context.max_record_attempts, now=context.clock()
            )
        if quarantined:
            summary.processed += 1
            summary.outcomes[RawStatus.QUARANTINED.value] += 1
        else:
            summary.held_back += 1
        log.error("record %d %s: %s", record.id, "quarantined" if quarantined else "held back", reason)

    bisect(batch, run, alone)


class _DatabaseTrouble(Exception):
    """The database, not a record, failed a retry: stop isolating and fail the run."""


@dataclass
class _NewEnquiry:
    raw: PendingRecord
    enquiry: EnquiryIn
    enquiry_id: str
    digest: str
    subject_norm: str
    enrichment: Enrichment
    prediction: Prediction
    shadow: Prediction | None


class _Threads:
    """Where a follow-up belongs: keys from the database, plus what this batch has just opened."""

    def __init__(self, session: Session, normalised: list[tuple[PendingRecord, EnquiryIn]]) -> None:
        replies = [key for _, e in normalised for key in e.in_reply_to]
        self.by_message_key = enquiry_store.enquiries_by_message_key(session, replies)
        self.by_thread_key = enquiry_store.enquiries_by_thread_key(
            session, [e.thread_key for _, e in normalised if e.thread_key]
        )
        self.by_sender_subject = enquiry_store.enquiries_by_sender_subject(
            session,
            [
                (e.sender_email, normalise_subject(e.subject))
                for _, e in normalised
                if e.sender_email and is_reply_subject(e.subject)
            ],
        )
        self.chat_keys = enquiry_store.known_chat_keys(session, self.by_thread_key.values())

    def target(self, enquiry: EnquiryIn) -> str | None:
        if enquiry.thread_key and enquiry.thread_key in self.by_thread_key:
            return self.by_thread_key[enquiry.thread_key]
        for key in enquiry.in_reply_to:
            if key in self.by_message_key:
                return self.by_message_key[key]
        if enquiry.channel is Channel.EMAIL and enquiry.sender_email and is_reply_subject(enquiry.subject):
            return self.by_sender_subject.get((enquiry.sender_email, normalise_subject(enquiry.subject)))
        return None

    def opened(self, new: _NewEnquiry) -> None:
        e = new.enquiry
        if e.message_key:
            self.by_message_key.setdefault(e.message_key, new.enquiry_id)
        if e.thread_key:
            self.by_thread_key.setdefault(e.thread_key, new.enquiry_id)
            self.chat_keys[new.enquiry_id] = {
                item[0] for item in json.loads(e.attributes.get("message_keys", "[]"))
            }
        if e.sender_email:
            self.by_sender_subject[(e.sender_email, new.subject_norm)] = new.enquiry_id


def process_batch(
    session: Session,
    records: Sequence[PendingRecord],
    context: PipelineContext,
    summary: ProcessSummary,
    prepared: Sequence[Prepared] | None = None,
) -> None:
    """Process one locked batch of raw records inside the caller's transaction.

    `prepared` is the batch already parsed, enriched and classified (by worker processes); without it
    that work is done here.
    """
    now = context.clock()
    if prepared is None:
        prepared = _prepare_here(records, context.preparer(), summary)
    started = time.perf_counter()
    normalised: list[tuple[PendingRecord, EnquiryIn]] = []
    extras: dict[int, Prepared] = {}
    for record, ready in zip(records, prepared, strict=True):
        summary.processed += 1
        summary.by_channel[record.channel] += 1
        if ready.enquiry is None:
            raw.quarantine(session, record, ready.problem or "could not be interpreted", now=now)
            summary.outcomes[RawStatus.QUARANTINED.value] += 1
            continue
        if ready.enquiry.skip_reason:
            _set_status(record, RawStatus.SKIPPED, ready.enquiry.skip_reason)
            summary.outcomes[RawStatus.SKIPPED.value] += 1
            continue
        normalised.append((record, ready.enquiry))
        extras[id(record)] = ready

    digests = {id(record): content_hash(enquiry) for record, enquiry in normalised}
    lock_keys(
        session,
        [
            *digests.values(),
            *(key for _, e in normalised for key in (e.message_key, e.thread_key, *e.in_reply_to) if key),
        ],
    )
    seen = enquiry_store.seen_content(session, digests.values())
    threads = _Threads(session, normalised)
    new: list[_NewEnquiry] = []
    messages: list[dict[str, Any]] = []
    # The team's mails that are already in a thread: replies this product sent (their Message-ID is a
    # message key), read back from a Sent folder.
    known_team_keys = set(
        enquiry_store.enquiries_by_message_key(
            session,
            [
                e.message_key
                for r, e in normalised
                if e.message_key and (r.source in context.sent_sources or _from_team(e, context.team_domains))
            ],
        )
    )

    for record, enquiry in normalised:
        digest = digests[id(record)]
        if (enquiry.message_key, digest) in seen:
            _set_status(record, RawStatus.DUPLICATE, "same message key and content as an earlier record")
            summary.outcomes[RawStatus.DUPLICATE.value] += 1
            continue
        seen.add((enquiry.message_key, digest))
        target = threads.target(enquiry)
        in_sent_folder = record.source in context.sent_sources
        from_team = in_sent_folder or _from_team(enquiry, context.team_domains)
        if from_team and enquiry.message_key in known_team_keys:
            _set_status(record, RawStatus.DUPLICATE, "a reply this product sent, already in the thread")
            summary.outcomes[RawStatus.DUPLICATE.value] += 1
            continue
        if from_team and target is None and enquiry.in_reply_to:
            _set_status(record, RawStatus.SKIPPED, "mail from the team's own domain that answers no enquiry")
            summary.outcomes[RawStatus.SKIPPED.value] += 1
            continue
        if in_sent_folder and target is None:
            _set_status(record, RawStatus.SKIPPED, "mail in the Sent folder that answers no enquiry")
            summary.outcomes[RawStatus.SKIPPED.value] += 1
            continue
        if target is not None:
            added = _thread_messages(enquiry, target, digest, threads, outbound=from_team)
            if not added:
                _set_status(record, RawStatus.DUPLICATE, "conversation already holds every message")
                summary.outcomes[RawStatus.DUPLICATE.value] += 1
                continue
            for message in added:
                message["raw_id"] = record.id if message is added[0] else None
            messages.extend(added)
            _set_status(record, RawStatus.THREADED, f"follow-up of enquiry {target}", enquiry_id=target)
            summary.outcomes[RawStatus.THREADED.value] += 1
            continue
        ready = extras[id(record)]
        assert ready.enrichment is not None and ready.prediction is not None
        item = _NewEnquiry(
            record,
            enquiry,
            enquiry_id_for(record),
            digest,
            normalise_subject(enquiry.subject),
            ready.enrichment,
            ready.prediction,
            ready.shadow,
        )
        threads.opened(item)
        new.append(item)

    summary.stage_seconds["dedupe_thread"] += time.perf_counter() - started
    if new:
        _open_enquiries(session, new, context, summary, now)
    # After the enquiries: a follow-up may belong to an enquiry this very batch opened.
    enquiry_store.add_messages(session, messages)
    raw.save_outcomes(session, records)
    inbound = [m for m in messages if m["direction"] == "inbound"]
    if inbound and context.on_customer_replies is not None:
        context.on_customer_replies(session, [(m["enquiry_id"], m["sent_at"]) for m in inbound])
    touches = [(m["enquiry_id"], m["sent_at"], m["author"]) for m in messages if m["direction"] == "outbound"]
    if touches and context.on_team_touches is not None:
        context.on_team_touches(session, touches)


def _from_team(enquiry: EnquiryIn, team_domains: frozenset[str]) -> bool:
    """Whether a mail was sent by the team (its sender's domain is one of the team's own)."""
    if enquiry.channel is not Channel.EMAIL or not enquiry.sender_email or not team_domains:
        return False
    return enquiry.sender_email.rsplit("@", 1)[-1].lower() in team_domains


def _thread_messages(
    enquiry: EnquiryIn, target: str, digest: str, threads: _Threads, *, outbound: bool = False
) -> list[dict[str, Any]]:
    """The follow-up rows a record adds to an enquiry: one for a mail, the new messages of a chat."""
    if enquiry.channel is Channel.CHAT:
        known = threads.chat_keys.setdefault(target, set())
        rows = []
        for key, sent_at, text in json.loads(enquiry.attributes.get("message_keys", "[]")):
            if key in known:
                continue
            known.add(key)
            rows.append(
                {
                    "enquiry_id": target,
                    "direction": "inbound",
                    "author": enquiry.sender_email or enquiry.sender_name,
                    "message_key": key,
                    "content_hash": digest,
                    "body": text,
                    "sent_at": datetime.fromisoformat(sent_at),
                }
            )
        return rows
    return [
        {
            "enquiry_id": target,
            "direction": "outbound" if outbound else "inbound",
            "author": enquiry.sender_email,
            "message_key": enquiry.message_key,
            "content_hash": digest,
            "body": enquiry.body,
            "sent_at": enquiry.received_at,
        }
    ]


def _set_status(
    record: PendingRecord, status: RawStatus, reason: str | None, *, enquiry_id: str | None = None
) -> None:  # written with the batch by raw.save_outcomes
    record.status = status.value
    record.status_reason = reason
    if enquiry_id is not None:
        record.enquiry_id = enquiry_id


def _open_enquiries(
    session: Session, new: list[_NewEnquiry], context: PipelineContext, summary: ProcessSummary, now: datetime
) -> None:
    policy = context.policy
    enrichments = [item.enrichment for item in new]
    account_notes: list[list[str]] = [[] for _ in new]
    if context.accounts is not None:
        started = time.perf_counter()
        enrichments, account_notes = context.accounts.apply(session, [i.enquiry for i in new], enrichments)
        summary.stage_seconds["accounts"] += time.perf_counter() - started
    started = time.perf_counter()
    paused, paused_reason = flags.automation_paused(session)
    paused_tasks = flags.paused_tasks(session)
    predictions = [item.prediction for item in new]
    decisions = [
        decide(
            prediction=prediction,
            enrichment=enrichment,
            text=f"{item.enquiry.subject}\n{item.enquiry.body}",
            policy=policy,
            paused_reason=paused_reason if paused else None,
            is_bot=item.enquiry.is_bot,
            paused_tasks=paused_tasks,
        )
        for item, enrichment, prediction in zip(new, enrichments, predictions, strict=True)
    ]
    summary.stage_seconds["decide"] += time.perf_counter() - started
    started = time.perf_counter()
    enquiry_rows = [
        _enquiry_row(item, enrichment, prediction, decision, now)
        for item, enrichment, prediction, decision in zip(
            new, enrichments, predictions, decisions, strict=True
        )
    ]
    enquiry_store.add_enquiries(session, enquiry_rows)
    for item in new:
        _set_status(item.raw, RawStatus.ENQUIRY, None, enquiry_id=item.enquiry_id)
    triage_rows = [
        _audit_row(item.enquiry_id, decision, now, shifted_by=item.raw.time_shift_seconds, notes=notes)
        for item, decision, notes in zip(new, decisions, account_notes, strict=True)
    ]
    enquiry_store.add_decisions(session, triage_rows)
    summary.audit_rows += len(decisions)
    summary.outcomes[RawStatus.ENQUIRY.value] += len(new)

    enquiry_store.add_shadow_predictions(
        session,
        [
            {
                "enquiry_id": item.enquiry_id,
                "model_version": item.shadow.model_version,
                "intent": item.shadow.intent,
                "confidence": item.shadow.confidence,
                "abstained": item.shadow.abstained,
                "created_at": now,
            }
            for item in new
            if item.shadow is not None
        ],
    )

    due = context.start_timers(
        session,
        [
            TimerStart(
                enquiry_id=item.enquiry_id,
                received_at=item.enquiry.received_at,
                priority=decision.priority,
                intent=decision.intent,
                channel=item.enquiry.channel.value,
                queue=decision.queue,
                segment=enrichment.segment,
            )
            for item, enrichment, decision in zip(new, enrichments, decisions, strict=True)
        ],
    )
    summary.timers_started += len(due)

    # Spot checks: automated enquiries also reviewed, handled as automated all the same; a reviewer owns
    # each, routed like the rest.
    spot_rows = spot_check_items(session, new, decisions, due, policy, now)
    routing_started = time.perf_counter()
    assignments = _route(
        session, context, new, enquiry_rows, decisions, now, also={row["enquiry_id"] for row in spot_rows}
    )
    for spot in spot_rows:
        if (routed := assignments.get(spot["enquiry_id"])) is not None:
            spot.update(owner=routed.owner, team=routed.team, assigned_at=now)
    summary.stage_seconds["routing"] += time.perf_counter() - routing_started
    if assignments:
        by_id = {row["enquiry_id"]: row for row in triage_rows}
        enquiry_store.add_decisions(
            session, [assignment_audit_row(by_id[key], a) for key, a in assignments.items()]
        )
        summary.audit_rows += len(assignments)
    review_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for item, row, decision in zip(new, enquiry_rows, decisions, strict=True):
        assigned = assignments.get(item.enquiry_id)
        summary.lanes[decision.lane.value] += 1
        to_people = decision.lane is not Lane.AUTOMATE
        if decision.intent in policy.lanes.no_lead_intents and not to_people:
            summary.spam_discarded += 1
        if to_people:
            review_rows.append(
                {
                    "enquiry_id": item.enquiry_id,
                    "lane": decision.lane.value,
                    "queue": decision.queue,
                    "intent": decision.intent,
                    "status": "open",
                    "due_at": due.get(item.enquiry_id),
                    "created_at": now,
                    "owner": assigned.owner if assigned else None,
                    "team": assigned.team if assigned else None,
                    "assigned_at": now if assigned else None,
                }
            )
        if decision.intent not in policy.lanes.no_lead_intents:
            outbox_rows.append(
                {
                    "idempotency_key": f"lead:{item.enquiry_id}",
                    "enquiry_id": item.enquiry_id,
                    "operation": "upsert_lead",
                    "payload": lead_payload(
                        row, item.enquiry, decision.policy_version, assigned if to_people else None
                    ),
                }
            )
            if to_people:
                outbox_rows.append(
                    {
                        "idempotency_key": f"task:{item.enquiry_id}",
                        "enquiry_id": item.enquiry_id,
                        "operation": "create_task",
                        "payload": task_payload(row, due.get(item.enquiry_id)),
                    }
                )
    if context.auto_replies is not None:
        automated = [
            (row, decision)
            for row, decision in zip(enquiry_rows, decisions, strict=True)
            if decision.lane is Lane.AUTOMATE and decision.intent not in policy.lanes.no_lead_intents
        ]
        if automated:
            queued = context.auto_replies(session, automated, now)
            summary.auto_replies_queued += queued
            summary.audit_rows += queued
    summary.review_items += enquiry_store.add_review_items(session, review_rows)
    summary.spot_checks += enquiry_store.add_review_items(session, spot_rows)
    summary.leads_queued += outbox.enqueue(
        session, [r for r in outbox_rows if r["operation"] == "upsert_lead"], now=now
    )
    outbox.enqueue(session, [r for r in outbox_rows if r["operation"] == "create_task"], now=now)
    summary.stage_seconds["persist"] += time.perf_counter() - started


def _route(
    session: Session,
    context: PipelineContext,
    new: list[_NewEnquiry],
    rows: list[dict[str, Any]],
    decisions: list[Decision],
    now: datetime,
    *,
    also: set[str],
) -> dict[str, Assignment]:
    """Owners for the enquiries that go to people, and for the automated ones in `also` (spot checks)
    (pipeline/routing.py)."""
    if context.router is None:
        return {}
    requests = [
        RouteRequest(
            enquiry_id=item.enquiry_id,
            queue=decision.queue,
            intent=decision.intent,
            segment=row["enrichment"].get("segment") or "unknown",
            country=row["enrichment"].get("country"),
            language=row["enrichment"].get("language"),
            account_owner=row["enrichment"].get("account_owner"),
            account=row["enrichment"].get("account"),
        )
        for item, row, decision in zip(new, rows, decisions, strict=True)
        if decision.lane is not Lane.AUTOMATE or item.enquiry_id in also
    ]
    return context.router.route(session, requests, now=now)


def _enquiry_row(
    item: _NewEnquiry, enrichment: Enrichment, prediction: Prediction, decision: Decision, now: datetime
) -> dict[str, Any]:
    e = item.enquiry
    return {
        "id": item.enquiry_id,
        "raw_id": item.raw.id,
        "channel": e.channel.value,
        "source": e.source,
        "message_key": e.message_key,
        "thread_key": e.thread_key,
        "content_hash": item.digest,
        "received_at": e.received_at,
        "sender_email": e.sender_email,
        "sender_name": e.sender_name,
        "phone": e.phone,
        "subject": e.subject,
        "subject_norm": item.subject_norm,
        "body": e.body,
        "attributes": dict(e.attributes),
        "attachments": [a.model_dump() for a in e.attachments],
        "enrichment": enrichment.model_dump(),
        "language": enrichment.language,
        "intent": decision.intent,
        "queue": decision.queue,
        "priority": decision.priority,
        "lane": decision.lane.value,
        "confidence": decision.confidence,
        "explanation": [list(pair) for pair in prediction.explanation],
        "model_version": decision.model_version,
        "status": "open" if decision.lane is not Lane.AUTOMATE else "automated",
        "created_at": now,
    }


def _audit_row(
    enquiry_id: str,
    decision: Decision,
    now: datetime,
    *,
    shifted_by: int | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    reasons = [*notes, *decision.reasons]  # the account match first: the ARR reason below rests on it
    if shifted_by:  # only the bundled demo sample is ever shifted (pipeline/demo.py)
        reasons.append(f"demo sample: its dates were moved by {shifted_by / 86_400:+.2f} days to recent days")
    return {
        "enquiry_id": enquiry_id,
        "created_at": now,
        "actor": "system",
        "kind": "triage",
        "lane": decision.lane.value,
        "intent": decision.intent,
        "queue": decision.queue,
        "priority": decision.priority,
        "confidence": decision.confidence,
        "task": decision.task,
        "reasons": reasons,
        "policy_version": decision.policy_version,
        "model_version": decision.model_version,
    }


def lead_payload(
    row: dict[str, Any], enquiry: EnquiryIn, policy_version: str, assigned: Assignment | None = None
) -> dict[str, Any]:
    """The canonical lead (connectors.crm.base.LEAD_FIELDS) for an enquiry row, with its owner."""
    enrichment = row["enrichment"]
    first, _, last = (enquiry.sender_name or "").strip().rpartition(" ")
    return {
        "external_id": row["id"],
        "email": enquiry.sender_email,
        "first_name": first or None,
        "last_name": last or (enquiry.sender_email or "Unknown").split("@")[0],
        "company": enrichment.get("company") or enrichment.get("domain") or "Unknown",
        "phone": enquiry.phone,
        "domain": enrichment.get("domain"),
        "industry": enrichment.get("industry"),
        "employees": enrichment.get("employees"),
        "arr_estimate": enrichment.get("arr_estimate"),
        "segment": enrichment.get("segment"),
        "intent": row["intent"],
        "queue": row["queue"],
        "priority": row["priority"],
        "lane": row["lane"],
        "confidence": row["confidence"],
        "channel": row["channel"],
        "source": row["source"],
        "subject": enquiry.subject[:255],
        "description": enquiry.body[:32_000],
        "received_at": enquiry.received_at.isoformat(),
        "model_version": row["model_version"],
        "policy_version": policy_version,
        "campaign": enquiry.attributes.get("utm_campaign"),
        "lead_source": enquiry.attributes.get("utm_source"),
        "owner": assigned.owner if assigned else None,
        "owner_crm_id": assigned.crm_user_id if assigned else None,
    }


def task_payload(row: dict[str, Any], due_at: datetime | None) -> dict[str, Any]:
    """The follow-up task an SDR gets on the lead when the enquiry goes to people."""
    return {
        "subject": f"Review enquiry: {row['subject'][:200]}",
        "description": f"{row['intent']} / {row['priority']} / lane {row['lane']}",
        "due_at": due_at.isoformat() if due_at else None,
        "queue": row["queue"],
        "priority": row["priority"],
        "owner_queue": row["queue"],
    }
