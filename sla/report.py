"""The ops lead's SLA report: one self-contained HTML page (inline SVG charts, no external URLs) and a CSV.

Definitions, so the page and the database can be checked against each other:
- a *timer* is a first-response timer started in [since, until);
- *breached*: its status is `breached`, or it is still running past its due time at `now`;
- *time to first response*: business minutes (in the timer's policy calendar) from start to the first
  touch (a message that reached the customer), for timers that were stopped;
- *by touch source*: stopped timers by where their first touch came from: `pages` (a reply sent or
  recorded in the review pages), `mailbox` (a team member's mail in the thread), `crm` (a touch
  recorded in the CRM), `automated`; `unrecorded` for timers stopped before sources were kept;
- *share automated*: enquiries received in the period whose lane is `automate`, over all received;
- *AI proposals accepted*: audit rows of kind `accept` over `accept` + `correction` in the period;
- *acknowledgements*: automated replies (a decision-matrix task's `auto_reply`) the SMTP server
  accepted, for enquiries received in the period, and wall-clock minutes from receipt to acceptance.
  Reported apart from the human first response, which they do not stop unless
  `TRIAGE_SLA__AUTOMATED_REPLY_COUNTS_AS_FIRST_RESPONSE` is set (then their touch source is `automated`);
- *review time*: wall-clock minutes from a review item's creation to its closing, for items closed
  in the period.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from connectors.notify import Attachment, Notification, NotifySettings, SmtpNotifier
from review.display import csv_cell, jinja_finalize, visible
from sla.calendar import business_minutes_between
from sla.policies import SlaPolicies
from store import reply_outbox, sla_repo

TEMPLATES = Path(__file__).resolve().parent / "templates"
AT_RISK_HORIZON = timedelta(hours=4)
PERCENTILES = (50, 90, 95)


@dataclass(frozen=True, slots=True)
class Slice:
    """Breaches in one group (a channel, intent, queue or SDR)."""

    key: str
    timers: int
    breached: int

    @property
    def rate(self) -> float:
        """Breached over timers (0 when empty)."""
        return self.breached / self.timers if self.timers else 0.0


@dataclass(slots=True)
class ReportData:
    """Every figure on the page, computed once from the database."""

    since: datetime
    until: datetime
    generated_at: datetime
    policy_version: str
    timers: int = 0
    breached: int = 0
    met: int = 0
    open: int = 0
    daily: list[tuple[date, int, int]] = field(default_factory=list)
    response_minutes: dict[int, float | None] = field(default_factory=dict)
    by_channel: list[Slice] = field(default_factory=list)
    by_intent: list[Slice] = field(default_factory=list)
    by_queue: list[Slice] = field(default_factory=list)
    by_owner: list[Slice] = field(default_factory=list)
    by_team: list[Slice] = field(default_factory=list)
    at_risk: list[sla_repo.AtRiskTimer] = field(default_factory=list)
    enquiries: int = 0
    automated: int = 0
    accepted: int = 0
    corrected: int = 0
    review_minutes: dict[int, float | None] = field(default_factory=dict)
    by_touch_source: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: int = 0
    acknowledgement_minutes: dict[int, float | None] = field(default_factory=dict)
    per_sdr: dict[str, dict[str, int]] = field(default_factory=dict)
    responded: int = 0
    responded_late: int = 0

    @property
    def breach_rate(self) -> float:
        """Share of timers breached."""
        return self.breached / self.timers if self.timers else 0.0

    @property
    def share_automated(self) -> float | None:
        """Share of enquiries handled in the automated lane (None without enquiries)."""
        return self.automated / self.enquiries if self.enquiries else None

    @property
    def acceptance_rate(self) -> float | None:
        """Share of AI proposals people accepted without correcting (None without reviews)."""
        reviewed = self.accepted + self.corrected
        return self.accepted / reviewed if reviewed else None


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * percent / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def is_breached(fact: sla_repo.TimerFact, now: datetime) -> bool:
    """Breached by status, or still running past its due time (the watch has not marked it yet)."""
    return fact.status == "breached" or (fact.status == "running" and fact.due_at <= now)


def build_report(
    session: Session, policies: SlaPolicies, *, since: datetime, until: datetime, now: datetime
) -> ReportData:
    """Gather every figure of the report for timers started (and enquiries received) in [since, until).

    One streamed pass over the period's timers: counts per day, channel, intent, queue, owner and SDR
    are summed as rows arrive; only the minutes the percentiles need are kept (a float per answered
    timer), never the rows themselves.
    """
    data = ReportData(since=since, until=until, generated_at=now, policy_version=policies.version)
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    response: list[float] = []
    by_source: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    slices: dict[str, dict[str, list[int]]] = {name: defaultdict(lambda: [0, 0]) for name in SLICE_KEYS}
    for fact in sla_repo.iter_first_response_facts(session, since=since, until=until):
        breached = is_breached(fact, now)
        data.timers += 1
        data.breached += int(breached)
        data.met += int(fact.status == "met")
        data.open += int(fact.stopped_at is None)
        counts = per_day[fact.started_at.astimezone(UTC).date()]
        counts[0] += 1
        counts[1] += int(breached)
        for name, key in SLICE_KEYS.items():
            entry = slices[name][key(fact)]
            entry[0] += 1
            entry[1] += int(breached)
        sdr = data.per_sdr.setdefault(owner_of(fact), {"timers": 0, "answered": 0, "breached": 0})
        sdr["timers"] += 1
        sdr["answered"] += int(fact.stopped_at is not None)
        sdr["breached"] += int(breached)
        if fact.stopped_at is not None:
            data.responded += 1
            data.responded_late += int(fact.status == "breached")
        policy = policies.get(fact.policy)
        if fact.stopped_at is not None and policy is not None:
            minutes = business_minutes_between(fact.started_at, fact.stopped_at, policy.calendar)
            response.append(minutes)
            by_source[touch_source_of(fact)].append((minutes, fact.status == "breached"))
    data.daily = [(day, counts[0], counts[1]) for day, counts in sorted(per_day.items())]
    data.response_minutes = {p: percentile(response, p) for p in PERCENTILES}
    data.by_touch_source = [
        {
            "source": source,
            "answered": len(rows),
            "late": sum(1 for _, late in rows if late),
            "median_minutes": percentile([minutes for minutes, _ in rows], 50),
        }
        for source, rows in sorted(by_source.items(), key=lambda item: (-len(item[1]), item[0]))
    ]
    data.by_channel, data.by_intent, data.by_queue, data.by_owner, data.by_team = (
        _sorted_slices(slices[name]) for name in ("channel", "intent", "queue", "owner", "team")
    )
    data.at_risk = sla_repo.at_risk_timers(session, due_before=now + AT_RISK_HORIZON)
    lanes = sla_repo.lane_counts(session, since=since, until=until)
    data.enquiries = sum(lanes.values())
    data.automated = lanes.get("automate", 0)
    decisions = sla_repo.decision_counts(session, since=since, until=until)
    data.accepted, data.corrected = decisions.get("accept", 0), decisions.get("correction", 0)
    durations = [
        (closed - created).total_seconds() / 60.0
        for created, closed in sla_repo.review_durations(session, since=since, until=until)
    ]
    data.review_minutes = {p: percentile(durations, p) for p in (50, 90)}
    acks = [
        (accepted - received).total_seconds() / 60.0
        for received, accepted in reply_outbox.acknowledgement_times(session, since=since, until=until)
    ]
    data.acknowledged = len(acks)
    data.acknowledgement_minutes = {p: percentile(acks, p) for p in (50, 90)}
    return data


def touch_source_of(fact: sla_repo.TimerFact) -> str:
    """Where a stopped timer's first touch came from (`unrecorded` for stops before issue 17)."""
    return fact.touch_source or "unrecorded"


UNASSIGNED = "(unassigned)"
AUTOMATED = "(automated lane)"


def owner_of(fact: sla_repo.TimerFact) -> str:
    """Whom a timer is counted against: the item's owner, else whoever answered, else the automated lane
    (no review item: the lead went to the CRM without people), else nobody yet."""
    if fact.owner or fact.stopped_by:
        return str(fact.owner or fact.stopped_by)
    return AUTOMATED if fact.lane == "automate" else UNASSIGNED


def summary_figures(data: ReportData) -> dict[str, Any]:
    """The report's headline and per-SDR figures as plain data (`triage report sla`, text and --json)."""
    now = data.generated_at
    late = data.responded_late
    by_sdr = [
        {"sdr": name, **row, "breach_rate": row["breached"] / row["timers"] if row["timers"] else 0.0}
        for name, row in data.per_sdr.items()
    ]
    by_sdr.sort(key=lambda row: (row["sdr"] in (UNASSIGNED, AUTOMATED), -row["timers"], row["sdr"]))
    return {
        "since": data.since.date().isoformat(),
        "until": data.until.date().isoformat(),
        "generated_at": now.isoformat(),
        "timers": data.timers,
        "breached": data.breached,
        "breach_rate": data.breach_rate,
        "met": data.met,
        "open": data.open,
        "responded": data.responded,
        "responded_on_time": data.responded - late,
        "responded_late": late,
        "first_response_minutes": {f"p{p}": value for p, value in data.response_minutes.items()},
        "share_automated": data.share_automated,
        "acceptance_rate": data.acceptance_rate,
        "by_sdr": by_sdr,
        "by_touch_source": data.by_touch_source,
        "acknowledgements": {
            "sent": data.acknowledged,
            **{f"p{p}_minutes": value for p, value in data.acknowledgement_minutes.items()},
        },
        "by_channel": [vars_of(item) for item in data.by_channel],
        "by_queue": [vars_of(item) for item in data.by_queue],
        "by_team": [vars_of(item) for item in data.by_team],
    }


def vars_of(item: Slice) -> dict[str, Any]:
    return {"key": item.key, "timers": item.timers, "breached": item.breached, "rate": item.rate}


SLICE_KEYS: dict[str, Callable[[sla_repo.TimerFact], str]] = {
    "channel": lambda fact: fact.channel,
    "intent": lambda fact: fact.intent,
    "queue": lambda fact: fact.queue,
    "owner": owner_of,
    "team": lambda fact: fact.team or (AUTOMATED if fact.lane == "automate" else "(no team)"),
}


def _sorted_slices(counts: dict[str, list[int]]) -> list[Slice]:
    slices = [Slice(name, total, breached) for name, (total, breached) in counts.items()]
    return sorted(slices, key=lambda item: (-item.breached, -item.timers, item.key))


# --- inline SVG charts ------------------------------------------------------------------------------
# Hand-built SVG keeps the page self-contained with no plotting dependency; every label goes through
# markupsafe.escape because channel, queue and SDR names come from data.

BAR_COLOUR, BREACH_COLOUR, AXIS_COLOUR = "#4c78a8", "#e45756", "#888888"


def daily_chart(daily: Sequence[tuple[date, int, int]], *, width: int = 720, height: int = 220) -> Markup:
    """Breach rate per day as bars (0-100%), with each day's timer count under its bar."""
    if not daily:
        return Markup('<p class="empty">No timers in this period.</p>')
    left, bottom, top = 40, 40, 10
    plot_height = height - bottom - top
    step = (width - left - 10) / len(daily)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Breach rate per day" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{top + plot_height}" x2="{width - 10}" y2="{top + plot_height}" '
        f'stroke="{AXIS_COLOUR}"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_height * (1 - fraction)
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{int(fraction * 100)}%</text>"
        )
    for index, (day, total, breached) in enumerate(daily):
        rate = breached / total if total else 0.0
        bar = plot_height * rate
        x = left + index * step + step * 0.15
        label = escape(day.isoformat())
        parts.append(
            f'<rect x="{x:.1f}" y="{top + plot_height - bar:.1f}" '
            f'width="{step * 0.7:.1f}" height="{bar:.1f}" '
            f'fill="{BREACH_COLOUR}"><title>{label}: {breached} of {total} breached</title></rect>'
        )
        if len(daily) <= 31:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{top + plot_height + 14}" font-size="9" '
                f'text-anchor="middle">{escape(day.strftime("%m-%d"))}</text>'
                f'<text x="{x + step * 0.35:.1f}" y="{top + plot_height + 26}" font-size="9" '
                f'text-anchor="middle" fill="{AXIS_COLOUR}">n={total}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def slice_chart(slices: Sequence[Slice], *, label: str, width: int = 420, limit: int = 12) -> Markup:
    """Horizontal bars: timers per group, the breached part in red, with counts and rate."""
    shown = list(slices[:limit])
    if not shown:
        return Markup('<p class="empty">No timers in this period.</p>')
    row, left, right = 22, 130, 110
    height = row * len(shown) + 10
    biggest = max(item.timers for item in shown) or 1
    scale = (width - left - right) / biggest
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Breaches by {escape(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for index, item in enumerate(shown):
        y = 5 + index * row
        key = visible(item.key)
        name = escape(key if len(key) <= 20 else key[:19] + "…")
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">{name}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{item.timers * scale:.1f}" height="14" '
            f'fill="{BAR_COLOUR}"/>'
            f'<rect x="{left}" y="{y + 3}" width="{item.breached * scale:.1f}" height="14" '
            f'fill="{BREACH_COLOUR}"/>'
            f'<text x="{left + item.timers * scale + 6:.1f}" y="{y + 14}" font-size="11">'
            f"{item.breached}/{item.timers} ({item.rate:.0%})</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def percentile_chart(values: dict[int, float | None], *, width: int = 420) -> Markup:
    """Bars of time-to-first-response percentiles in business minutes."""
    known = {p: v for p, v in values.items() if v is not None}
    if not known:
        return Markup('<p class="empty">No first responses in this period.</p>')
    row, left, right = 26, 50, 120
    biggest = max(known.values()) or 1.0
    scale = (width - left - right) / biggest
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Time to first response" '
        f'width="{width}" height="{row * len(known) + 10}">'
    ]
    for index, (p, value) in enumerate(sorted(known.items())):
        y = 5 + index * row
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" font-size="11" text-anchor="end">p{p}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{value * scale:.1f}" height="16" fill="{BAR_COLOUR}"/>'
            f'<text x="{left + value * scale + 6:.1f}" y="{y + 15}" font-size="11">'
            f"{format_minutes(value)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def format_minutes(value: float | None) -> str:
    """'45 min', '3 h 20 min' or '—'."""
    if value is None:
        return "—"
    minutes = round(value)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def format_share(value: float | None) -> str:
    """'42.5%' or '—'."""
    return "—" if value is None else f"{value:.1%}"


def render_html(data: ReportData) -> str:
    """The report as one HTML page; every value from the data is escaped by Jinja2's autoescape."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        keep_trailing_newline=True,
        finalize=jinja_finalize,  # invisible and bidi controls shown as <U+XXXX>
    )
    environment.filters["minutes"] = format_minutes
    environment.filters["share"] = format_share
    template = environment.get_template("report.html.j2")
    charts = {
        "daily": daily_chart(data.daily),
        "response": percentile_chart(data.response_minutes),
        "channel": slice_chart(data.by_channel, label="channel"),
        "intent": slice_chart(data.by_intent, label="intent"),
        "queue": slice_chart(data.by_queue, label="queue"),
        "owner": slice_chart(data.by_owner, label="SDR"),
        "team": slice_chart(data.by_team, label="team"),
    }
    return template.render(
        data=data, charts=charts, horizon_hours=int(AT_RISK_HORIZON.total_seconds() // 3600)
    )


CSV_COLUMNS = (
    "enquiry_id", "policy", "channel", "intent", "queue", "owner", "started_at", "due_at", "stopped_at",
    "status", "breached", "business_minutes_to_first_response", "touch_source",
)  # fmt: skip


def write_csv(
    facts: Iterable[sla_repo.TimerFact], policies: SlaPolicies, path: Path, *, now: datetime
) -> int:
    """One row per first-response timer, written as the rows arrive (pass
    `sla_repo.iter_first_response_facts` to stream from the database); returns rows written."""
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for fact in facts:
            policy = policies.get(fact.policy)
            minutes = (
                round(business_minutes_between(fact.started_at, fact.stopped_at, policy.calendar), 1)
                if fact.stopped_at is not None and policy is not None
                else ""
            )
            row = [
                fact.enquiry_id, fact.policy, fact.channel, fact.intent, fact.queue,
                fact.owner or fact.stopped_by or "",
                fact.started_at.isoformat(), fact.due_at.isoformat(),
                fact.stopped_at.isoformat() if fact.stopped_at else "", fact.status,
                int(is_breached(fact, now)), minutes,
                touch_source_of(fact) if fact.stopped_at is not None else "",
            ]  # fmt: skip
            # Every text cell: a spreadsheet runs one starting with = + - @ as a formula (OWASP).
            writer.writerow([csv_cell(value) for value in row])
            written += 1
    return written


def send_weekly_report(
    session: Session,
    policies: SlaPolicies,
    notify: NotifySettings,
    *,
    now: datetime,
    out_dir: Path,
    days: int = 7,
) -> dict[str, object]:
    """Render the report for the `days` whole UTC days before today, keep a copy, and e-mail it.

    The page goes to the ops lead's addresses both inline (HTML part) and as an attachment, so it can
    be archived. Without SMTP settings the file is still written and the result says it was not sent.
    """
    until = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), tzinfo=UTC)
    since = until - timedelta(days=days)
    data = build_report(session, policies, since=since, until=until, now=now)
    html = render_html(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"sla-report-{since.date().isoformat()}-to-{(until - timedelta(days=1)).date().isoformat()}.html"
    path = out_dir / name
    path.write_text(html, encoding="utf-8")
    recipients = notify.recipients.get("ops_lead", [])
    result: dict[str, object] = {
        "path": str(path),
        "timers": data.timers,
        "breached": data.breached,
        "sent_to": [],
    }
    if notify.smtp is None or not recipients:
        return result
    text = (
        f"SLA report {since.date().isoformat()} to {(until - timedelta(days=1)).date().isoformat()}: "
        f"{data.timers} first-response timers, {data.breached} breached ({data.breach_rate:.1%}), "
        f"median time to first response {format_minutes(data.response_minutes.get(50))}, "
        f"{len(data.at_risk)} open timer(s) about to breach. The full report is attached."
    )
    notification = Notification(
        role="ops_lead",
        subject=f"Weekly SLA report: {data.breach_rate:.1%} breached ({data.breached} of {data.timers})",
        text=text,
        html=html,
        attachments=(Attachment(filename=name, content=html.encode("utf-8")),),
    )
    SmtpNotifier(notify.smtp, {"ops_lead": recipients}).send(notification)
    result["sent_to"] = list(recipients)
    return result
