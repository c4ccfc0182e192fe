"""The scheduled deployments: what runs when, served by one process or registered for workers.

One plan, two ways to run it:
- `serve_all()` (`triage flows serve`): one long-running process polls for and runs every deployment on
  its schedule; with no PREFECT_API_URL it uses Prefect's ephemeral server under PREFECT_HOME.
- `deploy_all(pool)` (`triage flows deploy --pool NAME`): registers the same deployments with a Prefect
  server and a process work pool; `prefect worker start --pool NAME` on any machine that has this
  package installed (and the same TRIAGE_* environment) runs them. Entrypoints are module paths
  (`flows.intake.intake_flow`), so workers import the installed package and need no code storage.

The plan (`plan_deployments`) imports neither Prefect nor the flows, so `triage flows list` is instant.
Every deployment allows one run at a time and cancels a new run while one is active: an every-minute
intake that takes three minutes must not pile up runs behind itself.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import ScheduleSettings, Settings
from models.errors import ConfigError, FatalError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger(__name__)

HOOKS_DEPLOYMENT = "intake-hooks"


def schedule_settings(settings: Settings) -> ScheduleSettings:
    """When each flow runs (`TRIAGE_SCHEDULE__*`)."""
    return settings.schedule


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment, described without Prefect: name, flow entrypoint, parameters and schedule."""

    name: str
    module: str
    flow_attribute: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    interval_seconds: float | None = None
    cron: str | None = None
    timezone: str = "UTC"

    @property
    def entrypoint(self) -> str:
        """The module-path entrypoint a worker imports (`flows.intake.intake_flow`)."""
        return f"{self.module}.{self.flow_attribute}"

    @property
    def schedule_text(self) -> str:
        """The schedule for people: `every 60s` or `cron 0 2 * * * (UTC)`."""
        if self.interval_seconds is not None:
            return f"every {self.interval_seconds:g}s"
        return f"cron {self.cron} ({self.timezone})"

    def as_dict(self) -> dict[str, Any]:
        """Plain values for `triage flows list --json`."""
        return {
            "name": self.name,
            "entrypoint": self.entrypoint,
            "parameters": self.parameters,
            "interval_seconds": self.interval_seconds,
            "cron": self.cron,
            "timezone": self.timezone,
            "schedule": self.schedule_text,
            "description": self.description,
        }


def plan_deployments(settings: Settings | None = None) -> list[DeploymentSpec]:
    """Every deployment the settings call for: one intake per mailbox, the hooks intake, SLA, retrain,
    report, retention, and with Salesforce the CRM touch poll.

    Each mailbox gets its own deployment (`intake-<mailbox name>`) so mailboxes are read in parallel by
    several workers; `intake-hooks` reads no source and processes what web hooks and imports stored.
    Every intake run also processes all pending records and drains the CRM outbox; row locks keep
    concurrent runs off each other's rows on PostgreSQL.
    """
    settings = settings or Settings()
    schedule = schedule_settings(settings)
    intake_seconds = schedule.intake_minutes * 60
    specs = [
        DeploymentSpec(
            name=f"intake-{mailbox.name}",
            module="flows.intake",
            flow_attribute="intake_flow",
            description=f"Read mailbox {mailbox.source_name}, process pending records, send CRM writes.",
            parameters={
                "sources": [mailbox.source_name] + ([mailbox.sent_source_name] if mailbox.sent_folder else [])
            },
            interval_seconds=intake_seconds,
            timezone=schedule.timezone,
        )
        for mailbox in settings.all_mailboxes
    ]
    specs += [
        DeploymentSpec(
            name=HOOKS_DEPLOYMENT,
            module="flows.intake",
            flow_attribute="intake_flow",
            description="Process what web hooks and imports stored, send CRM writes (reads no mailbox).",
            parameters={"sources": []},
            interval_seconds=intake_seconds,
            timezone=schedule.timezone,
        ),
        DeploymentSpec(
            name="sla-watch",
            module="flows.sla_watch",
            flow_attribute="sla_watch_flow",
            description="Mark SLA breaches and send escalations, each once.",
            interval_seconds=float(schedule.sla_watch_seconds),
            timezone=schedule.timezone,
        ),
        DeploymentSpec(
            name="retrain",
            module="flows.retrain",
            flow_attribute="retrain_flow",
            description="Train a candidate model from history and corrections; a person promotes it.",
            cron=schedule.retrain_cron,
            timezone=schedule.timezone,
        ),
        DeploymentSpec(
            name="sla-report",
            module="flows.report",
            flow_attribute="weekly_report_flow",
            description="Write the weekly SLA breach report.",
            cron=schedule.report_cron,
            timezone=schedule.timezone,
        ),
        DeploymentSpec(
            name="retention",
            module="flows.retention",
            flow_attribute="retention_flow",
            description="Empty old bodies and payloads per retention.yaml, in batches (rows and keys stay).",
            cron=schedule.retention_cron,
            timezone=schedule.timezone,
        ),
    ]
    if settings.crm.backend == "salesforce":
        # Only Salesforce is polled; the local CRM's touches are recorded by hand (`triage crm touch`).
        specs.append(
            DeploymentSpec(
                name="crm-touches",
                module="flows.crm_touches",
                flow_attribute="crm_touches_flow",
                description="Stop first-response clocks for leads worked in Salesforce (status, tasks).",
                interval_seconds=schedule.crm_touch_minutes * 60,
                timezone=schedule.timezone,
            )
        )
    return specs


def load_flow(spec: DeploymentSpec) -> Any | None:
    """The spec's Prefect flow object, or None (logged) when its module is not part of this install."""
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as error:
        if error.name != spec.module:
            raise
        log.warning("deployment %s skipped: module %s is not installed", spec.name, spec.module)
        return None
    flow = getattr(module, spec.flow_attribute, None)
    if flow is None:
        log.warning("deployment %s skipped: %s has no %s", spec.name, spec.module, spec.flow_attribute)
    return flow


def _make_prefect_home() -> None:
    # Prefect only warns when it cannot create its home, and a fresh TRIAGE_HOME does not exist yet.
    home = os.environ.get("PREFECT_HOME")
    if home:
        Path(home).expanduser().mkdir(parents=True, exist_ok=True)


def build_deployments(specs: list[DeploymentSpec] | None = None) -> list[RunnerDeployment]:
    """Prefect deployments for the specs (imports Prefect and the flows); missing flows are skipped."""
    _make_prefect_home()
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval
    from prefect.types.entrypoint import EntrypointType

    deployments = []
    for spec in specs if specs is not None else plan_deployments():
        flow = load_flow(spec)
        if flow is None:
            continue
        if spec.interval_seconds is not None:
            schedule = Interval(spec.interval_seconds, timezone=spec.timezone)
        else:
            assert spec.cron is not None
            schedule = Cron(spec.cron, timezone=spec.timezone)
        deployment = flow.to_deployment(
            name=spec.name,
            schedule=schedule,
            parameters=spec.parameters,
            description=spec.description,
            tags=["enquiry-triage"],
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        deployments.append(deployment)
    return deployments


@contextmanager
def local_prefect_server(port: int, *, startup_seconds: float = 180) -> Iterator[str]:
    """Run `prefect server start` on 127.0.0.1:`port` as a child process; yield its API URL; stop it on exit.

    Prefect's ephemeral API runs no scheduler, so scheduled deployments need a real server even on one
    machine. This one keeps its SQLite database under PREFECT_HOME and logs to PREFECT_HOME/server.log.
    """
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with (home / "server.log").open("ab") as server_log:
        server = subprocess.Popen(
            command, env=env, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_healthy(url, server, startup_seconds, home / "server.log")
        log.info("local Prefect server at %s (log: %s)", url, home / "server.log")
        yield url
    finally:
        _stop(server)


def _wait_until_healthy(url: str, server: subprocess.Popen[bytes], limit: float, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise FatalError(f"the Prefect server exited with {server.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(1)
    raise FatalError(f"the Prefect server did not answer {url}/health within {limit:g}s; see {log_path}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def serve_all(*, limit: int | None = None, server_port: int = 4200) -> None:
    """Serve every deployment on its schedule in this process until interrupted (Ctrl-C, SIGTERM).

    With PREFECT_API_URL set, the deployments are served against that server. Without it a local
    Prefect server (SQLite under PREFECT_HOME) is started on `server_port` for as long as this runs.
    """
    if os.environ.get("PREFECT_API_URL"):
        _serve(limit)
        return
    with local_prefect_server(server_port) as url:
        # Set before Prefect is imported, so its settings, the runner and every flow run see the server.
        os.environ["PREFECT_API_URL"] = url
        try:
            _serve(limit)
        finally:
            del os.environ["PREFECT_API_URL"]


def _serve(limit: int | None) -> None:
    import prefect

    deployments = build_deployments()
    log.info("serving %s", ", ".join(d.name for d in deployments))
    # SIGTERM (systemd stop) ends the serve loop like Ctrl-C, so the local server is stopped too.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        prefect.serve(*deployments, limit=limit, print_starting_message=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def deploy_all(pool: str) -> list[dict[str, str]]:
    """Register every deployment with the Prefect server (PREFECT_API_URL) for the work pool `pool`.

    The pool must exist (`prefect work-pool create NAME --type process`). Applying again updates the
    deployments in place. Returns one {"name", "flow", "id", "entrypoint", "schedule"} per deployment.
    """
    if not os.environ.get("PREFECT_API_URL"):
        # Without it Prefect would register the deployments with a throw-away ephemeral API.
        raise ConfigError(
            "set PREFECT_API_URL to the Prefect server the workers poll (e.g. http://prefect.internal:4200/api)"
        )
    _make_prefect_home()
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound as error:
            raise ConfigError(
                f"work pool {pool!r} does not exist on the Prefect server: "
                f"create it with `prefect work-pool create {pool} --type process`"
            ) from error
    specs = {spec.name: spec for spec in plan_deployments()}
    registered = []
    for deployment in build_deployments(list(specs.values())):
        deployment_id = deployment.apply(work_pool_name=pool)
        spec = specs[deployment.name]
        registered.append(
            {
                "name": f"{deployment.flow_name}/{deployment.name}",
                "flow": str(deployment.flow_name),
                "id": str(deployment_id),
                "entrypoint": spec.entrypoint,
                "schedule": spec.schedule_text,
            }
        )
    return registered
