"""Web-hook deliveries in group commits (store/deliveries.py) and SQLite's write lock taken by looking
every millisecond (store/db.write_transaction), on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models.records import Channel, RawRecordIn
from store.db import make_engine, make_session_factory, write_transaction
from store.deliveries import Delivery, DeliveryWriter
from store.tables import HookFetch, RawRecord, SourceCheckpoint

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _delivery(key: str, *, source: str = "hook:typeform:demo", payload: bytes = b"{}") -> Delivery:
    record = RawRecordIn(
        source=source, channel=Channel.FORM, external_key=key, payload=payload, received_at=NOW
    )
    return Delivery(source=source, records=[record], fetches=[], received_at=NOW)


def _stored_keys(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return sorted(session.scalars(sa.select(RawRecord.external_key)))


def _store_while_held(writer: DeliveryWriter, deliveries: list[Delivery]) -> list[object]:
    """Store `deliveries` from one thread each while the writer is busy, so they all wait; then let
    them go. Each outcome: how many records were new, or the error storing it raised."""
    outcomes: list[object] = [None] * len(deliveries)

    def store(index: int) -> None:
        try:
            outcomes[index] = writer.store(deliveries[index])
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=store, args=(index,)) for index in range(len(deliveries))]
    with writer._writing:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(writer._waiting) < len(deliveries) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(writer._waiting) == len(deliveries)
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_deliveries_that_wait_are_written_together_each_once(session_factory: sessionmaker[Session]) -> None:
    writer = DeliveryWriter(session_factory)
    keys = [f"event-{n}" for n in range(18)] + ["event-0", "event-1"]  # two events delivered twice
    outcomes = _store_while_held(writer, [_delivery(key) for key in keys])
    assert sorted(outcomes) == [0, 0] + [1] * 18  # the re-deliveries report nothing new
    assert writer.batches == 1  # one transaction for all twenty, not twenty
    assert _stored_keys(session_factory) == sorted(f"event-{n}" for n in range(18))
    with session_factory() as session:
        mark = session.get(SourceCheckpoint, "hook:typeform:demo")
        assert mark is not None and mark.state == {"last_received_at": NOW.isoformat()}


def test_a_delivery_that_cannot_be_stored_fails_alone(session_factory: sessionmaker[Session]) -> None:
    writer = DeliveryWriter(session_factory)
    bad = _delivery("broken")
    bad.fetches = [("fetch-1", None)]  # type: ignore[list-item]  # a NULL payload: the insert fails
    outcomes = _store_while_held(writer, [_delivery("good-1"), bad, _delivery("good-2")])
    assert outcomes[0] == 1 and outcomes[2] == 1
    assert isinstance(outcomes[1], sa.exc.IntegrityError)
    assert _stored_keys(session_factory) == ["good-1", "good-2"]
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(HookFetch)) == 0


def test_the_last_delivery_mark_is_written_at_most_every_ten_seconds(
    session_factory: sessionmaker[Session],
) -> None:
    writer = DeliveryWriter(session_factory)
    writer.store(_delivery("a"))
    later = _delivery("b")
    later.received_at = NOW.replace(second=5)
    writer.store(later)
    with session_factory() as session:
        mark = session.get(SourceCheckpoint, "hook:typeform:demo")
        assert mark is not None and mark.updated_at.replace(tzinfo=UTC) == NOW
    much_later = _delivery("c")
    much_later.received_at = NOW.replace(second=11)
    writer.store(much_later)
    with session_factory() as session:
        mark = session.get(SourceCheckpoint, "hook:typeform:demo")
        assert mark is not None and mark.updated_at.replace(tzinfo=UTC) == much_later.received_at


@pytest.fixture
def sqlite_factory(tmp_path: Path, _sqlite_template: Path) -> Iterator[tuple[Path, sessionmaker[Session]]]:
    """SQLite only: PostgreSQL has no database-wide write lock, and there write_transaction is a plain
    transaction (the tests above cover it)."""
    path = tmp_path / "triage.db"
    shutil.copyfile(_sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield path, make_session_factory(engine)
    engine.dispose()


def _hold_write_lock(path: Path, seconds: float, holding: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    holding.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


@contextmanager
def _write_lock_held_elsewhere(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds SQLite's write lock for `seconds` from entry."""
    holding = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, seconds, holding))
    holder.start()
    assert holding.wait(10)
    try:
        yield
    finally:
        holder.join()


def test_a_sqlite_write_gets_the_lock_as_soon_as_it_is_free(
    sqlite_factory: tuple[Path, sessionmaker[Session]],
) -> None:
    path, session_factory = sqlite_factory
    looks = 0

    def counting_clock() -> float:
        nonlocal looks
        looks += 1
        return time.monotonic()

    with (
        _write_lock_held_elsewhere(path, 0.4),
        write_transaction(session_factory, clock=counting_clock) as session,
    ):
        session.add(SourceCheckpoint(source="after-the-lock", state={}, updated_at=NOW))
    # It looked again and again while the lock was held (SQLite's busy handler, by this point of a
    # wait, looks once per 100 ms: four times in 0.4 s), and wrote once the lock was free.
    assert looks > 40
    with session_factory() as session:
        assert session.get(SourceCheckpoint, "after-the-lock") is not None
        # the connection went back to the pool with the normal busy timeout
        timeout = session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
        assert timeout == 30_000


def test_a_sqlite_write_that_waits_too_long_says_the_database_is_locked(
    sqlite_factory: tuple[Path, sessionmaker[Session]],
) -> None:
    path, session_factory = sqlite_factory
    ticks = iter(range(0, 10_000, 10))  # a clock that runs ten seconds a look: past 30 s at once
    with (
        _write_lock_held_elsewhere(path, 0.5),
        pytest.raises(sqlite3.OperationalError, match="locked"),
        write_transaction(session_factory, clock=lambda: float(next(ticks))),
    ):
        pass
