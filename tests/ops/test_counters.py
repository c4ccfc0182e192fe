"""The counters /metrics and `triage status` read stay equal to the tables, on SQLite and PostgreSQL.

A mixed day: intake (new enquiries, a duplicate, a threaded reply, a form), the CRM drain, a correction,
a claim and an accept, SLA breaches marked by the watch, erasure of one person, retention pruning and a
rolled-back batch. After each step the counters (folded or not) must equal what the tables say.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

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
from store.tables import Counter, CounterDelta, Enquiry, ReviewItem
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
        session.execute(sa.delete(Counter).where(Counter.family == "enquiries"))
        session.add(Counter(family="review_items", k1="sales", k2="open", k3="", n=999, amount=0.0))
    with session_factory() as session:
        assert counters.differences(counters.figures(session), counters.recomputed(session))
        families = counters.recount(session)
    assert families["enquiries"] > 0
    assert_exact(session_factory)
    with session_factory() as session:
        assert counters.fold(session) == 0  # recount leaves no deltas behind
