"""`triage flows`: the scheduled deployments — list them, serve them all in one process, or register them
with a Prefect server's work pool for workers on other machines.

`list` imports neither Prefect nor the flows; `serve` and `deploy` do (they need them).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from review.display import SafeTable

flows_app = typer.Typer(
    help="Scheduled deployments: list, serve (one process) or deploy (Prefect server + workers).",
    no_args_is_help=True,
)
console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@flows_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """The deployments and schedules `serve` and `deploy` would create, from the current settings."""
    from flows.deployments import plan_deployments

    specs = plan_deployments()
    if as_json:
        _print_json([spec.as_dict() for spec in specs])
        return
    table = SafeTable("deployment", "schedule", "entrypoint", "parameters")
    for spec in specs:
        table.add_row(spec.name, spec.schedule_text, spec.entrypoint, json.dumps(spec.parameters))
    Console().print(table)


@flows_app.command("serve")
def serve(
    limit: Annotated[int | None, typer.Option(help="Most flow runs at once (default: no limit).")] = None,
    server_port: Annotated[
        int, typer.Option(help="Port of the local Prefect server started when PREFECT_API_URL is unset.")
    ] = 4200,
) -> None:
    """Run every deployment on its schedule in this process until stopped (Ctrl-C or SIGTERM).

    With PREFECT_API_URL set the deployments are served against that server. Without it a local
    Prefect server (SQLite under PREFECT_HOME, default TRIAGE_HOME/prefect) runs beside this command
    and stops with it: Prefect's ephemeral mode has no scheduler.
    """
    import os

    # A long-running process: its log is where an operator reads each run's one-line summary.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    from flows.deployments import plan_deployments, serve_all

    for spec in plan_deployments():
        console.print(f"{spec.name}: {spec.schedule_text} → {spec.entrypoint}")
    serve_all(limit=limit, server_port=server_port)


@flows_app.command("deploy")
def deploy(
    pool: Annotated[str, typer.Option("--pool", help="The Prefect work pool (type process) workers poll.")],
    as_json: JsonFlag = False,
) -> None:
    """Register every deployment with the Prefect server at PREFECT_API_URL for the work pool.

    Then start `prefect worker start --pool NAME` on each machine that has this package installed
    and the same TRIAGE_* environment (database URL, CRM, mailboxes).
    """
    from flows.deployments import deploy_all

    # Prefect prints progress to stdout; keep stdout for the JSON a script reads.
    with contextlib.redirect_stdout(sys.stderr):
        registered = deploy_all(pool)
    if as_json:
        _print_json(registered)
        return
    table = SafeTable("deployment", "schedule", "id")
    for item in registered:
        table.add_row(item["name"], item["schedule"], item["id"])
    Console().print(table)
    console.print(f"Start workers with: prefect worker start --pool {pool}")
