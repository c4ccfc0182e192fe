"""`GET /metrics` in Prometheus' text format, computed from the database at scrape time.

Every figure is read from the database, so any number of workers and web processes report the same
truth without a shared metrics store: counts from the counters the triggers keep (store/counters.py),
read once per scrape for every collector, so a scrape costs the same at any store size. Drift is the
population stability index (PSI) of the active model's predicted classes and confidence over the last
seven UTC days against its training-time reference, from per-day counters.

A scrape never fails because one figure cannot be computed: each group of metrics is its own
collector, and one that raises is left out of that scrape, counted in
`triage_metrics_collector_errors_total{collector=...}` and logged with its traceback (at most once a
minute per collector), while the others are served. Prometheus keeps seeing the service as up.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from store import counters, observability, source_status
from store.common import Clock, utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"])
CONFIDENCE_BUCKETS = counters.CONFIDENCE_BUCKETS  # the triggers bin by these (store/counters.py)
DRIFT_WINDOW = timedelta(days=7)
PSI_ALERT = 0.2  # the usual rule of thumb: above 0.2 the population has shifted materially
EPSILON = 1e-4
ERROR_LOG_INTERVAL_SECONDS = 60.0
# A scrape answered within this many seconds of the last one gets the same body: several Prometheus
# servers (or a dashboard's refreshes) cost one computation. `app.state.metrics_cache_seconds` sets it.
CACHE_SECONDS = 5.0
# Drift once read a week of index entries; it now sums that week's per-day counters, but a reference on
# other edges still reads the index, so when the scrape cache is on it is recomputed at most once a
# minute. Every other figure comes from the counters (store/counters.py) at any store size.
SLOW_COLLECTOR_SECONDS = {"drift": 60.0}


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins (each summing to 1)."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs the same bins on both sides: {len(expected)} and {len(actual)}")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total else [0.0 for _ in counts]


def histogram_counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bin with numpy's rule, the one the training reference was made with: `len(edges) - 1`
    bins, each [edges[i], edges[i+1]) and the last closed; values outside the edges are left out."""
    bins = len(edges) - 1
    counts = [0] * max(bins, 0)
    if bins <= 0:
        return counts
    low, high = edges[0], edges[-1]
    for value in values:
        if value < low or value > high:
            continue
        index = min(bisect.bisect_right(edges, value) - 1, bins - 1)
        counts[index] += 1
    return counts


def class_psi(reference: dict[str, float], live: dict[str, int]) -> float:
    """PSI of predicted classes over the union of both sides' labels: a class the reference never
    predicted (a new intent, `other`) counts as its own bin instead of being dropped."""
    labels = sorted(set(reference) | set(live))
    return psi([float(reference.get(k, 0.0)) for k in labels], shares([live.get(k, 0) for k in labels]))


def confidence_psi(reference: dict[str, Any], values: Sequence[float]) -> float | None:
    """PSI of confidence against the reference histogram, binned on the reference's own edges; None when
    the reference cannot be read (a model registered with another layout)."""
    edges = [float(edge) for edge in reference.get("edges") or []]
    counts = [float(count) for count in reference.get("counts") or []]
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        return None
    return psi(shares(counts), shares(histogram_counts(values, edges)))


def confidence_psi_in_sql(
    session: Session, reference: dict[str, Any], *, since: datetime, model_version: str
) -> float | None:
    """`confidence_psi` with the live side binned in SQL; None for a window without traffic."""
    edges = [float(edge) for edge in reference.get("edges") or []]
    counts = [float(count) for count in reference.get("counts") or []]
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        return None
    live = observability.confidence_histogram(session, edges, since=since, model_version=model_version)
    return psi(shares(counts), shares(live)) if sum(live) else None


def drift_days_from(now: datetime) -> date:
    """The first UTC day of drift's window: the last seven days, today included."""
    return (now.astimezone(UTC) - DRIFT_WINDOW + timedelta(days=1)).date()


def counted_confidence(reference: dict[str, Any], bins: dict[str, int]) -> list[int] | None:
    """The live side of `confidence_psi` from the per-day counters' bins (counters.DRIFT_EDGES, numpy's
    rule), merged into the reference's bins; None when the reference's edges are not made of the
    counters' (from 0.0 to 1.0), so the bins cannot be merged exactly."""
    edges = [float(edge) for edge in reference.get("edges") or []]
    kept = counters.DRIFT_EDGES
    if len(edges) < 2 or edges[0] != kept[0] or edges[-1] != kept[-1] or not set(edges) <= set(kept):
        return None
    live = [0] * (len(edges) - 1)
    for lower, n in bins.items():
        if lower == counters.OUTSIDE_BIN:
            continue
        index = min(bisect.bisect_right(edges, float(lower)) - 1, len(live) - 1)
        live[index] += n
    return live


def drift_figures(session: Session, *, now: datetime) -> list[tuple[str, str, float]]:
    """PSI of predicted classes and of confidence for the active model over the last seven UTC days.

    From the per-day drift counters (store/counters.py): the cost is the week's few hundred counter
    rows, whatever the traffic. A reference binned on edges the counters do not hold is answered from
    the week's index entries instead. Nothing for a model registered before drift references existed,
    and nothing for a window without traffic (a PSI of no data is not a number anyone should act on).
    """
    from store import model_registry  # the rows only: importing models.registry loads scikit-learn

    row = model_registry.version_with_status(session, "active")
    if row is None:
        return []
    reference = (row.provenance or {}).get("reference") or {}
    days_from = drift_days_from(now)
    intents, bins = observability.drift_counts(session, days_from=days_from, model_version=row.version)
    figures: list[tuple[str, str, float]] = []
    label_shares = reference.get("label_shares")
    if label_shares and intents:
        figures.append(("predicted_class", row.version, class_psi(label_shares, intents)))
    histogram = reference.get("confidence_histogram")
    if histogram:
        live = counted_confidence(histogram, bins)
        if live is not None:
            counts = [float(count) for count in histogram.get("counts") or []]
            if sum(live) and len(counts) == len(live):
                figures.append(("confidence", row.version, psi(shares(counts), shares(live))))
        else:  # edges of another layout: the same window, from the index
            since = datetime.combine(days_from, datetime.min.time(), tzinfo=UTC)
            value = confidence_psi_in_sql(session, histogram, since=since, model_version=row.version)
            if value is not None:
                figures.append(("confidence", row.version, value))
    return figures


# --- the collectors: each a function of (session, now) to its metrics -------------------------------

MetricsFn = Callable[[Session, datetime], list[Metric]]


def volume_metrics(session: Session, _now: datetime) -> list[Metric]:
    ingested = CounterMetricFamily(
        "triage_records_ingested",
        "Raw records stored, by channel and outcome.",
        labels=["channel", "outcome"],
    )
    for channel, status, count in observability.raw_by_channel_status(session):
        ingested.add_metric([channel, status], count)
    lanes = CounterMetricFamily("triage_decisions", "Enquiries decided, by lane.", labels=["lane"])
    for lane, count in observability.enquiries_by_lane(session):
        lanes.add_metric([lane], count)
    quarantine = GaugeMetricFamily(
        "triage_quarantine_open",
        "Quarantined records not yet replayed.",
        value=observability.open_quarantine(session),
    )
    return [ingested, lanes, quarantine]


def review_metrics(session: Session, _now: datetime) -> list[Metric]:
    backlog = GaugeMetricFamily(
        "triage_review_backlog", "Review items not done, by queue and status.", labels=["queue", "status"]
    )
    for queue, status, count in observability.review_backlog(session):
        backlog.add_metric([queue, status], count)
    return [backlog]


def sla_metrics(session: Session, _now: datetime) -> list[Metric]:
    timers = GaugeMetricFamily(
        "triage_sla_timers", "SLA timers by kind and status (breached included).", labels=["kind", "status"]
    )
    breaches = CounterMetricFamily(
        "triage_sla_breaches", "SLA timers that breached, by kind.", labels=["kind"]
    )
    breached: Counter[str] = Counter()
    for kind, status, count in observability.sla_by_status(session):
        timers.add_metric([kind, status], count)
        if status == "breached":
            breached[kind] += count
    for kind, count in sorted(breached.items()):
        breaches.add_metric([kind], count)
    return [timers, breaches]


def crm_metrics(session: Session, _now: datetime) -> list[Metric]:
    crm = GaugeMetricFamily(
        "triage_crm_outbox", "CRM writes by operation and status.", labels=["operation", "status"]
    )
    for operation, status, count in observability.outbox_by_status(session):
        crm.add_metric([operation, status], count)
    return [crm]


def confidence_metrics(session: Session, _now: datetime) -> list[Metric]:
    # Counted in SQL (one pass over an index), not by loading every confidence into Python.
    cumulative, total, value_sum = observability.confidence_buckets(session, CONFIDENCE_BUCKETS)
    buckets = [(str(edge), float(n)) for edge, n in zip(CONFIDENCE_BUCKETS, cumulative, strict=True)]
    buckets.append(("+Inf", float(total)))
    histogram = HistogramMetricFamily(
        "triage_model_confidence", "Calibrated confidence of the model's decisions."
    )
    histogram.add_metric([], buckets=buckets, sum_value=value_sum)
    return [histogram]


def drift_metrics(session: Session, now: datetime) -> list[Metric]:
    drift = GaugeMetricFamily(
        "triage_drift_psi",
        "Population stability index against the training reference.",
        labels=["kind", "model_version"],
    )
    alert = GaugeMetricFamily(
        "triage_drift_alert", f"1 when PSI is above {PSI_ALERT}.", labels=["kind", "model_version"]
    )
    for kind, model_version, value in drift_figures(session, now=now):
        drift.add_metric([kind, model_version], value)
        alert.add_metric([kind, model_version], 1.0 if value > PSI_ALERT else 0.0)
    return [drift, alert]


def stage_metrics(session: Session, _now: datetime) -> list[Metric]:
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
    return [seconds, per_enquiry]


def source_metrics(session: Session, _now: datetime) -> list[Metric]:
    errors = CounterMetricFamily(
        "triage_source_errors", "Failed attempts to read each configured source.", labels=["source"]
    )
    failing = GaugeMetricFamily(
        "triage_source_consecutive_errors",
        "Failed attempts to read a source since its last success (0: the last read worked).",
        labels=["source"],
    )
    last_success = GaugeMetricFamily(
        "triage_source_last_success_timestamp_seconds",
        "When each source was last read without error (Unix time).",
        labels=["source"],
    )
    last_attempt = GaugeMetricFamily(
        "triage_source_last_attempt_timestamp_seconds",
        "When each source was last attempted (Unix time).",
        labels=["source"],
    )
    for row in source_status.all_statuses(session):
        errors.add_metric([row.source], row.errors_total)
        failing.add_metric([row.source], row.consecutive_errors)
        last_attempt.add_metric([row.source], row.last_attempt_at.timestamp())
        if row.last_success_at is not None:
            last_success.add_metric([row.source], row.last_success_at.timestamp())
    return [errors, failing, last_success, last_attempt]


def reply_metrics(session: Session, _now: datetime) -> list[Metric]:
    """Issue 17: the reply outbox by state, acknowledgements sent, first touches by source.

    The automated acknowledgement and the human first response are separate targets: acknowledgements
    are `triage_acknowledgements_sent`; the human first-response clock's outcome is
    `triage_sla_timers{kind="first_response"}` and where its touches came from `triage_first_touches`.
    """
    from store import sla_repo

    outbox = GaugeMetricFamily(
        "triage_reply_outbox",
        "Replies by kind (reply, auto_reply) and state (pending, retrying, sending, sent, failed for good).",
        labels=["kind", "state"],
    )
    acknowledgements = 0
    for kind, state, count in observability.reply_states(session):  # the counters, as states_by_kind
        outbox.add_metric([kind, state], count)
        if kind == "auto_reply" and state == "sent":
            acknowledgements = count
    acks = CounterMetricFamily(
        "triage_acknowledgements_sent",
        "Automated acknowledgements the SMTP server accepted (the acknowledgement target, apart from "
        "the human first response).",
        value=acknowledgements,
    )
    touches = GaugeMetricFamily(
        "triage_first_touches",
        "Stopped first-response clocks by where the first touch came from (pages, mailbox, crm, automated).",
        labels=["source"],
    )
    for source, count in sorted(sla_repo.first_touches_by_source(session).items()):
        touches.add_metric([source], count)
    return [outbox, acks, touches]


def live_precision_metrics(session: Session, _now: datetime) -> list[Metric]:
    """Each task's live automated precision on its reviewed spot checks (models.live_precision)."""
    from models import live_precision

    figures = GaugeMetricFamily(
        "triage_live_precision",
        "Live automated precision per task on reviewed spot checks: point estimate and 95% Wilson bounds.",
        labels=["task", "bound"],
    )
    reviewed = GaugeMetricFamily(
        "triage_spot_checks_reviewed", "Reviewed spot checks in each task's current window.", labels=["task"]
    )
    paused = GaugeMetricFamily(
        "triage_task_paused", "1 while the live precision monitor has paused the task.", labels=["task"]
    )
    for task in live_precision.task_precisions(session):
        for bound, value in (("estimate", task.precision), ("low", task.low), ("high", task.high)):
            if value is not None:
                figures.add_metric([task.task, bound], value)
        reviewed.add_metric([task.task], task.reviewed)
        paused.add_metric([task.task], int(task.paused))
    return [figures, reviewed, paused]


from app.owner_metrics import owner_metrics  # noqa: E402 - beside the table it joins

COLLECTORS: tuple[tuple[str, MetricsFn], ...] = (
    ("volumes", volume_metrics),
    ("review", review_metrics),
    ("sla", sla_metrics),
    ("crm", crm_metrics),
    ("confidence", confidence_metrics),
    ("drift", drift_metrics),
    ("stages", stage_metrics),
    ("sources", source_metrics),
    ("replies", reply_metrics),
    ("owners", owner_metrics),  # by owner and team (app/owner_metrics.py)
    ("live_precision", live_precision_metrics),
)


class CollectorHealth:
    """Failures per collector since the process started, and when each was last logged."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self.errors: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}

    def failed(self, name: str) -> None:
        """Count a failure; log it with its traceback unless this collector was logged under a minute ago."""
        with self._lock:
            self.errors[name] += 1
            now = self._monotonic()
            last = self._last_logged.get(name)
            if last is not None and now - last < ERROR_LOG_INTERVAL_SECONDS:
                return
            self._last_logged[name] = now
            count = self.errors[name]
        log.exception(
            "metrics collector %r failed (%d failures so far); left out of this scrape", name, count
        )

    def metric(self, names: Sequence[str]) -> Metric:
        family = CounterMetricFamily(
            "triage_metrics_collector_errors",
            "Scrapes in which a group of metrics could not be computed and was left out.",
            labels=["collector"],
        )
        with self._lock:
            for name in names:
                family.add_metric([name], self.errors[name])
        return family


class DatabaseCollector(Collector):
    """Every product metric, from the database, one guarded collector at a time."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        clock: Clock = utcnow,
        health: CollectorHealth | None = None,
        collectors: Sequence[tuple[str, MetricsFn]] = COLLECTORS,
        cache: dict[str, tuple[float, list[Metric]]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._clock = clock
        self._health = health or CollectorHealth()
        self._collectors = collectors
        self._cache = cache
        self._monotonic = monotonic

    def _snapshot(self, now: datetime) -> counters.Snapshot | None:
        """Every counter family in one query, shared by this scrape's collectors; None when it fails
        (each collector then reads its own, and fails alone if the counters cannot be read)."""
        try:
            with self._factory() as session:
                return counters.snapshot(session, days_from=drift_days_from(now))
        except Exception:
            self._health.failed("counters")
            return None

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        kept = self._snapshot(now)
        for name, collect in self._collectors:
            ttl = SLOW_COLLECTOR_SECONDS.get(name, 0.0) if self._cache is not None else 0.0
            if self._cache is not None and ttl:
                kept = self._cache.get(name)
                if kept is not None and self._monotonic() - kept[0] < ttl:
                    yield from kept[1]
                    continue
            try:
                # A fresh session each: a failed query must not poison the others' transaction.
                with self._factory() as session:
                    if kept is not None:
                        session.info[counters.SNAPSHOT_KEY] = kept
                    metrics = collect(session, now)  # whole, before anything of it is served
            except Exception:
                self._health.failed(name)
                continue
            if self._cache is not None and ttl:
                self._cache[name] = (self._monotonic(), metrics)
            yield from metrics
        yield self._health.metric([name for name, _ in self._collectors])


def collector_health(request: Request) -> CollectorHealth:
    """The app's failure counts (kept for the life of the process, across scrapes)."""
    health: CollectorHealth | None = getattr(request.app.state, "metrics_health", None)
    if health is None:
        health = request.app.state.metrics_health = CollectorHealth()
    return health


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    state = request.app.state
    ttl = float(getattr(state, "metrics_cache_seconds", CACHE_SECONDS))
    cached: tuple[float, bytes] | None = getattr(state, "metrics_cache", None)
    started = time.monotonic()
    if ttl > 0 and cached is not None and started - cached[0] < ttl:
        return Response(cached[1], media_type=CONTENT_TYPE_LATEST)
    registry = CollectorRegistry(auto_describe=False)
    clock: Clock = getattr(state, "clock", utcnow)
    slow: dict[str, tuple[float, list[Metric]]] | None = None
    if ttl > 0:
        slow = getattr(state, "metrics_slow_cache", None)
        if slow is None:
            slow = state.metrics_slow_cache = {}
    registry.register(
        DatabaseCollector(state.session_factory, clock=clock, health=collector_health(request), cache=slow)
    )
    body = generate_latest(registry)
    state.metrics_cache = (started, body)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
