"""The scheduled deployments, and the scale-out recipe of docs/operations.md end to end.

The fast tests check the plan (`triage flows list`) and the Prefect deployments built from it. The slow
one runs the recipe: a Prefect server on PostgreSQL, a process work pool, `triage flows deploy`, a
worker, one run of the `intake-hooks` deployment, enquiries in the app's PostgreSQL database.

Every command is a real subprocess with the environment the operations guide sets. The server's
scheduler is switched off here so that the one run this test starts is the only run (with it on, the
every-minute schedule would start runs of its own and the one-at-a-time limit could cancel ours).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.ops.test_concurrency import form_posts

POOL = "triage-test"
RECORDS = 12
SERVER_START_SECONDS = 120
RUN_SECONDS = 180
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name} is empty)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    """The running pieces and the environment every command shares."""

    tmp: Path
    api_url: str
    app_db_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """A long-running command in its own process group, output to tmp/<name>.log."""
        log = (self.tmp / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args, env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def run(self, args: list[str], timeout: float = 120) -> str:
        """A command that must succeed; returns its stdout."""
        done = subprocess.run(
            args, env=self.env, cwd=self.tmp, capture_output=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"{args} failed:\n{done.stdout.decode()}\n{done.stderr.decode()}"
        return done.stdout.decode()

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log\n{tail(self.tmp / f'{name}.log')}" for name in ("server", "worker"))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flows_command() -> list[str]:
    """`triage flows` once the CLI mounts it; until then the same typer app through Python."""
    probe = subprocess.run([str(BIN / "triage"), "flows", "--help"], capture_output=True, check=False)
    if probe.returncode == 0 and b"deploy" in probe.stdout:
        return [str(BIN / "triage"), "flows"]
    return [sys.executable, "-c", "from app.commands.flows import flows_app; flows_app()"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Prefect server on its own PostgreSQL database, and an empty app database beside it."""
    if shutil.which("prefect", path=str(BIN)) is None:  # pragma: no cover - the venv always has it
        pytest.fail("the prefect command is missing from the virtualenv")
    prefect_db = create_database("prefect_test")
    app_db = create_database("triage_app_test")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].removeprefix("postgresql://")
    port = free_port()
    home = tmp_path / "triage-home"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "TRIAGE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{base}/{prefect_db}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="2",
        TRIAGE_HOME=str(home),
        TRIAGE_DATABASE_URL=f"postgresql://{base}/{app_db}",
    )
    running = Cluster(tmp_path, env["PREFECT_API_URL"], env["TRIAGE_DATABASE_URL"], env)
    try:
        yield running
    finally:
        running.stop()
        drop_database(prefect_db)
        drop_database(app_db)


def wait_healthy(cluster: Cluster, server: subprocess.Popen[bytes], started: float) -> float:
    while time.monotonic() - started < SERVER_START_SECONDS:
        assert server.poll() is None, f"prefect server exited:\n{cluster.logs()}"
        try:
            if httpx.get(f"{cluster.api_url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"prefect server not healthy after {SERVER_START_SECONDS}s:\n{cluster.logs()}")


def wait_for_run(cluster: Cluster, client: httpx.Client, run_id: str) -> dict[str, Any]:
    started = time.monotonic()
    while time.monotonic() - started < RUN_SECONDS:
        run: dict[str, Any] = client.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state"] and run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} unfinished after {RUN_SECONDS}s:\n{cluster.logs()}")


MAILBOXES = json.dumps(
    [
        {"name": "sales", "host": "imap.example.com", "username": "sales", "password": "x"},
        {"name": "support", "host": "imap.example.com", "username": "support", "password": "x"},
    ]
)


@pytest.fixture
def two_mailboxes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [key for key in os.environ if key.startswith("TRIAGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home" / "prefect"))
    monkeypatch.setenv("TRIAGE_MAILBOXES", MAILBOXES)
    monkeypatch.setenv("TRIAGE_SCHEDULE__INTAKE_MINUTES", "5")
    monkeypatch.setenv("TRIAGE_SCHEDULE__TIMEZONE", "Europe/Berlin")


def test_plan_has_one_intake_per_mailbox_and_the_other_schedules(two_mailboxes: None) -> None:
    from flows.deployments import plan_deployments

    plan = {spec.name: spec for spec in plan_deployments()}
    assert list(plan) == [
        "intake-sales",
        "intake-support",
        "intake-hooks",
        "sla-watch",
        "retrain",
        "sla-report",
        "retention",
    ]
    assert plan["retention"].entrypoint == "flows.retention.retention_flow"
    assert plan["intake-sales"].parameters == {"sources": ["imap:sales"]}
    assert plan["intake-support"].parameters == {"sources": ["imap:support"]}
    assert plan["intake-hooks"].parameters == {"sources": []}
    assert {plan[name].interval_seconds for name in ("intake-sales", "intake-support", "intake-hooks")} == {
        300
    }
    assert plan["sla-watch"].interval_seconds == 60
    assert (plan["retrain"].cron, plan["sla-report"].cron) == ("0 2 * * *", "0 7 * * 1")
    assert plan["sla-report"].timezone == "Europe/Berlin"
    assert plan["intake-hooks"].entrypoint == "flows.intake.intake_flow"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRIAGE_SCHEDULE__TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("TRIAGE_SCHEDULE__RETRAIN_CRON", "0 2 * *", "five fields"),
        ("TRIAGE_SCHEDULE__INTAKE_MINUTES", "0", "greater than 0"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_reason(
    two_mailboxes: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    from pydantic import ValidationError

    from flows.deployments import plan_deployments

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        plan_deployments()


def test_flows_list_prints_the_plan_without_importing_prefect(two_mailboxes: None) -> None:
    script = (
        "import sys\n"
        "from app.commands.flows import flows_app\n"
        "try:\n    flows_app(['list', '--json'])\nexcept SystemExit as exit:\n    assert not exit.code\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    listed = json.loads(done.stdout)
    assert [item["name"] for item in listed][:3] == ["intake-sales", "intake-support", "intake-hooks"]
    assert listed[0]["schedule"] == "every 300s"


def test_deployments_carry_module_entrypoints_schedules_and_a_one_run_limit(two_mailboxes: None) -> None:
    from flows.deployments import DeploymentSpec, build_deployments, plan_deployments

    missing = DeploymentSpec(
        "ghost", "flows.no_such_module", "ghost_flow", "not installed", interval_seconds=60
    )
    deployments = {d.name: d for d in build_deployments([*plan_deployments(), missing])}
    assert "ghost" not in deployments  # a flow that is not installed is skipped, not fatal
    sales = deployments["intake-sales"]
    assert (sales.flow_name, sales.entrypoint) == ("intake", "flows.intake.intake_flow")
    assert sales.parameters == {"sources": ["imap:sales"]}
    assert [s.schedule.interval.total_seconds() for s in sales.schedules] == [300]
    assert sales.concurrency_limit == 1
    assert sales.concurrency_options is not None
    assert sales.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    report = deployments.get("sla-report")
    if report is not None:  # present once flows/report.py is installed
        assert [(s.schedule.cron, s.schedule.timezone) for s in report.schedules] == [
            ("0 7 * * 1", "Europe/Berlin")
        ]


def test_salesforce_adds_the_crm_touch_poll_on_its_own_schedule(
    two_mailboxes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.deployments import build_deployments, plan_deployments

    assert "crm-touches" not in {spec.name for spec in plan_deployments()}  # the local CRM: by hand
    monkeypatch.setenv("TRIAGE_CRM__BACKEND", "salesforce")
    monkeypatch.setenv("TRIAGE_SCHEDULE__CRM_TOUCH_MINUTES", "10")
    plan = {spec.name: spec for spec in plan_deployments()}
    spec = plan["crm-touches"]
    assert (spec.entrypoint, spec.interval_seconds) == ("flows.crm_touches.crm_touches_flow", 600)
    [deployment] = build_deployments([spec])
    assert (deployment.flow_name, deployment.concurrency_limit) == ("crm-touches", 1)


def test_deploy_without_a_server_url_is_refused(two_mailboxes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.deployments import deploy_all
    from models.errors import ConfigError

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        deploy_all("triage")


@pytest.mark.slow
def test_intake_deployment_runs_on_a_worker_and_fills_the_app_database(cluster: Cluster) -> None:
    from sqlalchemy import text

    from store.db import make_engine

    port = cluster.api_url.split(":")[-1].removesuffix("/api")
    clock = time.monotonic()
    server = cluster.start("server", ["prefect", "server", "start", "--host", "127.0.0.1", "--port", port])
    # While the server migrates its database: store form posts as raw records, as `triage import` does.
    forms = cluster.tmp / "forms.jsonl"
    forms.write_text("".join(json.dumps(post) + "\n" for post in form_posts(RECORDS)))
    imported = json.loads(cluster.run(["triage", "import", str(forms), "--channel", "form", "--json"]))
    assert imported["stored"] == RECORDS
    healthy_after = wait_healthy(cluster, server, clock)
    print(f"prefect server healthy after {healthy_after:.1f}s")

    cluster.run(["prefect", "work-pool", "create", POOL, "--type", "process"])
    # The worker boots while the deployments are registered.
    worker = cluster.start("worker", ["prefect", "worker", "start", "--pool", POOL])
    deployed = json.loads(cluster.run([*flows_command(), "deploy", "--pool", POOL, "--json"]))
    assert "intake/intake-hooks" in {item["name"] for item in deployed}, deployed
    print(f"pool, worker and {len(deployed)} deployments ready after {time.monotonic() - clock:.1f}s")

    with httpx.Client(base_url=cluster.api_url, timeout=10) as client:
        deployment = client.get("/deployments/name/intake/intake-hooks").raise_for_status().json()
        assert deployment["entrypoint"] == "flows.intake.intake_flow"
        assert deployment["parameters"] == {"sources": []}
        assert deployment["work_pool_name"] == POOL
        assert [s["schedule"].get("interval") for s in deployment["schedules"]] == [60.0]
        run = (
            client.post(f"/deployments/{deployment['id']}/create_flow_run", json={}).raise_for_status().json()
        )
        started = time.monotonic()
        finished = wait_for_run(cluster, client, run["id"])
        print(f"intake-hooks run finished in {time.monotonic() - started:.1f}s: {finished['state']['type']}")
    assert worker.poll() is None, cluster.logs()
    assert finished["state"]["type"] == "COMPLETED", f"{finished['state']}\n{cluster.logs()}"

    engine = make_engine(cluster.app_db_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM enquiries")).scalar() == RECORDS
            assert (
                connection.execute(text("SELECT count(*) FROM raw_records WHERE status = 'pending'")).scalar()
                == 0
            )
            # The run also drained the outbox into the local CRM: one lead per enquiry.
            assert connection.execute(text("SELECT count(*) FROM crm_leads")).scalar() == RECORDS
    finally:
        engine.dispose()


@pytest.mark.slow
def test_flows_serve_runs_intake_on_its_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    """One machine: `triage flows serve` starts a local Prefect server (SQLite) and the schedules run.

    Nothing triggers a run by hand here: the records are processed because the server's scheduler
    created the `intake-hooks` runs and the serve process ran them.
    """
    import sqlite3

    home = tmp_path / "home"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "TRIAGE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TRIAGE_HOME=str(home),
        TRIAGE_SCHEDULE__INTAKE_MINUTES="0.25",
        PREFECT_UI_ENABLED="false",
    )
    forms = tmp_path / "forms.jsonl"
    forms.write_text("".join(json.dumps(post) + "\n" for post in form_posts(RECORDS)))
    running = Cluster(tmp_path, f"http://127.0.0.1:{port}/api", "", env)
    try:
        running.run(["triage", "import", str(forms), "--channel", "form", "--json"])
        serve = running.start("serve", ["triage", "flows", "serve", "--server-port", str(port)])
        started = time.monotonic()
        enquiries = 0
        while time.monotonic() - started < RUN_SECONDS + SERVER_START_SECONDS and enquiries < RECORDS:
            assert serve.poll() is None, (
                f"{tail(tmp_path / 'serve.log')}\n{tail(home / 'prefect' / 'server.log')}"
            )
            time.sleep(3)
            with sqlite3.connect(home / "triage.db") as connection:
                enquiries = connection.execute("SELECT count(*) FROM enquiries").fetchone()[0]
        print(f"flows serve: {enquiries} enquiries after {time.monotonic() - started:.1f}s")
        assert enquiries == RECORDS, (
            f"{tail(tmp_path / 'serve.log')}\n{tail(home / 'prefect' / 'server.log')}"
        )
        # The run that wrote the enquiries goes on to drain the CRM outbox, so it may still be running
        # when the rows appear (CI's faketime pass caught it there): wait for it to complete.
        with httpx.Client(base_url=running.api_url, timeout=10) as client:
            deployment = client.get("/deployments/name/intake/intake-hooks").raise_for_status().json()
            completed: list[dict[str, Any]] = []
            waited = time.monotonic()
            while not completed and time.monotonic() - waited < RUN_SECONDS:
                runs = (
                    client.post(
                        "/flow_runs/filter",
                        json={"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}},
                    )
                    .raise_for_status()
                    .json()
                )
                completed = [
                    run for run in runs if run["state_type"] == "COMPLETED" and run["auto_scheduled"]
                ]
                if not completed:
                    assert not any(run["state_type"] in {"FAILED", "CRASHED"} for run in runs), runs
                    time.sleep(2)
        assert completed, runs
        # SIGTERM (what systemd sends) stops the serve loop and the local server with it.
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{running.api_url}/health", timeout=2)
    finally:
        running.stop()
