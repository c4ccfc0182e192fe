"""`triage`: the command line for admins, the ops lead and scripts.

Commands that run no flow (import, quarantine, crm, model, sla, policy, --help) never import Prefect:
it costs seconds at start-up. `--json` prints one JSON object for scripts; otherwise tables for people.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.text import Text

from models.errors import ConfigError, FatalError, TriageError
from models.vocabulary import Channel
from review.display import SafeTable, markup_safe

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

# Heavy: imported by the commands that need them. Every `triage ...`, and every worker process of
# `triage run` (it imports this module again), loads this module and all the command groups.

app = typer.Typer(
    name="triage",
    help="Triage inbound enquiries (email, forms, chat): classify, decide, act, and hand the rest to people.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
quarantine_app = typer.Typer(
    help="Records that could not be parsed or validated: list, show, replay.", no_args_is_help=True
)
db_app = typer.Typer(
    help="The application database: migrations, space per table, retention.", no_args_is_help=True
)
automation_app = typer.Typer(
    help="The kill switch: pause automation so every new enquiry goes to people.", no_args_is_help=True
)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(db_app, name="db")
app.add_typer(automation_app, name="automation")

console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


def _runtime() -> Any:
    from config.settings import Settings
    from pipeline.runtime import Runtime

    settings = Settings()
    settings.ensure_home()  # 0700 before anything (the database) is created in it
    return Runtime(settings)


def _session_factory() -> sessionmaker[Session]:
    """The database alone, for commands that only read it (`triage status`): settings, the migrated
    engine and its sessions. `_runtime()` would import the model, CRM, SLA and policy modules too."""
    from config.settings import Settings
    from store.db import make_session_factory, migrated_engine

    settings = Settings()
    settings.ensure_home()
    return make_session_factory(migrated_engine(settings.effective_database_url))


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


@contextmanager
def progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Any]:
    """A progress bar on stderr for people; nothing for scripts (`--json`) or when not a terminal."""
    if not enabled or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def print_summary(summary: dict[str, Any], title: str) -> None:
    table = SafeTable(title=title, show_header=False)
    for key, value in summary.items():
        if key == "accounting":
            continue
        table.add_row(key.replace("_", " "), json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)
    books = summary.get("accounting", {})
    if "non_duplicate_by_outcome" in books:
        parts = " + ".join(
            f"{n} {name.replace('_', ' ')}" for name, n in books["non_duplicate_by_outcome"].items()
        )
        balanced = "balanced" if books["non_duplicate_balance"] else "NOT BALANCED"
        Console().print(
            f"Books: {books['non_duplicate_records']} records that are not duplicates = {parts} ({balanced})"
        )


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more (to stderr).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def demo(
    as_json: JsonFlag = False,
    direct: Annotated[bool, typer.Option("--direct", help="Run the steps without Prefect.")] = False,
) -> None:
    """Train the starter model, import the bundled sample (email, forms, chat) and show a team's day.

    The sample's dates are moved to the last five business days before today (only the bundled sample
    is ever moved; its audit rows say so). After one intake pass, one SLA watch pass runs and two
    scripted SDRs (maya, leo) reply to, correct, accept and claim a few items, so `triage report sla`,
    `triage review list` and /metrics show what a working team sees. Uses TRIAGE_HOME (default
    ./.triage). Safe to run again: nothing is imported or written twice.
    """
    from pipeline import demo as demo_day
    from pipeline import jobs

    runtime = _runtime()
    if not as_json:
        console.print(f"[bold]Workspace[/] {runtime.settings.home.resolve()}")
        console.print(
            "Training the starter model (bundled data, a starter to replace with your own history)..."
        )
    jobs.ensure_starter_model(runtime)
    demo_day.prepare_team(runtime)  # SDRs and accounts first, so the demo's leads get owners
    for name, channel in demo_day.DEMO_FILES:
        with progress_bar(f"import {name}", None, not as_json) as advance:
            demo_day.import_sample(runtime, name, channel, on_batch=advance)
    _run_pass(runtime, direct=direct, quiet=as_json)
    worked = demo_day.work_the_day(runtime)
    summary = jobs.workspace_summary(runtime)
    if as_json:
        emit({**summary, "demo_day": worked.as_dict()}, True)
    else:
        print_summary(summary, "triage demo: the workspace after one run")
        console.print(
            f"SLA watch pass: {worked.watch.get('breached', 0)} timers breached. The demo's SDRs "
            f"{' and '.join(demo_day.DEMO_SDRS)} replied to {len(worked.replied_late)} overdue and "
            f"{len(worked.replied_on_time)} waiting enquiries, corrected {len(worked.corrected)}, "
            f"accepted {len(worked.accepted)} and claimed {len(worked.claimed)}."
        )
        console.print(
            "Next: [bold]triage report sla[/] (the ops lead's report), [bold]triage review list[/] "
            "(the queue), [bold]triage crm list[/], [bold]triage serve[/] (the web pages)."
        )


def _run_pass(runtime: Any, *, direct: bool, quiet: bool) -> dict[str, Any]:
    from pipeline import jobs

    if direct:
        ingests = jobs.read_configured_sources(runtime)
        with runtime.factory() as session:
            from store import raw

            pending = raw.count_pending(session)
        with progress_bar("process", pending, not quiet) as advance:
            processed = jobs.process(runtime, on_batch=advance)
        crm = jobs.sync_crm(runtime)
        summary = jobs.run_summary(runtime, ingests, processed, crm)
        summary.update(jobs.send_replies(runtime))
        jobs.record_flow_run(runtime, "intake", summary)
        logging.getLogger("pipeline.jobs").info(jobs.summary_line(summary))
        return summary
    from flows.intake import intake_flow

    # A run that could not read a source ends Failed, and its state still carries the summary.
    state = intake_flow(return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return cast(dict[str, Any], result)


@app.command("import")
def import_(
    path: Annotated[
        Path, typer.Argument(help="A file or folder: .eml, .mbox, .jsonl, .csv or .json (chat export).")
    ],
    channel: Annotated[Channel, typer.Option(help="Which channel the records belong to.")],
    as_json: JsonFlag = False,
) -> None:
    """Store the records of a file or folder for `triage run` to process. Importing twice adds nothing."""
    from pipeline import jobs

    runtime = _runtime()
    with progress_bar(f"import {path.name}", None, not as_json) as advance:
        summary = jobs.import_path(runtime, path, channel, on_batch=advance)
    data = {
        "source": summary.source,
        "channel": summary.channel,
        "read": summary.read,
        "stored": summary.stored,
    }
    if as_json:
        emit(data, True)
    else:
        console.print(f"{summary.source}: read {summary.read} records, stored {summary.stored} new")


@app.command()
def run(
    as_json: JsonFlag = False,
    direct: Annotated[
        bool, typer.Option("--direct", help="Run the steps without Prefect (no flow run recorded).")
    ] = False,
) -> None:
    """One pass of every configured source, then process what is pending and send CRM writes.

    Runs as a Prefect flow (ephemeral, no server needed) unless --direct. Re-running adds nothing.
    """
    runtime = _runtime()
    summary = _run_pass(runtime, direct=direct, quiet=as_json)
    if as_json:
        emit(summary, True)
    else:
        print_summary(summary, "triage run: this pass")
    errors = summary.get("source_errors") or {}
    if errors:  # the rest was processed; the run as a whole failed, and says which source
        for source, error in errors.items():
            console.print(f"[red]source {markup_safe(source)} could not be read:[/] {markup_safe(error)}")
        raise SystemExit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default TRIAGE_WEB__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default TRIAGE_WEB__PORT).")] = None,
) -> None:
    """Serve the review queue, the ops pages, the web hooks, /metrics and /healthz."""
    import uvicorn

    from config.settings import Settings

    settings = Settings()
    _runtime().engine  # noqa: B018 - the web app never changes the schema: migrate before serving
    uvicorn.run(
        "app.web:create_app",
        factory=True,
        host=host or settings.web.host,
        port=port or settings.web.port,
        proxy_headers=True,
    )


def _reply_figures(session: Any) -> dict[str, Any]:
    """Issue 17: replies by state, acknowledgements (their own target) and first touches by source."""
    from store import observability, reply_outbox, sla_repo

    states = {state: 0 for state in reply_outbox.REPLY_STATES}
    acknowledgements = 0
    for kind, state, count in observability.reply_states(session):  # the counters, not the table
        states[state] = states.get(state, 0) + count
        if kind == "auto_reply" and state == "sent":
            acknowledgements = count
    return {
        "outbox": states,
        "acknowledgements_sent": acknowledgements,
        "first_touch_by_source": sla_repo.first_touches_by_source(session),
    }


@app.command()
def status(as_json: JsonFlag = False) -> None:
    """One screen: each source's last attempt, last error and checkpoint; the backlog, review and SLA, CRM,
    models and the pause switch. A source whose last attempt failed is shown in red, with the error."""
    # The registry's rows only: models.registry imports scikit-learn, seconds of start-up for two names.
    from models import live_precision
    from store import model_registry, observability, raw, source_status
    from store.flags import automation_paused

    def active_version(session: Any) -> str | None:
        row = model_registry.version_with_status(session, "active")
        return row.version if row else None

    def shadow_version(session: Any) -> str | None:
        row = model_registry.version_with_status(session, "shadow")
        return row.version if row else None

    with _session_factory()() as session:
        paused, reason = automation_paused(session)
        sla = observability.sla_by_status(session)
        data: dict[str, Any] = {
            "sources": _source_lines(raw.checkpoints(session), source_status.all_statuses(session)),
            "pending_records": raw.count_pending(session),
            "quarantine_open": observability.open_quarantine(session),
            "review_backlog": sum(n for _, _, n in observability.review_backlog(session)),
            "sla_breached": sum(n for _, s, n in sla if s == "breached"),
            "sla_running": sum(n for _, s, n in sla if s == "running"),
            "crm": {f"{o}:{s}": n for o, s, n in observability.outbox_by_status(session)},
            "replies": _reply_figures(session),
            # the human first-response target, apart from the acknowledgements in "replies"
            "first_response_clocks": {s: n for k, s, n in sla if k == "first_response"},
            "active_model": active_version(session),
            "shadow_model": shadow_version(session),
            "automation_paused": paused,
            "pause_reason": reason,
            "live_precision": live_precision.monitor_report(session),
            "last_runs": [
                {
                    "flow": r.name,
                    "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                    "enquiries": r.summary.get("enquiries"),
                }
                for r in observability.last_runs(session, limit=5)
            ],
        }
    if as_json:
        emit(data, True)
        return
    out = Console()
    if paused:
        out.print(f"[bold red]AUTOMATION PAUSED[/]: {markup_safe(reason)}")
    sources = SafeTable(
        "source", "last attempt", "last success", "last new records", "last error", title="sources"
    )
    for item in data["sources"]:
        failing = item["ok"] is False
        sources.add_row(
            item["source"],
            item["last_attempt_at"] or "—",
            item["last_success_at"] or "—",
            item["last_read"] or "—",
            Text(item["last_error"], style="red") if failing and item["last_error"] else "",
        )
    out.print(sources)
    if data["live_precision"]["tasks"]:
        out.print(live_precision_table(data["live_precision"]))
    summary = {k: v for k, v in data.items() if k not in ("sources", "last_runs", "live_precision")}
    print_summary(summary, "status")


def _source_lines(checkpoints: Any, statuses: Any) -> list[dict[str, Any]]:
    """One line per source: its checkpoint (where it stopped reading) and its last attempt (whether
    reading works). File imports have checkpoints only; configured sources have both."""
    by_name: dict[str, dict[str, Any]] = {}
    for c in checkpoints:
        by_name[c.source] = {
            "source": c.source,
            "last_read": c.updated_at.isoformat(),
            "checkpoint": c.state,
        }
    for st in statuses:
        line = by_name.setdefault(st.source, {"source": st.source, "last_read": None, "checkpoint": None})
        failing = st.last_error_at is not None and (
            st.last_success_at is None or st.last_error_at > st.last_success_at
        )
        line.update(
            {
                "channel": st.channel,
                "ok": not failing,
                "last_attempt_at": st.last_attempt_at.isoformat(),
                "last_success_at": st.last_success_at.isoformat() if st.last_success_at else None,
                "last_error": st.last_error if failing else None,
                "last_error_at": st.last_error_at.isoformat() if st.last_error_at else None,
                "consecutive_errors": st.consecutive_errors,
                "errors_total": st.errors_total,
            }
        )
    for line in by_name.values():
        for key in ("last_attempt_at", "last_success_at", "last_error", "last_error_at"):
            line.setdefault(key, None)
        line.setdefault("ok", None)  # never attempted as a configured source (a file import)
    return sorted(by_name.values(), key=lambda line: line["source"])


@quarantine_app.command("list")
def quarantine_list(
    as_json: JsonFlag = False,
    limit: Annotated[int, typer.Option(help="Show at most this many.")] = 100,
    all_: Annotated[bool, typer.Option("--all", help="Include records already replayed.")] = False,
) -> None:
    """Records that could not be used, newest first, with the reason and where the raw bytes are."""
    from store import raw

    runtime = _runtime()
    with runtime.factory() as session:
        rows = raw.list_quarantine(session, limit=limit, include_replayed=all_)
        data = [
            {
                "id": q.id,
                "source": q.source,
                "channel": r.channel,
                "reason": q.reason,
                "raw_location": f"raw_records.id={r.id} ({r.source} {r.external_key}; {len(r.payload)} B)",
                "created_at": q.created_at.isoformat(),
                "replayed_at": q.replayed_at.isoformat() if q.replayed_at else None,
            }
            for q, r in rows
        ]
    if as_json:
        emit(data, True)
        return
    table = SafeTable("id", "channel", "source", "reason", "raw bytes")
    for item in data:
        table.add_row(
            str(item["id"]),
            str(item["channel"]),
            str(item["source"]),
            str(item["reason"])[:90],
            str(item["raw_location"]),
        )
    Console().print(table)


@quarantine_app.command("show")
def quarantine_show(
    quarantine_id: Annotated[int, typer.Argument(help="The quarantine id from `triage quarantine list`.")],
    raw_out: Annotated[Path | None, typer.Option("--raw", help="Write the raw bytes to this file.")] = None,
) -> None:
    """Show one quarantined record's reason, and save its raw bytes for inspection."""
    from store import raw
    from store.tables import Quarantine

    runtime = _runtime()
    with runtime.factory() as session:
        row = session.get(Quarantine, quarantine_id)
        if row is None:
            raise typer.BadParameter(f"no quarantine row {quarantine_id}")
        record = raw.get_raw(session, row.raw_id)
        assert record is not None
        source, key, reason = (markup_safe(text) for text in (row.source, record.external_key, row.reason))
        console.print(f"[bold]{source}[/] key {key}: {reason}")
        if raw_out is not None:
            raw_out.write_bytes(record.payload)
            console.print(f"raw bytes written to {raw_out}")


@quarantine_app.command("replay")
def quarantine_replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Quarantine ids; none means every open one.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Put quarantined records back in the queue (after fixing the cause); `triage run` processes them."""
    from store import raw
    from store.common import utcnow
    from store.db import transaction

    runtime = _runtime()
    with transaction(runtime.factory) as session:
        count = raw.replay_quarantine(session, ids or None, now=utcnow())
    emit({"replayed": count}, as_json)
    if not as_json:
        console.print(f"{count} record(s) back in the queue; run `triage run` to process them")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (also done automatically by every command)."""
    runtime = _runtime()
    runtime.engine  # noqa: B018 - building the engine runs the migrations
    console.print(
        f"database at the newest revision: {runtime.settings.effective_database_url.split('@')[-1]}"
    )


@automation_app.command("pause")
def automation_pause(
    reason: Annotated[str, typer.Option(help="Why; shown on every review page while paused.")],
    by: Annotated[str, typer.Option(help="Who is pausing it.")],
) -> None:
    """Pause automation: every new enquiry goes to people until `triage automation resume`."""
    from store.db import transaction
    from store.flags import set_automation_paused

    runtime = _runtime()
    with transaction(runtime.factory) as session:
        set_automation_paused(session, True, reason=reason, by=by)
    console.print(f"automation paused by {markup_safe(by)}: {markup_safe(reason)}")


@automation_app.command("resume")
def automation_resume(by: Annotated[str, typer.Option(help="Who is resuming it.")]) -> None:
    """Let the decision matrix automate again."""
    from store.db import transaction
    from store.flags import set_automation_paused

    runtime = _runtime()
    with transaction(runtime.factory) as session:
        set_automation_paused(session, False, reason="resumed", by=by)
    console.print(f"automation resumed by {markup_safe(by)}")


@automation_app.command("status")
def automation_status(as_json: JsonFlag = False) -> None:
    """Whether automation is paused, and why."""
    from store.flags import automation_paused

    runtime = _runtime()
    with runtime.factory() as session:
        paused, reason = automation_paused(session)
    emit({"paused": paused, "reason": reason}, as_json)
    if not as_json:
        console.print(f"automation {'PAUSED: ' + markup_safe(reason) if paused else 'running'}")


@automation_app.command("tasks")
def automation_tasks(as_json: JsonFlag = False) -> None:
    """Each task's live automated precision on its spot checks (95% Wilson interval), and which tasks
    the live precision monitor paused."""
    from models import live_precision

    runtime = _runtime()
    with runtime.factory() as session:
        report = live_precision.monitor_report(session)
    if as_json:
        emit(report, True)
        return
    console.print(live_precision_table(report))


def live_precision_table(report: dict[str, Any]) -> SafeTable:
    """The monitor's figures as a table (shared by `triage automation tasks`)."""
    table = SafeTable("task", "spot checks reviewed", "precision", "95% interval", "target", "state")
    for task in report["tasks"]:
        interval = f"{task['low']:.3f}-{task['high']:.3f}" if task["high"] is not None else "—"
        precision = f"{task['precision']:.3f}" if task["precision"] is not None else "—"
        state = f"PAUSED: {task['reason']}" if task["paused"] else "automating"
        table.add_row(
            task["task"], str(task["reviewed"]), precision, interval, f"{task['target']:.3f}", state
        )
    return table


@automation_app.command("resume-task")
def automation_resume_task(
    task: Annotated[str, typer.Argument(help="The decision-matrix task the live precision monitor paused.")],
    by: Annotated[str, typer.Option(help="Who resumes it (a person).")],
) -> None:
    """Let a task the live precision monitor paused automate again; its live precision counts afresh."""
    from models import live_precision
    from store.db import transaction

    runtime = _runtime()
    with transaction(runtime.factory) as session:
        live_precision.resume_task(session, task, by=by, now=runtime.clock())
    console.print(f"automation of task {markup_safe(task)} resumed by {markup_safe(by)}")


def _mount_groups() -> None:
    """Each area's command group; their modules import heavy libraries only inside commands."""
    from app.commands import data
    from app.commands.crm import crm_app
    from app.commands.flows import flows_app
    from app.commands.model import model_app
    from app.commands.ops import audit_app, policy_app
    from app.commands.review import review_app, users_app
    from app.commands.sla import report_app, sla_app
    from app.commands.taxonomy import taxonomy_app

    db_app.command("prune")(data.db_prune)
    db_app.command("size")(data.db_size)
    db_app.command("recount")(data.db_recount)
    app.command("erase")(data.erase)
    for group, name in (
        (model_app, "model"),
        (crm_app, "crm"),
        (sla_app, "sla"),
        (report_app, "report"),
        (review_app, "review"),
        (users_app, "users"),
        (policy_app, "policy"),
        (taxonomy_app, "taxonomy"),
        (audit_app, "audit"),
        (flows_app, "flows"),
    ):
        app.add_typer(group, name=name)


_mount_groups()


def main() -> None:
    """Entry point: clear one-line errors for people, exit codes for scripts."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from config.settings import describe_settings_error

    try:
        app()
    except ConfigError as error:
        console.print(f"[red]configuration error:[/] {markup_safe(error)}")
        raise SystemExit(2) from None
    except (ValidationError, SettingsError) as error:
        # Settings() read from the environment: name the fields, never the values (or a traceback).
        console.print(f"[red]configuration error:[/] {markup_safe(describe_settings_error(error))}")
        raise SystemExit(2) from None
    except FatalError as error:
        console.print(f"[red]error:[/] {markup_safe(error)}")
        raise SystemExit(1) from error
    except TriageError as error:
        console.print(f"[red]error:[/] {markup_safe(error)}")
        raise SystemExit(1) from error


if __name__ == "__main__":
    main()
