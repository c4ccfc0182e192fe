"""`GET /metrics` in Prometheus' text format, computed from the database at scrape time.

Every figure is read from the tables, so any number of workers and web processes report the same
truth without a shared metrics store. Drift is the population stability index (PSI) of the active
model's predicted classes and confidence over the last week against its training-time reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from store import observability
from store.common import utcnow

router = APIRouter(tags=["metrics"])
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
DRIFT_WINDOW = timedelta(days=7)
PSI_ALERT = 0.2  # the usual rule of thumb: above 0.2 the population has shifted materially
EPSILON = 1e-4


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (each summing to 1)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total else [0.0 for _ in counts]


def histogram_shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Share of values per bin, bins closed on the right: (edges[i-1], edges[i]]."""
    counts = [0] * len(edges)
    for value in values:
        for index, edge in enumerate(edges):
            if value <= edge or index == len(edges) - 1:
                counts[index] += 1
                break
    return shares(counts)


class DatabaseCollector(Collector):
    """Collects every product metric from the database on each scrape."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def collect(self) -> Iterator[Metric]:
        with self._factory() as session:
            yield from self._volumes(session)
            yield from self._confidence_and_drift(session)
            yield from self._stages(session)

    def _volumes(self, session: Session) -> Iterator[Metric]:
        ingested = CounterMetricFamily(
            "triage_records_ingested",
            "Raw records stored, by channel and outcome.",
            labels=["channel", "outcome"],
        )
        for channel, status, count in observability.raw_by_channel_status(session):
            ingested.add_metric([channel, status], count)
        yield ingested
        lanes = CounterMetricFamily("triage_decisions", "Enquiries decided, by lane.", labels=["lane"])
        for lane, count in observability.enquiries_by_lane(session):
            lanes.add_metric([lane], count)
        yield lanes
        backlog = GaugeMetricFamily(
            "triage_review_backlog", "Review items not done, by queue and status.", labels=["queue", "status"]
        )
        for queue, status, count in observability.review_backlog(session):
            backlog.add_metric([queue, status], count)
        yield backlog
        timers = GaugeMetricFamily(
            "triage_sla_timers",
            "SLA timers by kind and status (breached included).",
            labels=["kind", "status"],
        )
        breaches = CounterMetricFamily(
            "triage_sla_breaches", "SLA timers that breached, by kind.", labels=["kind"]
        )
        breached: dict[str, int] = {}
        for kind, status, count in observability.sla_by_status(session):
            timers.add_metric([kind, status], count)
            if status == "breached":
                breached[kind] = breached.get(kind, 0) + count
        for kind, count in breached.items():
            breaches.add_metric([kind], count)
        yield timers
        yield breaches
        crm = GaugeMetricFamily(
            "triage_crm_outbox", "CRM writes by operation and status.", labels=["operation", "status"]
        )
        for operation, status, count in observability.outbox_by_status(session):
            crm.add_metric([operation, status], count)
        yield crm
        yield GaugeMetricFamily(
            "triage_quarantine_open",
            "Quarantined records not yet replayed.",
            value=observability.open_quarantine(session),
        )

    def _confidence_and_drift(self, session: Session) -> Iterator[Metric]:
        values = observability.confidences(session)
        buckets: list[tuple[str, float]] = []
        for edge in CONFIDENCE_BUCKETS:
            buckets.append((str(edge), float(sum(1 for v in values if v <= edge))))
        buckets.append(("+Inf", float(len(values))))
        histogram = HistogramMetricFamily(
            "triage_model_confidence", "Calibrated confidence of the model's decisions."
        )
        histogram.add_metric([], buckets=buckets, sum_value=float(sum(values)))
        yield histogram

        drift = GaugeMetricFamily(
            "triage_drift_psi",
            "Population stability index against the training reference.",
            labels=["kind", "model_version"],
        )
        alert = GaugeMetricFamily(
            "triage_drift_alert", f"1 when PSI is above {PSI_ALERT}.", labels=["kind", "model_version"]
        )
        for kind, model_version, value in drift_figures(session):
            drift.add_metric([kind, model_version], value)
            alert.add_metric([kind, model_version], 1.0 if value > PSI_ALERT else 0.0)
        yield drift
        yield alert

    def _stages(self, session: Session) -> Iterator[Metric]:
        totals, enquiries = observability.stage_seconds(session)
        seconds = CounterMetricFamily(
            "triage_stage_seconds", "Processing seconds spent per pipeline stage.", labels=["stage"]
        )
        per_enquiry = GaugeMetricFamily(
            "triage_stage_seconds_per_enquiry",
            "Average processing seconds per enquiry and stage (the cost of an enquiry).",
            labels=["stage"],
        )
        for stage, value in sorted(totals.items()):
            seconds.add_metric([stage], value)
            per_enquiry.add_metric([stage], value / enquiries if enquiries else 0.0)
        yield seconds
        yield per_enquiry


def drift_figures(session: Session) -> list[tuple[str, str, float]]:
    """PSI of predicted classes and of confidence for the active model, when it stored a reference."""
    from models.registry import active_version, list_versions

    version = active_version(session)
    if version is None:
        return []
    provenance: dict[str, Any] = next(
        (v.provenance for v in list_versions(session) if v.version == version), {}
    )
    reference = provenance.get("reference") or {}
    since = utcnow() - DRIFT_WINDOW
    figures: list[tuple[str, str, float]] = []
    label_shares = reference.get("label_shares")
    if label_shares:
        counts = observability.predicted_intents(session, since=since, model_version=version)
        if counts:
            labels = sorted(label_shares)
            figures.append(
                (
                    "predicted_class",
                    version,
                    psi([label_shares[k] for k in labels], shares([counts.get(k, 0) for k in labels])),
                )
            )
    confidence = reference.get("confidence_histogram")
    if confidence:
        values = observability.confidences(session, since=since, model_version=version)
        if values:
            edges = confidence["edges"]
            figures.append(
                ("confidence", version, psi(shares(confidence["counts"]), histogram_shares(values, edges)))
            )
    return figures


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(request.app.state.session_factory))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
