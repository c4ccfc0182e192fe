"""Read-only figures for /metrics and `triage status`: counts from the counters the triggers keep
(store/counters.py), drift's week from its per-day counters; the index reads over a week of rows
remain for a drift reference whose bins the counters do not hold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store import counters
from store.tables import Enquiry, FlowRun, Quarantine

# --- counts, one function per figure family: read from store/counters.py, not from the rows ---------
# Each costs the same at any size (a few dozen counter rows and the deltas not folded yet). Another
# figure family joins by adding a `counters.Family` (migration) and a function here.


def raw_by_channel_status(session: Session) -> list[tuple[str, str, int]]:
    return sorted((c, s, n) for (c, s, _), n in counters.counts(session, "raw_records").items())


def enquiries_by_lane(session: Session) -> list[tuple[str, int]]:
    lanes: Counter[str] = Counter()
    for (lane, _queue, _intent), n in counters.counts(session, "enquiries").items():
        lanes[lane] += n
    return sorted((lane, n) for lane, n in lanes.items() if n)


def enquiries_by_lane_queue_intent(session: Session) -> list[tuple[str, str, str, int]]:
    return sorted((lane, q, i, n) for (lane, q, i), n in counters.counts(session, "enquiries").items())


def review_backlog(session: Session) -> list[tuple[str, str, int]]:
    """Review items not done, by queue and status."""
    return sorted(
        (q, s, n) for (q, s, _), n in counters.counts(session, "review_items").items() if s != "done"
    )


def review_items_by_status(session: Session) -> list[tuple[str, str, int]]:
    """Every review item by queue and status, `done` included (items opened = the sum, closed = done)."""
    return sorted((q, s, n) for (q, s, _), n in counters.counts(session, "review_items").items())


def sla_by_status(session: Session) -> list[tuple[str, str, int]]:
    return sorted((k, s, n) for (k, s, _), n in counters.counts(session, "sla_timers").items())


def outbox_by_status(session: Session) -> list[tuple[str, str, int]]:
    return sorted((o, s, n) for (o, s, _), n in counters.counts(session, "crm_outbox").items())


def reply_states(session: Session) -> list[tuple[str, str, int]]:
    """Replies by kind and state (pending, retrying, sending, sent, failed), as reply_outbox.states_by_kind
    counts them from the rows."""
    return sorted((k, s, n) for (k, s, _), n in counters.counts(session, "reply_outbox").items())


def open_by_owner_team(session: Session) -> list[tuple[str, str, int]]:
    """(owner, team, open and claimed review items); owner and team '' when none."""
    open_items: Counter[tuple[str, str]] = Counter()
    for (owner, team, status), n in counters.counts(session, "review_owners").items():
        if status in ("open", "claimed"):
            open_items[(owner, team)] += n
    return sorted((owner, team, n) for (owner, team), n in open_items.items() if n)


def drift_counts(
    session: Session, *, days_from: date, model_version: str
) -> tuple[dict[str, int], dict[str, int]]:
    """One model's predicted intents and confidence bins (counters.DRIFT_EDGES, by lower edge) over
    the UTC days from `days_from` on, from the per-day counters."""
    kept = counters.figures(session, ["drift_intents", "drift_confidence"], days_from=days_from)
    intents: Counter[str] = Counter()
    bins: Counter[str] = Counter()
    for (_day, version, intent), (n, _) in kept["drift_intents"].items():
        if version == model_version:
            intents[intent] += n
    for (_day, version, lower), (n, _) in kept["drift_confidence"].items():
        if version == model_version:
            bins[lower] += n
    return dict(intents), dict(bins)


def open_quarantine(session: Session) -> int:
    statement = sa.select(sa.func.count()).select_from(Quarantine).where(Quarantine.replayed_at.is_(None))
    return int(session.scalar(statement) or 0)


def confidence_buckets(session: Session, edges: Sequence[float]) -> tuple[list[int], int, float]:
    """Cumulative counts of confidences at or below each edge, the count and the sum.

    From the counters when `edges` are the counters' own buckets (what /metrics asks for), otherwise
    one pass over the covering index.
    """
    if tuple(edges) == counters.CONFIDENCE_BUCKETS:
        per_bucket = {
            k1: (n, amount)
            for (k1, _, _), (n, amount) in counters.figures(session, ["confidence"])["confidence"].items()
        }
        cumulative, running = [], 0
        for edge in edges:
            running += per_bucket.get(repr(edge), (0, 0.0))[0]
            cumulative.append(running)
        total = running + per_bucket.get(counters.OVERFLOW_BUCKET, (0, 0.0))[0]
        return cumulative, total, sum(amount for _, amount in per_bucket.values())
    value = Enquiry.confidence
    columns = [sa.func.sum(sa.case((value <= edge, 1), else_=0)) for edge in edges]
    row = session.execute(
        sa.select(*columns, sa.func.count(), sa.func.sum(value)).where(
            Enquiry.model_version != "rule:honeypot"
        )
    ).one()
    return [int(n or 0) for n in row[: len(edges)]], int(row[len(edges)] or 0), float(row[-1] or 0.0)


def confidence_histogram(
    session: Session, edges: Sequence[float], *, since: datetime, model_version: str
) -> list[int]:
    """Counts of one model's confidences since `since` per bin of `edges`, with numpy's rule (each bin
    [edges[i], edges[i+1]), the last closed, values outside left out), counted in SQL over the covering
    index instead of loading every value."""
    if len(edges) < 2:
        return []
    value = Enquiry.confidence
    below = [sa.func.sum(sa.case((value < edge, 1), else_=0)) for edge in edges[:-1]]
    row = session.execute(
        sa.select(*below, sa.func.sum(sa.case((value <= edges[-1], 1), else_=0))).where(
            Enquiry.model_version == model_version,
            Enquiry.created_at >= since,
            Enquiry.model_version != "rule:honeypot",
        )
    ).one()
    cumulative = [int(n or 0) for n in row]  # values < e0, < e1, ..., <= e_last
    return [cumulative[i + 1] - cumulative[i] for i in range(len(edges) - 1)]


def stage_seconds(session: Session) -> tuple[dict[str, float], int]:
    """Processing seconds per stage, summed over recorded intake runs, and the enquiries those runs
    opened: from the counters the flow_runs trigger keeps (a run is one row more, never a longer read)."""
    kept = counters.figures(session, ["stage_seconds", "intake_runs"])
    totals = {stage: amount for (stage, _, _), (_, amount) in kept["stage_seconds"].items()}
    enquiries = sum(amount for _, amount in kept["intake_runs"].values())
    return totals, round(enquiries)


def last_runs(session: Session, *, limit: int = 10) -> list[FlowRun]:
    return list(session.scalars(sa.select(FlowRun).order_by(FlowRun.id.desc()).limit(limit)))
