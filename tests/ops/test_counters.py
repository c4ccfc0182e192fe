"""The counters /metrics and `triage status` read stay equal to the tables, on SQLite and PostgreSQL.

A mixed day: intake (new enquiries, a duplicate, a threaded reply, a form), the CRM drain, a correction,
a claim and an accept, SLA breaches marked by the watch, erasure of one person, retention pruning and a
rolled-back batch. After each step the counters (folded or not) must equal what the tables say.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from datetime import UTC, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.retention import RetentionPolicy
from models.records import Channel
from pipeline.process import PipelineContext, process_pending
from review import service
from sla.policies import load_policies
from sla.watch import watch_pass
from store import counters, observability
from store.db import transaction
from store.erasure import erase_person
from store.retention import prune
from store.tables import Counter as CounterRow
from store.tables import CounterDelta, Enquiry, ReviewItem
from tests.builders import T0, email_bytes
from tests.ops.test_erasure import ADDRESS, KEY, build_day
from tests.sla.sla_helpers import RecordingNotifier
from tests.support.pipeline_support import context, store  # noqa: F401 - the fixture


def assert_exact(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        kept, truth = counters.figures(session), counters.recomputed(session)
    assert counters.differences(kept, truth) == []
    assert any(truth.values()), "the workload counted nothing"


def test_counters_equal_the_tables_after_a_mixed_workload(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    build_day(session_factory, context)  # intake, CRM drain, a note and a correction
    assert_exact(session_factory)
    unsure = [
        email_bytes(message_id=f"<m{i}@x>", sender=f"P {i} <p{i}@example.org>", body=f"maybe a demo {i}?")
        for i in range(4)
    ]
    store(session_factory, Channel.EMAIL, unsure, source="more")
    process_pending(session_factory, dataclasses.replace(context, clock=lambda: T0))

    with transaction(session_factory) as session:
        item_ids = list(
            session.scalars(
                sa.select(ReviewItem.id).where(ReviewItem.status == "open").order_by(ReviewItem.id)
            )
        )
        assert len(item_ids) >= 2
        at = T0 + timedelta(hours=3)
        assert service.claim(session, item_ids[0], user="sam", now=at)
        service.accept(session, item_ids[1], user="sam", now=at)
    with session_factory() as session:
        assert counters.fold(session) > 0  # half of what follows is read from deltas, half folded
    assert_exact(session_factory)

    summary = watch_pass(session_factory, load_policies(), RecordingNotifier(), now=T0 + timedelta(days=5))
    assert summary.breached > 0
    assert_exact(session_factory)

    # A batch that fails rolls its deltas back with its rows.
    with pytest.raises(RuntimeError), transaction(session_factory) as session:
        session.execute(sa.update(ReviewItem).values(status="done"))
        raise RuntimeError("crash mid-batch")
    assert_exact(session_factory)

    erased = erase_person(session_factory, ADDRESS, requested_by="dpo", key=KEY, clock=lambda: T0)
    assert erased.counts["enquiries"] == 1
    assert_exact(session_factory)

    later = T0 + timedelta(days=800)
    pruned = prune(session_factory, RetentionPolicy(version=1), clock=lambda: later)
    assert pruned.as_dict()  # ran; pruning empties bodies and changes no counted column
    store(session_factory, Channel.EMAIL, [email_bytes(message_id="<late@x>")], source="late")
    process_pending(session_factory, dataclasses.replace(context, clock=lambda: later))
    assert_exact(session_factory)

    with session_factory() as session:
        lanes = dict(observability.enquiries_by_lane(session))
        assert sum(lanes.values()) == session.scalar(sa.select(sa.func.count()).select_from(Enquiry))


def test_recount_rebuilds_counters_that_were_lost_or_wrong(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    build_day(session_factory, context)
    with transaction(session_factory) as session:
        session.execute(sa.delete(CounterDelta))
        session.execute(sa.delete(CounterRow).where(CounterRow.family == "enquiries"))
        session.add(CounterRow(family="review_items", k1="sales", k2="open", k3="", n=999, amount=0.0))
    with session_factory() as session:
        assert counters.differences(counters.figures(session), counters.recomputed(session))
        families = counters.recount(session)
    assert families["enquiries"] > 0
    assert_exact(session_factory)
    with session_factory() as session:
        assert counters.fold(session) == 0  # recount leaves no deltas behind


def test_the_metrics_families_equal_the_tables_after_a_pipeline_day(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    """Migration 0019's families (drift per day, replies, first touches, owners, intake runs and their
    stage seconds) after intake, replies, first touches, routing, claims and recorded runs."""
    from pipeline.jobs import record_flow_run
    from pipeline.runtime import Runtime
    from tests.ops.test_reply_metrics import _seed

    build_day(session_factory, context)
    _seed(session_factory)  # replies in every state, first touches from three sources
    with transaction(session_factory) as session:
        items = list(session.scalars(sa.select(ReviewItem).order_by(ReviewItem.id)))
        assert len(items) >= 2
        items[0].owner, items[0].team = "olu", "sales"  # what owner routing writes
        items[1].owner, items[1].team = "sam", "support"
    with transaction(session_factory) as session:
        service.claim(session, items[1].id, user="sam", now=T0 + timedelta(hours=3))
    runtime = cast(Runtime, SimpleNamespace(factory=session_factory, clock=lambda: T0))
    record_flow_run(
        runtime, "intake", {"enquiries": 5, "stage_seconds": {"normalise": 0.25, "classify": 1.5}}
    )
    record_flow_run(runtime, "intake", {"enquiries": 2, "stage_seconds": {"classify": 0.5}})  # folds too
    record_flow_run(runtime, "crm-touches", {"stage_seconds": {"poll": 9.0}})  # not an intake run
    with session_factory() as session:
        session.execute(sa.update(ReviewItem).where(ReviewItem.id == items[0].id).values(team="pricing"))
        session.commit()  # a delta not folded yet
    assert_exact(session_factory)

    with session_factory() as session:
        kept = counters.figures(session)
        assert observability.stage_seconds(session) == ({"normalise": 0.25, "classify": 2.0}, 7)
        assert ("olu", "pricing", 1) in observability.open_by_owner_team(session)
        assert ("sam", "support", 1) in observability.open_by_owner_team(session)
        assert observability.reply_states(session) == sorted(
            [("reply", "pending", 1), ("reply", "retrying", 1), ("reply", "sent", 1),
             ("reply", "failed", 1), ("auto_reply", "sent", 2), ("auto_reply", "sending", 1)]
        )  # fmt: skip
        # The day and bin expressions against Python's reading of the rows (the recount shares the SQL).
        rows = session.execute(
            sa.select(Enquiry.created_at, Enquiry.model_version, Enquiry.intent, Enquiry.confidence).where(
                Enquiry.model_version != "rule:honeypot"
            )
        ).all()
    days = Counter((at.astimezone(UTC).date().isoformat(), m, i) for at, m, i, _ in rows)
    assert {key: n for key, (n, _) in kept["drift_intents"].items()} == dict(days)
    edges = counters.DRIFT_EDGES
    bins = Counter(
        (
            at.astimezone(UTC).date().isoformat(),
            m,
            repr(edges[min(bisect.bisect_right(edges, c) - 1, len(edges) - 2)]),
        )
        for at, m, _, c in rows
    )
    assert {key: n for key, (n, _) in kept["drift_confidence"].items()} == dict(bins)
    assert len(rows) > 3


# PostgreSQL only: SQLite reuses the pages of deleted rows, and there a fold runs no VACUUM.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_large_fold_vacuums_the_deltas_on_postgresql(session_factory: sessionmaker[Session]) -> None:
    """After a fold of more than VACUUM_AFTER_DELTAS deltas, `counter_deltas` has been vacuumed."""
    rows = 12_000
    assert rows > counters.VACUUM_AFTER_DELTAS
    with transaction(session_factory) as session:
        session.execute(
            sa.text(
                "INSERT INTO counter_deltas (family, k1, k2, k3, n, amount) "
                "SELECT 'review_items', 'q', 'open', '', 1, 0.0 FROM generate_series(1, :rows)"
            ),
            {"rows": rows},
        )

    def stats() -> tuple[Any, int]:
        engine = session_factory.kw["bind"]
        with engine.connect() as connection:  # a new backend: no cached statistics snapshot
            connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            last, dead = connection.exec_driver_sql(
                "SELECT last_vacuum, n_dead_tup FROM pg_stat_user_tables WHERE relname = 'counter_deltas'"
            ).one()
        return last, int(dead)

    before, _ = stats()
    with session_factory() as session:
        assert counters.fold(session) == rows
    after, dead = stats()
    assert after is not None and (before is None or after > before)
    assert dead == 0
    with session_factory() as session:
        assert counters.counts(session, "review_items")[("q", "open", "")] == rows


def _migrate(factory: sessionmaker[Session], revision: str, *, down: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with factory.kw["bind"].begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_migration_0019_backfills_the_new_families_and_its_downgrade_keeps_0017s(
    session_factory: sessionmaker[Session],
    context: PipelineContext,  # noqa: F811
) -> None:
    from tests.ops.test_reply_metrics import _seed

    build_day(session_factory, context)
    _seed(session_factory)
    _migrate(session_factory, "0018", down=True)
    with session_factory() as session:
        kept = counters.figures(session)
    assert not any(kept[name] for name in counters.FAMILY_NAMES if name not in counters.FAMILIES_0017)
    # 0017's triggers still count after the downgrade: a new run's rows are in its families.
    store(session_factory, Channel.EMAIL, [email_bytes(message_id="<between@x>")], source="between")
    process_pending(session_factory, dataclasses.replace(context, clock=lambda: T0))
    with session_factory() as session:
        old = counters.differences(
            counters.figures(session, counters.FAMILIES_0017),
            counters.recomputed(session, counters.FAMILIES_0017),
        )
    assert old == []
    _migrate(session_factory, "head")  # the backfill of the rows already there
    assert_exact(session_factory)
    with session_factory() as session:
        kept = counters.figures(session)
    assert kept["drift_intents"] and kept["reply_outbox"] and kept["first_touches"] and kept["review_owners"]


def test_every_counter_family_is_created_by_exactly_one_migration() -> None:
    # A family added to FAMILIES without a migration of its own would have no triggers on a database
    # migrated before it; one listed twice would be backfilled twice.
    created = counters.FAMILIES_0017 + counters.FAMILIES_0019
    assert sorted(created) == sorted(counters.FAMILY_NAMES)
    assert len(set(created)) == len(created)
