"""The one place that makes engines and sessions.

SQLite is the embedded default (a file under TRIAGE_HOME, WAL mode so the web app reads while a flow
writes); PostgreSQL takes over when several workers run. Repository functions elsewhere in `store`
take a session as their first argument and never make their own.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest migration's revision; tests/test_schema.py checks it is Alembic's head.
SCHEMA_REVISION = "0019"
# How long a write waits for SQLite's one write lock before it fails with "database is locked".
SQLITE_LOCK_WAIT_SECONDS = 30


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the pragmas and pool settings each backend needs."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = sa.create_engine(url, connect_args={"timeout": SQLITE_LOCK_WAIT_SECONDS}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (the web app) work while a flow writes; NORMAL sync is safe under WAL.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; plain postgresql:// would pick psycopg2.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file (and a missing folder) for its owner only: 0600, folder 0700.

    The database holds password hashes and personal data. An existing file readable by others is
    tightened, with its WAL and shared-memory files (SQLite gives those the database file's mode).
    """
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists() and candidate.stat().st_mode & 0o077:
            candidate.chmod(0o600)


def migrated_engine(url: str) -> Engine:
    """The engine of a command or flow: made, and the schema brought to the newest revision."""
    engine = make_engine(url)
    upgrade_schema(engine)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (we hand them to templates and JSON)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def write_transaction(
    factory: sessionmaker[Session], *, clock: Callable[[], float] = time.monotonic
) -> Iterator[Session]:
    """A unit of work that writes at once: on SQLite it takes the write lock first (BEGIN IMMEDIATE),
    looking for it every millisecond instead of in SQLite's busy handler.

    The busy handler sleeps in growing steps, 100 ms apiece once it has waited a quarter of a second,
    and a process writing part after part (the pipeline) takes the lock again within microseconds of
    its commit: a waiter that sleeps through those gaps can wait for seconds. Looking every
    millisecond, it gets the lock in the gap the pipeline leaves between its parts
    (pipeline/process.py, SQLITE_PART_GAP_SECONDS). After `SQLITE_LOCK_WAIT_SECONDS` it gives up with
    SQLite's own "database is locked", as the busy handler would. Elsewhere it is `transaction`.
    """
    with factory() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            _begin_immediate(session.connection().connection.driver_connection, clock)
        yield session


def _begin_immediate(driver: Any, clock: Callable[[], float]) -> None:
    deadline = clock() + SQLITE_LOCK_WAIT_SECONDS
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or clock() >= deadline:
                    raise
            time.sleep(0.001)
    finally:
        driver.execute(f"PRAGMA busy_timeout = {SQLITE_LOCK_WAIT_SECONDS * 1000}")


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision (idempotent)."""
    # Every command calls this: one query tells an up-to-date database apart without importing Alembic.
    if current_revisions(engine) == {SCHEMA_REVISION}:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revisions(engine: Engine) -> set[str]:
    """The Alembic revisions the database is at (none for a new database)."""
    try:
        with engine.connect() as connection:
            return set(connection.scalars(sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.DBAPIError:  # no alembic_version table yet
        return set()


def is_postgresql(session: Session) -> bool:
    """Whether row locks with SKIP LOCKED are available."""
    return session.get_bind().dialect.name == "postgresql"
