"""Raw records, source checkpoints and the quarantine."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.records import RawRecordIn, RawStatus
from store.common import for_update_skip_locked, insert_ignore, update_by_id
from store.tables import Quarantine, RawRecord, SourceCheckpoint

DELIVERY_MARK_EVERY = timedelta(seconds=10)


def save_batch(
    session: Session,
    records: Sequence[RawRecordIn],
    *,
    source: str,
    state: dict[str, Any] | None,
    now: datetime,
) -> int:
    """Store records not seen before and move the source's checkpoint (unless `state` is None), in the
    caller's transaction."""
    rows = [
        {
            "source": record.source,
            "channel": record.channel.value,
            "external_key": record.external_key,
            "payload": record.payload,
            "received_at": record.received_at,
            "imported_at": now,
            "status": RawStatus.PENDING.value,
            "time_shift_seconds": record.time_shift_seconds or None,
        }
        for record in records
    ]
    inserted = insert_ignore(session, RawRecord, rows, conflict=["source", "external_key"])
    if state is not None:
        set_checkpoint(session, source, state, now=now)
    return inserted


def mark_delivered(session: Session, sources: Iterable[str], *, now: datetime) -> None:
    """Move each source's 'last delivery' to `now`, at most every 10 s, so concurrent deliveries never
    queue on that one row's lock (each would wait for the other's commit, one fsync after another)."""
    state = {"last_received_at": now.isoformat()}
    for source in sorted(sources):
        insert_ignore(
            session,
            SourceCheckpoint,
            [{"source": source, "state": state, "updated_at": now}],
            conflict=["source"],
        )
        session.execute(
            sa.update(SourceCheckpoint)
            .where(SourceCheckpoint.source == source, SourceCheckpoint.updated_at < now - DELIVERY_MARK_EVERY)
            .values(state=state, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def set_checkpoint(session: Session, source: str, state: dict[str, Any], *, now: datetime) -> None:
    checkpoint = session.get(SourceCheckpoint, source)
    if checkpoint is None:
        session.add(SourceCheckpoint(source=source, state=state, updated_at=now))
    else:
        checkpoint.state = state
        checkpoint.updated_at = now


def get_checkpoint(session: Session, source: str) -> dict[str, Any] | None:
    checkpoint = session.get(SourceCheckpoint, source)
    return dict(checkpoint.state) if checkpoint else None


def checkpoints(session: Session) -> list[SourceCheckpoint]:
    return list(session.scalars(sa.select(SourceCheckpoint).order_by(SourceCheckpoint.source)))


@dataclass(slots=True)
class PendingRecord:
    """A claimed raw record as plain data: the pipeline sets its outcome, `save_outcomes` writes it.

    Not an ORM object: tracking thousands of them per batch in the unit of work cost more than the
    single executemany UPDATE that writes their outcomes.
    """

    id: int
    source: str
    channel: str
    external_key: str
    payload: bytes
    received_at: datetime
    time_shift_seconds: int | None = None
    status: str = RawStatus.PENDING.value
    status_reason: str | None = None
    enquiry_id: str | None = None


_PENDING_COLUMNS = (
    RawRecord.id,
    RawRecord.source,
    RawRecord.channel,
    RawRecord.external_key,
    RawRecord.payload,
    RawRecord.received_at,
    RawRecord.time_shift_seconds,
)


def claim_pending(session: Session, *, limit: int, exclude: Collection[int] = ()) -> list[PendingRecord]:
    """The oldest pending records, locked so a second worker takes the next ones (PostgreSQL).
    `exclude`: records held back for the rest of this run (their batch failed because of them)."""
    statement = (
        sa.select(*_PENDING_COLUMNS)
        .where(RawRecord.status == RawStatus.PENDING.value)
        .order_by(RawRecord.id)
        .limit(limit)
    )
    if exclude:
        statement = statement.where(RawRecord.id.not_in(list(exclude)))
    return [PendingRecord(*row) for row in session.execute(for_update_skip_locked(statement, session))]


def save_outcomes(session: Session, records: Sequence[PendingRecord]) -> None:
    """Write the claimed records' status, reason and enquiry in one executemany UPDATE."""
    update_by_id(session, RawRecord, ("status", "status_reason", "enquiry_id"), records)


def lock_pending(session: Session, ids: Sequence[int]) -> set[int]:
    """Lock these records again (a retry of part of a failed batch) and return those still pending."""
    statement = sa.select(RawRecord.id).where(
        RawRecord.id.in_(list(ids)), RawRecord.status == RawStatus.PENDING.value
    )
    return set(session.scalars(for_update_skip_locked(statement, session)))


def record_failure(
    session: Session, record: PendingRecord, error: str, *, max_attempts: int, now: datetime
) -> bool:
    """Count a failed batch against the record that caused it; at `max_attempts` it is quarantined with
    the error. Returns whether it was quarantined."""
    session.execute(
        sa.update(RawRecord).where(RawRecord.id == record.id).values(attempts=RawRecord.attempts + 1)
    )
    attempts = int(session.scalar(sa.select(RawRecord.attempts).where(RawRecord.id == record.id)) or 0)
    if attempts < max_attempts:
        return False
    quarantine(session, record, f"failed {attempts} times: {error}"[:2000], now=now)
    save_outcomes(session, [record])
    return True


def count_pending(session: Session) -> int:
    statement = (
        sa.select(sa.func.count()).select_from(RawRecord).where(RawRecord.status == RawStatus.PENDING.value)
    )
    return int(session.scalar(statement) or 0)


def quarantine(session: Session, record: PendingRecord, reason: str, *, now: datetime) -> None:
    """Mark a record quarantined and keep (or refresh) its quarantine row with the reason (the
    record's status is written by `save_outcomes`)."""
    record.status = RawStatus.QUARANTINED.value
    record.status_reason = reason
    existing = session.scalar(sa.select(Quarantine).where(Quarantine.raw_id == record.id))
    if existing is None:
        session.add(Quarantine(raw_id=record.id, source=record.source, reason=reason, created_at=now))
    else:
        existing.reason = reason
        existing.created_at = now
        existing.replayed_at = None


def list_quarantine(
    session: Session, *, limit: int = 100, include_replayed: bool = False
) -> list[tuple[Quarantine, RawRecord]]:
    statement = sa.select(Quarantine, RawRecord).join(RawRecord, RawRecord.id == Quarantine.raw_id)
    if not include_replayed:
        statement = statement.where(Quarantine.replayed_at.is_(None))
    rows = session.execute(statement.order_by(Quarantine.id.desc()).limit(limit))
    return [(q, r) for q, r in rows]


def replay_quarantine(session: Session, ids: Sequence[int] | None, *, now: datetime) -> int:
    """Send quarantined records through the pipeline again (after a fix); returns how many."""
    statement = sa.select(Quarantine).where(Quarantine.replayed_at.is_(None))
    if ids:
        statement = statement.where(Quarantine.id.in_(ids))
    rows = list(session.scalars(statement))
    for row in rows:
        row.replayed_at = now
    raw_ids = [row.raw_id for row in rows]
    if raw_ids:
        session.execute(
            sa.update(RawRecord)
            .where(RawRecord.id.in_(raw_ids))
            .values(status=RawStatus.PENDING.value, status_reason=None)
        )
    return len(rows)


def get_raw(session: Session, raw_id: int) -> RawRecord | None:
    return session.get(RawRecord, raw_id)


def counts(session: Session) -> dict[str, dict[str, int]]:
    """Raw records by channel and status: the books every run must balance."""
    result: dict[str, dict[str, int]] = {}
    rows = session.execute(
        sa.select(RawRecord.channel, RawRecord.status, sa.func.count()).group_by(
            RawRecord.channel, RawRecord.status
        )
    )
    for channel, status, count in rows:
        result.setdefault(channel, {})[status] = int(count)
    return result


def peek_pending(
    session: Session, *, after_id: int, limit: int, exclude: Collection[int] = ()
) -> list[PendingRecord]:
    """The pending records the next claim will most likely take (read only, no lock): work on them can
    start early, and the claim then confirms which of them are still this worker's."""
    statement = (
        sa.select(*_PENDING_COLUMNS)
        .where(RawRecord.status == RawStatus.PENDING.value, RawRecord.id > after_id)
        .order_by(RawRecord.id)
        .limit(limit)
    )
    if exclude:
        statement = statement.where(RawRecord.id.not_in(list(exclude)))
    return [PendingRecord(*row) for row in session.execute(statement)]
