"""Lookups that run per batch or per scrape are index-backed: their query plans hold no full table scan.

Each function runs against an empty database while its SQL is captured; every captured SELECT is then
explained. SQLite: `EXPLAIN QUERY PLAN` must not `SCAN` a table (a `SCAN ... USING COVERING INDEX` is an
index pass, allowed for the counts). PostgreSQL: with sequential scans priced out
(`enable_seqscan = off`), a plan that still has a `Seq Scan` has no index to use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from store import counters, enquiries, observability, raw, review_repo, sla_repo
from store.tables import Base, Enquiry, RawRecord, ReviewItem
from tests.builders import insert_enquiry

WEEK = datetime(2026, 11, 1, tzinfo=UTC)
LOOKUPS: dict[str, Callable[[Session], Any]] = {
    "dedupe by content hash": lambda s: enquiries.seen_content(s, ["h1", "h2"]),
    "thread by message key": lambda s: enquiries.enquiries_by_message_key(s, ["<a@x>"]),
    "thread by conversation key": lambda s: enquiries.enquiries_by_thread_key(s, ["c-1"]),
    "thread by sender and subject": lambda s: enquiries.enquiries_by_sender_subject(s, [("a@x", "demo")]),
    "chat keys of an enquiry": lambda s: enquiries.known_chat_keys(s, ["e1"]),
    "claim pending records": lambda s: raw.claim_pending(s, limit=10),
    "count pending records": raw.count_pending,
    "queue filtered by intent": lambda s: review_repo.queue_rows(s, intent="pricing"),
    "queue filtered by queue": lambda s: review_repo.queue_rows(s, queue="sales"),
    "drift: last week's confidences": lambda s: observability.confidence_histogram(
        s, (0.0, 0.5, 1.0), since=WEEK, model_version="m"
    ),
}
# Counts for `triage status` and /metrics come from the counters (store/counters.py): they read no
# table but those two, whatever the store holds.
COUNTED: dict[str, Callable[[Session], Any]] = {
    "records by channel and outcome": observability.raw_by_channel_status,
    "enquiries by lane": observability.enquiries_by_lane,
    "review backlog": observability.review_backlog,
    "sla timers by status": observability.sla_by_status,
    "outbox by status": observability.outbox_by_status,
    "confidence histogram": lambda s: observability.confidence_buckets(s, counters.CONFIDENCE_BUCKETS),
    # Migration 0019: drift's week, the reply outbox, first touches, owners' open items, stage seconds.
    "drift: last seven days' intents and confidence bins": lambda s: observability.drift_counts(
        s, days_from=WEEK.date(), model_version="m"
    ),
    "replies by kind and state": observability.reply_states,
    "first touches by source": sla_repo.first_touches_by_source,
    "open review items by owner and team": observability.open_by_owner_team,
    "stage seconds of intake runs": observability.stage_seconds,
}
COUNTER_TABLES = {"counters", "counter_deltas"}
# The rest of what status and /metrics count: an index-only pass is fine, a pass over the rows is not.
COUNTS: dict[str, Callable[[Session], Any]] = {
    "open quarantine": observability.open_quarantine,
    "confidence histogram on other edges": lambda s: observability.confidence_buckets(s, (0.5, 0.9)),
}


TABLES = set(Base.metadata.tables)


def captured(engine: Engine, work: Callable[[Session], Any]) -> list[tuple[str, Any]]:
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not many and "FROM" in statement.upper():
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        with sessionmaker(bind=engine)() as session:
            work(session)
            session.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    assert statements, "the function ran no query"
    return statements


def full_scans(engine: Engine, statements: list[tuple[str, Any]], *, covering_ok: bool) -> list[str]:
    found = []
    with engine.connect() as connection:
        raw_connection = connection.connection.driver_connection
        assert raw_connection is not None
        for statement, parameters in statements:
            if engine.dialect.name == "sqlite":
                cursor = raw_connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
                for row in cursor.fetchall():
                    detail = str(row[-1])
                    scan = re.match(r"SCAN (\w+)( USING (COVERING )?INDEX)?", detail)
                    # Only tables count: "SCAN CONSTANT ROW" and "SCAN (subquery-1)" walk an IN () list.
                    if scan is None or scan.group(1) not in TABLES:
                        continue
                    if scan.group(2) is None or not covering_ok:
                        found.append(f"{detail}  <- {statement[:160]}")
            else:
                with raw_connection.cursor() as cursor:
                    cursor.execute("SET enable_seqscan = off")
                    cursor.execute(f"EXPLAIN {statement}", parameters)
                    plan = "\n".join(str(row[0]) for row in cursor.fetchall())
                    cursor.execute("RESET enable_seqscan")
                if "Seq Scan" in plan:
                    found.append(f"{plan}\n  <- {statement[:160]}")
    return found


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_per_batch_and_per_page_lookups_seek_an_index(engine: Engine, name: str) -> None:
    statements = captured(engine, LOOKUPS[name])
    assert full_scans(engine, statements, covering_ok=False) == []


@pytest.mark.parametrize("name", list(COUNTS))
def test_status_and_metrics_counts_read_an_index_not_the_rows(engine: Engine, name: str) -> None:
    statements = captured(engine, COUNTS[name])
    assert full_scans(engine, statements, covering_ok=True) == []


@pytest.mark.parametrize("name", list(COUNTED))
def test_status_and_metrics_counts_read_only_the_counters(engine: Engine, name: str) -> None:
    for statement, _ in captured(engine, COUNTED[name]):
        named = set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", statement, flags=re.IGNORECASE))
        assert named & TABLES <= COUNTER_TABLES, statement


INTENTS = [f"intent_{i}" for i in range(40)]


def seed_review_items(engine: Engine, count: int) -> None:
    """`count` enquiries with a review item each, over 40 intents and 8 queues, two thirds closed, half
    the rest claimed by sam, one in seven without a due time: a queue whose filters must find a few
    open items of one intent among many."""
    at = datetime(2026, 11, 2, tzinfo=UTC)
    raws, enquiry_rows, items = [], [], []
    for i in range(count):
        enquiry_id = f"{i:032x}"
        intent, queue = INTENTS[i % len(INTENTS)], f"queue_{i % 8}"
        raws.append(
            {"id": i + 1, "source": "plan", "channel": "email", "external_key": enquiry_id, "payload": b"",
             "received_at": at, "imported_at": at, "status": "enquiry", "enquiry_id": enquiry_id}
        )  # fmt: skip
        enquiry_rows.append(
            {"id": enquiry_id, "raw_id": i + 1, "channel": "email", "source": "plan",
             "content_hash": enquiry_id,
             "received_at": at, "subject": "s", "subject_norm": "s", "body": "", "attributes": {},
             "attachments": [], "enrichment": {}, "intent": intent, "queue": queue, "priority": "normal",
             "lane": "hybrid", "confidence": 0.5, "explanation": [], "model_version": "m", "status": "open",
             "created_at": at}
        )  # fmt: skip
        items.append(
            {"enquiry_id": enquiry_id, "lane": "hybrid", "queue": queue, "intent": intent,
             "status": "done" if i % 3 else "claimed" if i % 2 == 0 else "open",
             "claimed_by": None if i % 3 or i % 2 else "sam",
             "due_at": None if i % 7 == 0 else at + timedelta(minutes=i), "created_at": at}
        )  # fmt: skip
    with engine.begin() as connection:
        connection.execute(sa.insert(RawRecord), raws)
        connection.execute(sa.insert(Enquiry), enquiry_rows)
        connection.execute(sa.insert(ReviewItem), items)
        connection.exec_driver_sql("ANALYZE")


QUEUE_FILTERS: dict[str, tuple[dict[str, str], str]] = {
    "intent": ({"intent": "intent_3"}, "ix_review_open_intent_due"),
    "queue": ({"queue": "queue_2"}, "ix_review_open_queue_due"),
    "lane": ({"lane": "hybrid"}, "ix_review_open_lane_due"),
    "owner": ({"claimed_by": "sam"}, "ix_review_open_owner_due"),
    "none": ({}, "ix_review_open_due"),
}


@pytest.mark.parametrize("name", list(QUEUE_FILTERS))
def test_queue_pages_read_the_open_items_index_in_due_order(engine: Engine, name: str) -> None:
    """Each filter of the queue page reads its partial index of open items, in order: no sort of every
    open item, and no pass over the closed ones.

    SQLite's choice does not depend on the rows; PostgreSQL picks by statistics, so it gets enough rows
    (analysed) for the choice to mean something, with sequential scans priced out.
    """
    seed_review_items(engine, 6000)
    filters, expected = QUEUE_FILTERS[name]
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None

        def work(session: Session) -> None:  # the first page, and one past the items with a due time
            review_repo.queue_rows(session, **filters)
            review_repo.queue_rows(session, offset=10_000, **filters)

        kinds = set()
        for statement, parameters in captured(engine, work):
            if "ORDER BY" not in statement:
                continue  # the count and the page's enquiry fields
            kinds.add("without due" if "due_at IS NULL" in statement else "due")
            index = expected
            if engine.dialect.name == "sqlite":
                plan = [str(row[-1]) for row in driver.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
                assert not any("TEMP B-TREE" in line for line in plan), plan
            else:
                with driver.cursor() as cursor:
                    cursor.execute("SET enable_seqscan = off")
                    cursor.execute(f"EXPLAIN {statement}", parameters)
                    plan = [str(row[0]) for row in cursor.fetchall()]
                    cursor.execute("RESET enable_seqscan")
                # PostgreSQL may still sort a few dozen rows found through the index when that is
                # cheaper; what matters is that it reads the open items' index, not the table.
                assert not any("Seq Scan" in line for line in plan), plan
                # By statistics it may walk another index and filter (a filter that matches most open
                # items, LIMIT 50): any index of review_items, never the table.
                index = "Index"
            assert any(index in line for line in plan), plan
    assert kinds == {"due", "without due"}


def test_queue_pages_put_items_without_a_due_time_last(session_factory: sessionmaker[Session]) -> None:
    """The two index ranges make one order: due items by due time, then the rest, across page edges."""
    at = datetime(2026, 11, 2, tzinfo=UTC)
    with session_factory() as session, session.begin():
        for i in range(7):
            enquiry_id = insert_enquiry(session, at=at, subject=f"s{i}")
            due = None if i % 2 else at + timedelta(minutes=10 - i)
            status = "done" if i == 6 else "open"
            session.add(ReviewItem(enquiry_id=enquiry_id, lane="hybrid", queue="q", intent="x", status=status,
                                   due_at=due, created_at=at))  # fmt: skip
    with session_factory() as session:
        pages = [review_repo.queue_rows(session, limit=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert all(total == 6 for _, total in pages)
    subjects = [row.subject for rows, _ in pages for row in rows]
    assert subjects == ["s4", "s2", "s0", "s1", "s3", "s5"]


def test_drift_stage_and_reply_collectors_read_only_the_counters(engine: Engine) -> None:
    """The collectors themselves, not only their store functions: drift reads the active model's row
    and the counters (its reference on training's edges), stages and replies only the counters."""
    from app.metrics import drift_metrics, reply_metrics, stage_metrics
    from store import model_registry

    edges = [round(x / 10, 1) for x in range(11)]
    reference = {"label_shares": {"a": 1.0}, "confidence_histogram": {"edges": edges, "counts": [1] * 10}}
    with sessionmaker(bind=engine)() as session, session.begin():
        model_registry.add_version(
            session, version="m", artifact_path="x", provenance={"reference": reference},
            created_at=WEEK, status="active",
        )  # fmt: skip
    allowed = {
        "drift": COUNTER_TABLES | {"model_versions"},
        "stages": COUNTER_TABLES,
        "replies": COUNTER_TABLES,
    }
    for name, collect in (("drift", drift_metrics), ("stages", stage_metrics), ("replies", reply_metrics)):
        statements = captured(engine, lambda s, collect=collect: collect(s, WEEK))
        read = set()
        for statement, _ in statements:
            read |= set(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", statement, flags=re.IGNORECASE)) & TABLES
        assert read <= allowed[name], (name, read)
        assert read & COUNTER_TABLES, name  # it did read the counters


def test_a_scrape_reads_the_counters_once(engine: Engine) -> None:
    """One query for every counter family, shared by every collector of the scrape."""
    from app.metrics import DatabaseCollector

    reads: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if re.search(r"\bFROM\s+(counters|counter_deltas)\b", statement, flags=re.IGNORECASE):
            reads.append(statement)

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        clock = lambda: WEEK  # noqa: E731
        names = [m.name for m in DatabaseCollector(sessionmaker(bind=engine), clock=clock).collect()]
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    assert "triage_review_backlog" in names and "triage_stage_seconds" in names
    assert len(reads) == 1, reads
