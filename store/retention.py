"""Retention: empty old bodies and payloads in small batches, and say how much space each table takes.

Only bytes go. Rows, keys and hashes stay, so dedupe, threading, the audit trail, the SLA report and the
labels retraining learns from are the same after a prune. Each pass works in batches of
`policy.batch_size`, one transaction each, marking what it emptied (`*_pruned_at`): an interrupted
prune has lost nothing and the next run goes on where it stopped. Rows are claimed with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so a prune never waits on (or blocks) the rows intake holds.

Never pruned: an outbox write not yet sent, a raw record still pending or in quarantine (replay needs
its bytes), an enquiry with an open review item or a running or paused SLA clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.retention import RetentionPolicy
from models.vocabulary import RawStatus
from store.common import Clock, for_update_skip_locked, utcnow
from store.db import transaction
from store.tables import Base, Correction, CrmOutbox, Enquiry, EnquiryMessage, RawRecord, ReviewItem, SlaTimer

# Raw records whose story is over: a quarantined record may be replayed and needs its bytes.
DONE_RAW = (
    RawStatus.ENQUIRY.value,
    RawStatus.DUPLICATE.value,
    RawStatus.THREADED.value,
    RawStatus.SKIPPED.value,
)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
PHONE = re.compile(r"(?<!\w)\+?\d[\d ()./-]{6,}\d(?!\w)")


def mask_contacts(text: str) -> str:
    """Text with e-mail addresses and phone numbers replaced by placeholders."""
    return PHONE.sub("[phone]", EMAIL.sub("[email]", text))


@dataclass
class PassSummary:
    """One kind of body: rows emptied (or, in a dry run, that would be) and the bytes they held."""

    rows: int = 0
    bytes: int = 0
    batches: int = 0
    cutoff: str | None = None


@dataclass
class PruneSummary:
    dry_run: bool
    outbox_payloads: PassSummary = field(default_factory=PassSummary)
    raw_bodies: PassSummary = field(default_factory=PassSummary)
    enquiry_bodies: PassSummary = field(default_factory=PassSummary)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _length(column: Any, dialect: str) -> Any:
    """Bytes a column holds, on either backend (JSON is text on SQLite, jsonb on PostgreSQL)."""
    if dialect == "postgresql":
        return sa.func.coalesce(sa.func.pg_column_size(column), 0)
    return sa.func.coalesce(sa.func.length(sa.cast(column, sa.LargeBinary)), 0)


def _outbox_where(cutoff: datetime) -> list[Any]:
    return [CrmOutbox.payload_pruned_at.is_(None), CrmOutbox.status == "sent", CrmOutbox.sent_at < cutoff]


def _raw_where(cutoff: datetime) -> list[Any]:
    return [
        RawRecord.payload_pruned_at.is_(None),
        RawRecord.imported_at < cutoff,
        RawRecord.status.in_(DONE_RAW),
    ]


def _enquiry_where(cutoff: datetime, policy: RetentionPolicy) -> list[Any]:
    conditions = [
        Enquiry.body_pruned_at.is_(None),
        Enquiry.received_at < cutoff,
        ~sa.exists().where(ReviewItem.enquiry_id == Enquiry.id, ReviewItem.status != "done"),
        ~sa.exists().where(SlaTimer.enquiry_id == Enquiry.id, SlaTimer.stopped_at.is_(None)),
    ]
    if policy.enquiry_bodies.keep_corrected:
        conditions.append(~sa.exists().where(Correction.enquiry_id == Enquiry.id))
    return conditions


def _estimate(session: Session, model: type[Base], where: list[Any], *columns: Any) -> tuple[int, int]:
    dialect = session.get_bind().dialect.name
    size = sum((_length(column, dialect) for column in columns), sa.literal(0))
    row = session.execute(
        sa.select(sa.func.count(), sa.func.sum(size)).select_from(model).where(*where)
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


def _batches(
    factory: sessionmaker[Session],
    summary: PassSummary,
    select: Callable[[Session], sa.Select[Any]],
    apply: Callable[[Session, list[Any]], int],
    max_batches: int | None,
) -> None:
    """Claim, change and commit one batch at a time until nothing is left (or `max_batches`)."""
    while max_batches is None or summary.batches < max_batches:
        with transaction(factory) as session:
            rows = list(session.execute(for_update_skip_locked(select(session), session)))
            if not rows:
                return
            summary.bytes += apply(session, rows)
            summary.rows += len(rows)
            summary.batches += 1


def _empty_payloads(
    factory: sessionmaker[Session],
    summary: PassSummary,
    payload: Any,
    empty: Any,
    *,
    where: Sequence[Any],
    oldest_first: Sequence[Any],
    cutoff: datetime,
    now: datetime,
    batch_size: int,
    dialect: str,
    dry_run: bool,
    max_batches: int | None,
) -> None:
    """One pass that empties a payload column (the row, its keys and hashes stay), oldest first, and
    stamps `payload_pruned_at`; `dry_run` only counts."""
    summary.cutoff = cutoff.isoformat()
    model = payload.class_
    if dry_run:
        with factory() as session:
            summary.rows, summary.bytes = _estimate(session, model, where, payload)
        return

    def rows(_: Session) -> sa.Select[Any]:
        return (
            sa.select(model.id, _length(payload, dialect))
            .where(*where)
            .order_by(*oldest_first)
            .limit(batch_size)
        )

    def empty_them(session: Session, found: list[Any]) -> int:
        session.execute(
            sa.update(model)
            .where(model.id.in_([row[0] for row in found]))
            .values({payload.key: empty, "payload_pruned_at": now})
        )
        return sum(int(row[1]) for row in found)

    _batches(factory, summary, rows, empty_them, max_batches)


def prune(
    factory: sessionmaker[Session],
    policy: RetentionPolicy,
    *,
    clock: Clock = utcnow,
    dry_run: bool = False,
    max_batches: int | None = None,
) -> PruneSummary:
    """Apply the retention policy: outbox payloads, raw bodies, enquiry bodies, in that order.

    `dry_run` counts what would go and changes nothing. `max_batches` bounds each pass (a scheduled run
    that must finish in its slot); the next run goes on from there.
    """
    now = clock()
    summary = PruneSummary(dry_run=dry_run)
    size = policy.batch_size
    with factory() as session:
        dialect = session.get_bind().dialect.name

    # (what the policy keeps, where its pass is counted, the column emptied, its empty value, which
    # rows may lose it as of a cutoff, oldest first)
    payload_passes = (
        (
            policy.outbox_payloads,
            summary.outbox_payloads,
            CrmOutbox.payload,
            {},
            _outbox_where,
            (CrmOutbox.sent_at, CrmOutbox.id),
        ),
        (
            policy.raw_bodies,
            summary.raw_bodies,
            RawRecord.payload,
            b"",
            _raw_where,
            (RawRecord.imported_at, RawRecord.id),
        ),
    )
    for kept, counted, payload, empty, rows_before, oldest_first in payload_passes:
        if kept.days is None:
            continue
        cutoff = now - timedelta(days=kept.days)
        _empty_payloads(
            factory,
            counted,
            payload,
            empty,
            where=rows_before(cutoff),
            oldest_first=oldest_first,
            cutoff=cutoff,
            now=now,
            batch_size=size,
            dialect=dialect,
            dry_run=dry_run,
            max_batches=max_batches,
        )

    keep = policy.enquiry_bodies
    if keep.days is not None:
        cutoff = now - timedelta(days=keep.days)
        summary.enquiry_bodies.cutoff = cutoff.isoformat()
        where = _enquiry_where(cutoff, policy)
        if dry_run:
            with factory() as session:
                summary.enquiry_bodies.rows, summary.enquiry_bodies.bytes = _estimate(
                    session, Enquiry, where, Enquiry.body
                )
        else:

            def enquiry_rows(_: Session) -> sa.Select[Any]:
                return (
                    sa.select(Enquiry.id, Enquiry.subject, Enquiry.body)
                    .where(*where)
                    .order_by(Enquiry.received_at, Enquiry.id)
                    .limit(size)
                )

            def empty_enquiries(session: Session, rows: list[Any]) -> int:
                freed = 0
                changes = []
                for enquiry_id, subject, body in rows:
                    kept_body = mask_contacts(body[: keep.keep_body_chars]) if keep.keep_body_chars else ""
                    kept_subject = mask_contacts(subject) if keep.keep_subject else ""
                    freed += len(body.encode()) - len(kept_body.encode())
                    changes.append({"row_id": enquiry_id, "new_body": kept_body, "new_subject": kept_subject})
                table = cast(sa.Table, Enquiry.__table__)
                session.connection().execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("row_id"))
                    .values(
                        body=sa.bindparam("new_body"), subject=sa.bindparam("new_subject"), body_pruned_at=now
                    ),
                    changes,
                )
                ids = [row[0] for row in rows]
                message_bytes = session.scalar(
                    sa.select(sa.func.sum(_length(EnquiryMessage.body, dialect))).where(
                        EnquiryMessage.enquiry_id.in_(ids)
                    )
                )
                session.execute(
                    sa.update(EnquiryMessage).where(EnquiryMessage.enquiry_id.in_(ids)).values(body="")
                )
                return freed + int(message_bytes or 0)

            _batches(factory, summary.enquiry_bodies, enquiry_rows, empty_enquiries, max_batches)
    return summary


@dataclass(frozen=True)
class TableSize:
    table: str
    rows: int
    bytes: int


def table_sizes(session: Session) -> list[TableSize]:
    """Space each table takes with its indexes, largest first.

    SQLite: the pages `dbstat` counts per table and index. PostgreSQL: `pg_total_relation_size`
    (table, indexes and TOAST).
    """
    names = [table.name for table in Base.metadata.sorted_tables]
    dialect = session.get_bind().dialect.name
    sizes: dict[str, int] = {name: 0 for name in names}
    if dialect == "postgresql":
        for name in names:
            sizes[name] = int(
                session.scalar(sa.text("SELECT pg_total_relation_size(CAST(:n AS regclass))"), {"n": name})
                or 0
            )
    else:
        owner: dict[str, str] = {
            str(name): str(table)
            for name, table in session.execute(
                sa.text("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")
            )
        }
        for name, pages in session.execute(sa.text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")):
            table = owner.get(name, name)
            if table in sizes:
                sizes[table] += int(pages or 0)
    result = []
    for name in names:
        rows = int(session.scalar(sa.select(sa.func.count()).select_from(sa.table(name))) or 0)
        result.append(TableSize(name, rows, sizes[name]))
    return sorted(result, key=lambda item: (-item.bytes, item.table))
