"""Figures /metrics now counts in SQL agree with the Python rules they replace, on both databases."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.metrics import CONFIDENCE_BUCKETS, histogram_counts
from store import observability
from store.db import transaction
from store.tables import Enquiry
from tests.builders import T0, insert_enquiry


def test_sql_histograms_match_numpys_rule(session_factory: sessionmaker[Session]) -> None:
    rng = random.Random(3)
    # Edge values on purpose: the first edge, inner edges (right-open) and the last edge (closed).
    values = [0.0, 0.5, 1.0, 0.25, 0.95] + [round(rng.random(), 3) for _ in range(60)]
    with transaction(session_factory) as session:
        for i, value in enumerate(values):
            insert_enquiry(session, id=f"e{i:03d}", at=T0, confidence=value, model_version="m1")
        insert_enquiry(session, id="old", at=T0 - timedelta(days=30), confidence=0.5, model_version="m1")
        insert_enquiry(session, id="other", at=T0, confidence=0.5, model_version="m2")
    edges = [0.0, 0.25, 0.5, 0.75, 0.95, 1.0]
    with session_factory() as session:
        live = observability.confidence_histogram(
            session, edges, since=T0 - timedelta(days=7), model_version="m1"
        )
        cumulative, total, value_sum = observability.confidence_buckets(session, CONFIDENCE_BUCKETS)
        every = [float(v) for v in session.scalars(sa.select(Enquiry.confidence))]
    assert live == histogram_counts(values, edges)
    assert total == len(every) and abs(value_sum - sum(every)) < 1e-6
    assert cumulative == [sum(1 for v in every if v <= edge) for edge in CONFIDENCE_BUCKETS]


def test_slow_collectors_are_recomputed_at_most_once_a_minute(session_factory: sessionmaker[Session]) -> None:
    from collections import Counter

    from prometheus_client.core import GaugeMetricFamily

    from app.metrics import DatabaseCollector, MetricsFn

    calls: Counter[str] = Counter()

    def counting(name: str) -> MetricsFn:
        def collect(_session: Session, _now: object) -> list[Any]:
            calls[name] += 1
            return [GaugeMetricFamily(f"triage_{name}", name, value=float(calls[name]))]

        return collect

    ticks = [0.0]
    cache: dict[str, Any] = {}
    collectors = (("volumes", counting("volumes")), ("drift", counting("drift")))
    seen = []
    for tick in (0.0, 30.0, 61.0):
        ticks[0] = tick
        collector = DatabaseCollector(
            session_factory, collectors=collectors, cache=cache, monotonic=lambda: ticks[0]
        )
        seen.append(
            {
                m.name: m.samples[0].value
                for m in collector.collect()
                if m.name != "triage_metrics_collector_errors"
            }
        )
    assert calls == {"volumes": 3, "drift": 2}
    assert [s["triage_drift"] for s in seen] == [1.0, 1.0, 2.0]
    # Without a cache (tests, the CLI), every collector runs every time.
    list(DatabaseCollector(session_factory, collectors=collectors).collect())
    assert calls["drift"] == 3
