"""Web-hook deliveries, written in group commits.

A delivery is answered only once it is stored, so every delivery is a write, and on SQLite every
write takes the database's one write lock. Written one transaction each, a burst of deliveries queues
on that lock and each pays a whole transaction (three statements and a commit) of its own: at 200 a
second that alone was more than the web process's one core could give while the pipeline ran.

So deliveries are written in group commits: a delivery that arrives while a batch is being written
waits, and the next thread to take the lock writes every delivery waiting at that moment in one
transaction, with one "last delivery" mark per source. A delivery that arrives alone is written at
once, as before. Should a batch fail, its deliveries are written again one transaction each, so a
delivery that cannot be stored fails alone (its tool is answered an error and retries) and never
holds up the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from models.records import RawRecordIn
from store import hook_fetches, raw
from store.db import write_transaction

log = logging.getLogger(__name__)
# The most deliveries in one transaction: the pipeline waits for the write lock meanwhile, so a batch
# stays about as short as one of the pipeline's own write parts (store/common.SQLITE_WRITE_CHUNK).
MAX_BATCH = 100


@dataclass
class Delivery:
    """What one web-hook request stores: raw records, and events whose content must be fetched."""

    source: str
    records: Sequence[RawRecordIn]
    fetches: Sequence[tuple[str, bytes]]
    received_at: datetime
    new: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _write(session: Session, delivery: Delivery) -> int:
    stored = raw.save_batch(
        session, delivery.records, source=delivery.source, state=None, now=delivery.received_at
    )
    waiting = hook_fetches.save_events(
        session, source=delivery.source, events=delivery.fetches, received_at=delivery.received_at
    )
    return stored + waiting


def _outcome(delivery: Delivery) -> int:
    if delivery.error is not None:
        raise delivery.error
    return delivery.new


class DeliveryWriter:
    """Stores deliveries from many request threads, batching those that wait (one per app)."""

    def __init__(self, factory: sessionmaker[Session], *, max_batch: int = MAX_BATCH) -> None:
        self.factory = factory
        self.max_batch = max_batch
        self._writing = threading.Lock()
        self._queue_lock = threading.Lock()
        self._waiting: list[Delivery] = []
        # When this process last marked each source's "last delivery": the mark moves at most every
        # DELIVERY_MARK_EVERY anyway, so within that time its two statements are left out.
        self._marked: dict[str, datetime] = {}
        self.batches = 0  # transactions committed, for tests and the bench

    def store(self, delivery: Delivery) -> int:
        """Store `delivery` (blocking: call from a worker thread); returns how many of its records were
        new. Raises what storing it raised."""
        with self._queue_lock:
            self._waiting.append(delivery)
        while not delivery.done.is_set():
            with self._writing:
                if delivery.done.is_set():
                    break
                with self._queue_lock:
                    batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                self._write_batch(batch)
        return _outcome(delivery)

    def _write_batch(self, batch: list[Delivery]) -> None:
        now = max(d.received_at for d in batch)
        to_mark = {d.source for d in batch if self._mark_due(d.source, now)}
        try:
            with write_transaction(self.factory) as session:
                counts = [_write(session, delivery) for delivery in batch]
                raw.mark_delivered(session, to_mark, now=now)
        except Exception as error:
            if len(batch) == 1:  # handed to the request's thread, which raises it
                batch[0].error = error
                batch[0].done.set()
                return
            log.warning(
                "a batch of %d web-hook deliveries failed; writing each alone", len(batch), exc_info=True
            )
            for delivery in batch:
                self._write_batch([delivery])
            return
        self.batches += 1
        self._marked.update(dict.fromkeys(to_mark, now))
        for delivery, new in zip(batch, counts, strict=True):
            delivery.new = new
            delivery.done.set()

    def _mark_due(self, source: str, now: datetime) -> bool:
        marked = self._marked.get(source)
        return marked is None or now - marked >= raw.DELIVERY_MARK_EVERY
