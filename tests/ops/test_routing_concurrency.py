"""Two intake workers routing at once never give anyone more than their capacity (PostgreSQL and SQLite).

Two spawned processes pass a barrier together and work the same pending records in small batches; the
members' rows are locked while a batch is routed (row locks on PostgreSQL, the write lock on SQLite),
so the loads each worker counts include the other's committed assignments.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config.settings import Settings
from models.records import Channel
from pipeline.runtime import Runtime
from review import auth
from store import review_repo
from store.db import make_engine, make_session_factory
from store.tables import ReviewItem
from tests.ops.test_concurrency import form_posts, pg_url, run_two  # noqa: F401 - pg_url: the fixture
from tests.support.pipeline_support import store

pytestmark = pytest.mark.slow

CAPACITIES = {"ana": 7, "ben": 7, "cy": 6}
RECORDS = 40
BATCH = 4


def _route_worker(url: str, home: str, barrier: Any) -> dict[str, Any]:
    from pipeline.process import process_pending

    runtime = Runtime(Settings(home=Path(home), database_url=url))
    context = runtime.pipeline_context()  # no model: every enquiry needs people
    barrier.wait()
    summary = process_pending(runtime.factory, context, batch_size=BATCH)
    return {"enquiries": summary.outcomes.get("enquiry", 0)}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_never_exceed_a_members_capacity(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'triage.db'}"
    url = sqlite_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    Runtime(Settings(home=tmp_path / "home", database_url=url)).engine.dispose()  # migrated
    factory = make_session_factory(engine)
    with factory() as session:
        for name, capacity in CAPACITIES.items():
            auth.create_user(session, name, role="sdr", password="correct horse battery")
            user = review_repo.get_user(session, name)
            assert user is not None
            user.teams, user.capacity = "sales", capacity
        session.commit()
    store(factory, Channel.FORM, [json.dumps(post).encode() for post in form_posts(RECORDS)])

    results = run_two(_route_worker, url, tmp_path / "home", ((), ()))

    assert sum(r["enquiries"] for r in results) == RECORDS
    if backend == "postgresql":  # row locks: both workers claim and route side by side
        assert all(r["enquiries"] > 0 for r in results), results
    # SQLite's one write lock serialises the claims, so a worker that starts late may find nothing left;
    # the capacities below hold either way.
    with factory() as session:
        owners = Counter(session.scalars(sa.select(ReviewItem.owner)))
    assert {name: owners[name] for name in CAPACITIES} == CAPACITIES  # everyone filled, nobody over
    assert owners[None] == RECORDS - sum(CAPACITIES.values())  # the rest wait in the pool
    engine.dispose()
