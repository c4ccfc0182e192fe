"""Read a source into raw records: each batch and its checkpoint in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Source
from models.errors import FatalError
from store import raw
from store.common import Clock, utcnow
from store.db import transaction

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    source: str
    channel: str
    read: int = 0
    stored: int = 0
    batches: int = 0
    error: str | None = None  # why the source could not be read this pass


def ingest_source(
    factory: sessionmaker[Session],
    source: Source,
    *,
    on_batch: Callable[[int], None] | None = None,
    clock: Clock = utcnow,
) -> IngestSummary:
    """Store every record the source has after its checkpoint; a record seen before is not stored again."""
    check = source.check()
    if not check.ok:
        raise FatalError(f"{source.name}: {check.message}")
    with factory() as session:
        state = raw.get_checkpoint(session, source.name)
    summary = IngestSummary(source=source.name, channel=source.channel.value)
    for batch in source.read(state):
        with transaction(factory) as session:
            summary.stored += raw.save_batch(
                session, batch.records, source=source.name, state=batch.state, now=clock()
            )
        summary.read += len(batch.records)
        summary.batches += 1
        after_stored = getattr(source, "after_stored", None)
        if callable(after_stored):
            after_stored(batch)  # e.g. IMAP: mark seen / move, only once the batch is safe in the database
        if on_batch is not None:
            on_batch(len(batch.records))
    log.info("%s: read %d records, stored %d new", source.name, summary.read, summary.stored)
    return summary
