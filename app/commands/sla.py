"""`triage sla` (due times, one watch pass, open timers) and `triage report sla` (the ops lead's page).

None of these runs a flow, so none imports Prefect: `sla due` is called often by people and scripts.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from models.errors import ConfigError
from review.display import SafeTable, markup_safe

# Heavy (pydantic, SQLAlchemy, the notifiers): imported by the commands that need them.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings
    from sla.policies import DueResult, SlaPolicies

sla_app = typer.Typer(help="SLA clocks: due times, the watch pass, open timers.", no_args_is_help=True)
report_app = typer.Typer(help="Reports for the ops lead.", no_args_is_help=True)
console = Console()


@report_app.callback()
def _reports() -> None:
    """Reports for the ops lead."""
    # A callback keeps `report` a group even with one command, so `triage report sla` stays spelled out.


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
PolicyFileOption = Annotated[
    Path | None, typer.Option("--policies", help="An sla.yaml to use instead of the configured one.")
]


def _settings() -> Settings:
    from config.settings import Settings

    settings = Settings()
    settings.ensure_home()
    return settings


def _policies(path: Path | None, settings: Settings | None = None) -> SlaPolicies:
    """--policies, else TRIAGE_SLA__POLICY_FILE, else <policy_dir>/sla.yaml, in TRIAGE_SLA__TIMEZONE."""
    from sla.policies import load_policies

    settings = settings if settings is not None else _settings()
    sla_settings = getattr(settings, "sla", None)
    zone = getattr(sla_settings, "timezone", None)
    if path is None:
        path = getattr(sla_settings, "policy_file", None)
    if path is None:
        candidate = Path(settings.policy_dir) / "sla.yaml"
        path = candidate if candidate.exists() else None
    return load_policies(path, timezone=zone)


def _parse_instant(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 date-time", param_hint=option) from None
    if value.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no UTC offset; add one, e.g. +00:00 or Z", param_hint=option)
    return value


def due_document(result: DueResult) -> dict[str, Any]:
    """The JSON shape of `triage sla due`: ISO 8601 instants with offsets, in the policy's time zone."""
    return {
        "policy": result.policy,
        "first_response_due": result.first_response_due.isoformat() if result.first_response_due else None,
        "resolution_due": result.resolution_due.isoformat() if result.resolution_due else None,
        "escalations": [{"at": at.isoformat(), "action": action} for at, action in result.escalations],
    }


@sla_app.command("due")
def due_command(
    received: Annotated[
        str, typer.Option("--received", help="When the enquiry arrived (ISO 8601 with offset).")
    ],
    priority: Annotated[str, typer.Option("--priority", help="urgent | high | normal | low")],
    intent: Annotated[str | None, typer.Option("--intent")] = None,
    channel: Annotated[str | None, typer.Option("--channel")] = None,
    queue: Annotated[str | None, typer.Option("--queue")] = None,
    segment: Annotated[str | None, typer.Option("--segment")] = None,
    policies_file: PolicyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """When an enquiry's first response is due and when each escalation fires."""
    from sla.policies import due

    try:
        policies = _policies(policies_file)
    except ConfigError as error:
        console.print(f"[red]{markup_safe(error)}[/red]")
        raise typer.Exit(2) from error
    result = due(
        _parse_instant(received.replace("Z", "+00:00"), "--received"),
        priority=priority,
        intent=intent,
        channel=channel,
        queue=queue,
        segment=segment,
        policies=policies,
    )
    document = due_document(result)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    print(f"policy:              {document['policy']}")
    print(f"first response due:  {document['first_response_due'] or 'no SLA'}")
    print(f"resolution due:      {document['resolution_due'] or '—'}")
    for escalation in document["escalations"]:
        print(f"escalation:          {escalation['at']}  {escalation['action']}")


def _factory(settings: Settings) -> sessionmaker[Session]:
    from pipeline.runtime import Runtime

    return Runtime(settings).factory


@sla_app.command("watch")
def watch_command(
    now: Annotated[str | None, typer.Option("--now", help="Pretend it is this instant (ISO 8601).")] = None,
    policies_file: PolicyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one SLA watch pass now, without Prefect: breaches, escalations, notifications."""
    from connectors.notify import build_notifier, notify_settings_from
    from sla.watch import watch_pass

    settings = _settings()
    policies = _policies(policies_file, settings)
    instant = _parse_instant(now.replace("Z", "+00:00"), "--now") if now else datetime.now(UTC)
    summary = watch_pass(
        _factory(settings), policies, build_notifier(notify_settings_from(settings)), now=instant
    )
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
        return
    console.print(
        f"checked {summary.checked} timer(s), {summary.breached} breached, {summary.escalations_fired} "
        f"escalation(s) fired, {summary.messages_sent} message(s) sent in {summary.seconds:.2f} s"
    )
    for failure in summary.failures:
        console.print(f"[yellow]{markup_safe(failure)}[/yellow]")


@sla_app.command("timers")
def timers_command(
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Open timers (not yet stopped), soonest due first."""
    from store.sla_repo import open_timers

    settings = _settings()
    with _factory(settings)() as session:
        timers = open_timers(session, limit=limit)
    rows = [
        {
            "enquiry_id": timer.enquiry_id,
            "kind": timer.kind,
            "policy": timer.policy,
            "status": timer.status,
            "started_at": timer.started_at.isoformat(),
            "due_at": timer.due_at.isoformat(),
            "paused_at": timer.paused_at.isoformat() if timer.paused_at else None,
        }
        for timer in timers
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = SafeTable("enquiry", "kind", "policy", "status", "due")
    for row in rows:
        table.add_row(row["enquiry_id"], row["kind"], row["policy"], row["status"], row["due_at"])
    console.print(table)


def _day_start(text: str | None, default: date, option: str) -> datetime:
    if text is None:
        return datetime.combine(default, time.min, tzinfo=UTC)
    try:
        if "T" in text:
            return _parse_instant(text.replace("Z", "+00:00"), option)
        return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


@report_app.command("sla")
def report_sla_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the HTML page (default: TRIAGE_HOME/reports/)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="First day (UTC, YYYY-MM-DD), default 7 days ago.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Day after the last (UTC), default tomorrow.")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Also write one row per timer.")] = None,
    policies_file: PolicyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """The ops lead's SLA report: first-response timers of the period, breaches, time to first response,
    by channel, intent, queue and SDR. Prints the headline figures and writes one self-contained HTML
    page with the charts (and, with --csv, one row per timer)."""
    from sla.report import build_report, render_html, summary_figures, write_csv
    from store import sla_repo

    settings = _settings()
    policies = _policies(policies_file, settings)
    now = datetime.now(UTC)
    end = _day_start(until, now.date() + timedelta(days=1), "--until")
    start = _day_start(since, now.date() - timedelta(days=7), "--since")
    if start >= end:
        raise typer.BadParameter("--since must be before --until", param_hint="--since")
    if out is None:
        out = settings.reports_dir / f"sla-{start.date().isoformat()}-{end.date().isoformat()}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    with _factory(settings)() as session:
        data = build_report(session, policies, since=start, until=end, now=now)
        csv_rows = None
        if csv_path is not None:  # streamed from the database, a batch of rows at a time
            facts = sla_repo.iter_first_response_facts(session, since=start, until=end)
            csv_rows = write_csv(facts, policies, csv_path, now=now)
    out.write_text(render_html(data), encoding="utf-8")
    figures = summary_figures(data)
    figures["html"] = str(out)
    if csv_path is not None:
        figures["csv_rows"] = csv_rows
        figures["csv"] = str(csv_path)
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    _print_report(figures)


def _print_report(figures: dict[str, Any]) -> None:

    console.print(
        f"[bold]SLA report[/] {figures['since']} – {figures['until']}: {figures['timers']} first-response "
        f"timers, {figures['breached']} breached ({figures['breach_rate']:.1%}), {figures['responded']} "
        f"answered ({figures['responded_on_time']} on time, {figures['responded_late']} late), "
        f"{figures['open']} still open"
    )
    median = figures["first_response_minutes"]["p50"]
    if median is not None:
        console.print(
            f"median time to first response {median:.0f} business minutes, over {figures['responded']} "
            f"answered timers"
        )
    acks = figures["acknowledgements"]
    if acks["sent"]:
        console.print(
            f"automated acknowledgements: {acks['sent']} sent, median {acks['p50_minutes']:.0f} minutes "
            "after receipt (apart from the human first response)"
        )
    if figures["by_touch_source"]:
        sources = SafeTable("first touch from", "answered", "late", "median minutes", title="by touch source")
        for row in figures["by_touch_source"]:
            median_minutes = row["median_minutes"]
            sources.add_row(
                row["source"],
                str(row["answered"]),
                str(row["late"]),
                f"{median_minutes:.0f}" if median_minutes is not None else "—",
            )
        console.print(sources)
    table = SafeTable("SDR", "timers", "answered", "breached", "breach rate", title="by SDR")
    for row in figures["by_sdr"]:
        table.add_row(
            row["sdr"],
            str(row["timers"]),
            str(row["answered"]),
            str(row["breached"]),
            f"{row['breach_rate']:.0%}",
        )
    console.print(table)
    if figures.get("by_team"):
        teams = SafeTable("team", "timers", "breached", "breach rate", title="by team")
        for row in figures["by_team"]:
            teams.add_row(row["key"], str(row["timers"]), str(row["breached"]), f"{row['rate']:.0%}")
        console.print(teams)
    console.print(f"wrote {figures['html']}" + (f" and {figures['csv']}" if "csv" in figures else ""))
