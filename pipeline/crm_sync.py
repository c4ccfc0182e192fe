"""Drain the CRM outbox into a backend: in batches, with retries and backoff, exactly once per key.

Each batch is claimed, sent and marked inside one transaction, so on PostgreSQL the row locks keep a
second worker off the same rows, and a crash before commit leaves the rows pending for the next pass
(the backend's upsert-by-external-id makes that re-send harmless). Outcomes are kept on plain
`ClaimedWrite` rows and written back in one UPDATE per batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from connectors.crm.base import CrmBackend, LeadDelete, LeadWrite, TaskWrite, WriteResult
from connectors.crm.local import LocalCrm
from models.errors import FatalError, RetriableError
from pipeline.crm_outage import OutageAlerts, note_available, note_unavailable
from pipeline.gc_pauses import fewer_gc_pauses
from store import local_crm, outbox
from store.common import SQLITE_WRITE_CHUNK, utcnow
from store.db import transaction
from store.outbox import ClaimedWrite

log = logging.getLogger(__name__)


@dataclass
class DrainSummary:
    """What one drain pass did."""

    sent: int = 0
    sent_by_operation: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    failed: int = 0
    batches: int = 0
    stopped_by: str | None = None
    errors: list[str] = field(default_factory=list)
    alerted: bool = False  # this pass sent the "CRM unavailable" alert


def drain_outbox(
    factory: sessionmaker[Session],
    backend: CrmBackend,
    *,
    batch_size: int = 200,
    max_attempts: int = 8,
    backoff_seconds: float = 30.0,
    max_batches: int | None = None,
    clock: Callable[[], datetime] = utcnow,
    alerts: OutageAlerts | None = None,
) -> DrainSummary:
    """Send every due outbox row; stop the pass early when the CRM as a whole is unavailable.

    Writes that meet an unavailable CRM never fail for good (only the CRM's own rejections do, and
    record-level transient errors after `max_attempts`); an outage longer than `alerts.alert_after`
    notifies the ops lead once.
    """
    summary = DrainSummary()
    if factory.kw["bind"].dialect.name == "sqlite":
        batch_size = min(batch_size, SQLITE_WRITE_CHUNK)  # the write lock, held per batch
    with fewer_gc_pauses():
        while max_batches is None or summary.batches < max_batches:
            with transaction(factory) as session:
                now = clock()
                if isinstance(backend, LocalCrm):  # the outbox's own database: settle in SQL
                    claimed, unavailable = _deliver_locally(
                        session, now, summary, batch_size, backoff_seconds
                    )
                else:
                    claimed, unavailable = _send(
                        session, backend, now, summary, batch_size, max_attempts, backoff_seconds
                    )
            if not claimed:
                break
            summary.batches += 1
            if unavailable:
                break
    _track_outage(factory, summary, clock(), alerts)
    return summary


def _track_outage(
    factory: sessionmaker[Session], summary: DrainSummary, now: datetime, alerts: OutageAlerts | None
) -> None:
    """Keep when the CRM became unavailable, alert once on a long outage, and end it on a success."""
    if summary.stopped_by is None and summary.sent == 0:
        return  # nothing was due, or only rejections: the drain learnt nothing about availability
    with transaction(factory) as session:
        if summary.stopped_by is not None and summary.sent == 0:
            waiting = outbox.counts_by_status(session).get("pending", 0)
            summary.alerted = note_unavailable(
                session, now=now, error=summary.stopped_by, alerts=alerts, waiting=waiting
            )
        else:
            note_available(session, now=now)


def _deliver_locally(
    session: Session, now: datetime, summary: DrainSummary, batch_size: int, backoff_seconds: float
) -> tuple[int, bool]:
    """Claim a batch and write it into the local CRM tables in this transaction; (claimed, False)."""
    ids = outbox.claim_due_ids(session, limit=batch_size, now=now)
    if ids:
        retry_at = now + timedelta(seconds=backoff_seconds)
        sent = local_crm.deliver_from_outbox(session, ids, now=now, retry_at=retry_at)
        summary.sent += sum(sent.values())
        summary.sent_by_operation.update(sent)
    return len(ids), False


def _send(
    session: Session,
    backend: CrmBackend,
    now: datetime,
    summary: DrainSummary,
    batch_size: int,
    max_attempts: int,
    backoff_seconds: float,
) -> tuple[int, bool]:
    """Claim a batch, send its leads, then the tasks whose lead is in the CRM, and record each row's
    outcome. Returns (claimed, unavailable): unavailable when the CRM as a whole is down, and the writes
    not yet settled wait for their backoff."""
    rows = outbox.claim_due(session, limit=batch_size, now=now)
    attempted: set[int] = set()
    unavailable = False
    try:
        leads = [row for row in rows if row.operation == "upsert_lead"]
        tasks = [row for row in rows if row.operation == "create_task"]
        if leads:
            results = backend.upsert_leads(
                [LeadWrite(row.idempotency_key, row.enquiry_id, dict(row.payload)) for row in leads]
            )
            _apply(leads, results, now, summary, max_attempts, backoff_seconds, attempted)
        if tasks:
            # Outcomes are written only at the end of the batch: on SQLite an earlier UPDATE would hold the
            # write lock while the local backend writes its tasks through another connection (a 30 s lock
            # wait). This batch's sent leads are known in memory; earlier ones come from the table.
            sent_now = {row.enquiry_id for row in leads if row.status == "sent"}
            ready = sent_now | outbox.sent_lead_ids(session, [row.enquiry_id for row in tasks])
            for row in tasks:
                if row.enquiry_id not in ready:
                    # The lead is not in the CRM yet: wait without spending an attempt.
                    outbox.mark_retry(
                        row,
                        error="waiting for the lead",
                        now=now,
                        backoff_seconds=backoff_seconds,
                        max_attempts=max_attempts,
                        count=False,
                    )
                    attempted.add(row.id)
            sendable = [row for row in tasks if row.enquiry_id in ready]
            if sendable:
                results = backend.create_tasks(
                    [TaskWrite(row.idempotency_key, row.enquiry_id, dict(row.payload)) for row in sendable]
                )
                _apply(sendable, results, now, summary, max_attempts, backoff_seconds, attempted)
        deletes = [row for row in rows if row.operation == "delete_lead"]
        if deletes:  # erasure requests, after this batch's writes so a delete always comes last
            requests = [
                LeadDelete(row.idempotency_key, row.enquiry_id, tuple(row.payload.get("task_keys") or ()))
                for row in deletes
            ]
            results = backend.delete_leads(requests)
            _apply(deletes, results, now, summary, max_attempts, backoff_seconds, attempted)
    except RetriableError as error:
        # The CRM is down or throttling: the batch's unsettled writes wait for their backoff.
        for row in rows:
            if row.id not in attempted:
                outbox.mark_retry(
                    row,
                    error=str(error),
                    now=now,
                    backoff_seconds=backoff_seconds,
                    max_attempts=max_attempts,
                    unavailable=True,
                )
                summary.retried += 1
        summary.stopped_by = str(error)
        summary.errors.append(str(error))
        log.warning("CRM unavailable, %d writes wait for retry: %s", len(rows) - len(attempted), error)
        unavailable = True
    outbox.save_outcomes(session, rows)
    return len(rows), unavailable


def _apply(
    rows: list[ClaimedWrite],
    results: list[WriteResult],
    now: datetime,
    summary: DrainSummary,
    max_attempts: int,
    backoff_seconds: float,
    attempted: set[int],
) -> None:
    if len(results) != len(rows):
        raise FatalError(f"CRM backend returned {len(results)} results for {len(rows)} writes")
    for row, result in zip(rows, results, strict=True):
        attempted.add(row.id)
        if result.ok:
            outbox.mark_sent(row, crm_id=result.crm_id, now=now)
            summary.sent += 1
            summary.sent_by_operation[row.operation] += 1
        elif result.retriable:
            outbox.mark_retry(
                row,
                error=result.error or "retriable",
                now=now,
                backoff_seconds=backoff_seconds,
                max_attempts=max_attempts,
                unavailable=result.unavailable,
            )
            summary.retried += 1
        else:
            outbox.mark_failed(row, error=result.error or "rejected by the CRM")
            summary.failed += 1
