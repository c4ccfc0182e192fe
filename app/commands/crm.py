"""`triage crm`: list leads, check the CRM connection, see and retry failed writes, drain the outbox once,
record or poll first touches.

Runs no flow, so it never imports Prefect. Every subcommand takes `--json` for scripts where it prints
something a script would read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from models.errors import ConfigError, FatalError
from review.display import SafeTable, markup_safe

# Heavy (SQLAlchemy, the CRM connectors): imported by the commands that need them.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings

crm_app = typer.Typer(
    help="The CRM: leads, connection check, failed writes, outbox sync.", no_args_is_help=True
)
console = Console()


def _mount_accounts() -> None:
    from app.commands.accounts import accounts_app

    crm_app.add_typer(accounts_app, name="accounts")


_mount_accounts()

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _open() -> tuple[Settings, sessionmaker[Session]]:
    from config.settings import Settings
    from pipeline.runtime import Runtime

    settings = Settings()
    settings.ensure_home()
    runtime = Runtime(settings)  # the same composition as every command: home, engine, migrations
    return runtime.settings, runtime.factory


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


@crm_app.command("touch")
def touch(
    enquiry_id: str,
    by: Annotated[str, typer.Option("--by", help="Who touched the customer (a name or CRM user).")],
    at: Annotated[
        str, typer.Option("--at", help="When, ISO 8601 with a time zone: 2026-03-02T10:15:00+01:00 or ...Z.")
    ],
    note: Annotated[str, typer.Option(help="What happened (a call, an e-mail from the CRM).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Record a first touch made in the CRM: stops the enquiry's first-response clock at --at.

    The earliest touch wins: a touch earlier than the one recorded replaces it; a later one is kept in
    the audit trail only. Exits 1 for an unknown enquiry or a time in the future, 2 for a bad time.
    """
    from datetime import datetime

    from pipeline.runtime import Runtime
    from sla.touches import TouchError, record_touch

    try:
        instant = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        _touch_fail(f"--at {at!r} is not an ISO 8601 time", as_json=as_json, code=2)
    runtime = Runtime()
    try:
        with runtime.factory() as session:
            try:
                result = record_touch(
                    session, enquiry_id, by=by, at=instant, source="crm", now=runtime.clock(), note=note
                )
            except TouchError as error:
                _touch_fail(str(error), as_json=as_json, code=2 if "time zone" in str(error) else 1)
            session.commit()
    finally:
        runtime.engine.dispose()
    payload = {"ok": True, "enquiry_id": enquiry_id, "stopped": result.stopped, "at": instant.isoformat()}
    if as_json:
        _print_json(payload)
        return
    state = "stopped" if result.stopped else "already stopped by an earlier touch"
    console.print(f"first-response clock of {markup_safe(enquiry_id)}: {state}", highlight=False)


def _touch_fail(message: str, *, as_json: bool, code: int) -> NoReturn:
    if as_json:
        _print_json({"ok": False, "error": message})
    else:
        Console(stderr=True).print(f"[red]{markup_safe(message)}[/red]")
    raise typer.Exit(code)


@crm_app.command("poll-touches")
def poll_touches(as_json: JsonOption = False) -> None:
    """Poll Salesforce once for first touches: leads of the team whose Status left the open statuses
    (TRIAGE_SALESFORCE__OPEN_STATUSES) and completed Tasks stop their enquiries' first-response clocks.

    What the crm-touches flow runs every TRIAGE_SCHEDULE__CRM_TOUCH_MINUTES. Exits 1 when Salesforce is
    not the CRM or cannot be read.
    """
    from pipeline import jobs
    from pipeline.runtime import Runtime

    runtime = Runtime()
    try:
        summary = jobs.poll_crm_touches(runtime)
    except (ConfigError, FatalError) as error:
        _touch_fail(str(error), as_json=as_json, code=1)
    except Exception as error:  # RetriableError (Salesforce away) and the like: say so, exit 1
        _touch_fail(f"{error.__class__.__name__}: {error}", as_json=as_json, code=1)
    finally:
        runtime.engine.dispose()
    if as_json:
        _print_json({"ok": True, **summary})
        return
    console.print(
        f"Salesforce: {summary['leads_seen']} lead(s) out of the open statuses and {summary['tasks_seen']} "
        f"completed task(s) read; {summary['clocks_stopped']} first-response clock(s) stopped.",
        highlight=False,
    )


@crm_app.command("list")
def list_leads(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many leads.")] = 50,
) -> None:
    """Leads in the CRM: the local table, or (for Salesforce) the leads sent with their Salesforce Ids."""
    from store import local_crm, outbox

    settings, factory = _open()
    with factory() as session:
        if settings.crm.backend == "local":
            rows = [
                {
                    "id": f"L{lead.id}",
                    "external_id": lead.external_id,
                    "email": lead.fields.get("email"),
                    "company": lead.fields.get("company"),
                    "intent": lead.fields.get("intent"),
                    "lane": lead.fields.get("lane"),
                    "updated_at": lead.updated_at.isoformat(),
                }
                for lead in local_crm.list_leads(session, limit=limit)
            ]
            total = local_crm.count_leads(session)
        else:
            rows = [
                {
                    "id": row.crm_id,
                    "external_id": row.enquiry_id,
                    "email": row.payload.get("email"),
                    "company": row.payload.get("company"),
                    "intent": row.payload.get("intent"),
                    "lane": row.payload.get("lane"),
                    "updated_at": row.sent_at.isoformat() if row.sent_at else None,
                }
                for row in outbox.sent_leads(session, limit=limit)
            ]
            total = outbox.counts_by_status_and_operation(session).get(("upsert_lead", "sent"), 0)
    if as_json:
        _print_json({"backend": settings.crm.backend, "total": total, "leads": rows})
        return
    table = SafeTable(title=f"CRM leads ({settings.crm.backend}): {len(rows)} of {total}")
    for column in ("id", "external_id", "email", "company", "intent", "lane", "updated_at"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[column] or "") for column in row))
    console.print(table)


@crm_app.command()
def check(as_json: JsonOption = False) -> None:
    """Verify the CRM: credentials, the external-id field and every mapped field. Exit 1 when not ready."""
    from connectors.crm.factory import make_crm_backend

    try:
        settings, factory = _open()
        backend = make_crm_backend(settings, factory)
        result = backend.check()
        name, ok, message = backend.name, result.ok, result.message
        if settings.crm.accounts.enabled:  # account matching's fields too (issue 12)
            from app.commands.accounts import directory_check

            accounts = directory_check(settings, factory, backend)
            ok, message = ok and accounts.ok, f"{message}\n{accounts.message}"
    except ConfigError as error:
        name, ok, message = "?", False, str(error)
    if as_json:
        _print_json({"backend": name, "ok": ok, "message": message})
    else:
        console.print(
            f"[{'green' if ok else 'red'}]{'OK' if ok else 'NOT READY'}[/] ({name})", highlight=False
        )
        console.print(markup_safe(message), highlight=False)
    if not ok:
        raise typer.Exit(1)


@crm_app.command()
def failures(
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 200,
) -> None:
    """Writes the CRM rejected for good, with the CRM's own message; fix the cause, then `crm retry`."""
    from store import outbox

    _, factory = _open()
    with factory() as session:
        rows = [
            {
                "id": row.id,
                "enquiry_id": row.enquiry_id,
                "operation": row.operation,
                "attempts": row.attempts,
                "error": row.last_error,
            }
            for row in outbox.failures(session, limit=limit)
        ]
    if as_json:
        _print_json({"failures": rows})
        return
    if not rows:
        console.print("No failed CRM writes.")
        return
    table = SafeTable(title=f"Failed CRM writes: {len(rows)}")
    for column in ("id", "enquiry_id", "operation", "attempts", "error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(value or "") for value in row.values()))
    console.print(table)
    console.print("Fix the cause (mapping, Salesforce field, data), then: triage crm retry [--id N ...]")


@crm_app.command()
def retry(
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Outbox id to retry; repeat. Default: all.")
    ] = None,
) -> None:
    """Queue failed writes again; the next sync sends them."""
    from store import outbox
    from store.common import utcnow

    _, factory = _open()
    with factory() as session, session.begin():
        count = outbox.requeue_failed(session, now=utcnow(), ids=ids or None)
    console.print(f"{count} failed write(s) queued again.")


@crm_app.command()
def sync(as_json: JsonOption = False) -> None:
    """Drain the outbox once into the configured CRM (what the intake flow does every run)."""
    from connectors.crm.factory import make_crm_backend
    from pipeline.crm_outage import OutageAlerts
    from pipeline.crm_sync import drain_outbox
    from store import outbox

    settings, factory = _open()
    try:
        backend = make_crm_backend(settings, factory)
        summary = drain_outbox(
            factory,
            backend,
            batch_size=settings.crm.batch_size,
            max_attempts=settings.crm.max_attempts,
            backoff_seconds=settings.crm.backoff_seconds,
            # The same alert as the scheduled drain: a sync run by hand during an outage counts too.
            alerts=OutageAlerts.from_settings(settings, settings.crm.outage_alert_minutes),
        )
    except (ConfigError, FatalError) as error:
        if as_json:
            _print_json({"ok": False, "error": str(error)})
        else:
            console.print(f"[red]CRM sync stopped:[/] {markup_safe(error)}", highlight=False)
        raise typer.Exit(1) from error
    with factory() as session:
        counts = outbox.counts_by_status(session)
    result = {
        "ok": summary.stopped_by is None,
        "backend": backend.name,
        "sent": summary.sent,
        "retried": summary.retried,
        "failed": summary.failed,
        "batches": summary.batches,
        "stopped_by": summary.stopped_by,
        "alerted": summary.alerted,
        "outbox": counts,
    }
    if as_json:
        _print_json(result)
        return
    console.print(
        f"{backend.name}: sent {summary.sent}, retry later {summary.retried}, failed {summary.failed} "
        f"in {summary.batches} batch(es); outbox now {counts}",
        highlight=False,
    )
    if summary.stopped_by:
        console.print(f"[yellow]Stopped early:[/] {markup_safe(summary.stopped_by)}", highlight=False)
    if summary.alerted:
        console.print("[yellow]The CRM has been unavailable for a while: the ops lead was notified.[/]")
