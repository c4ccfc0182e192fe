"""Web-hook latency under load: signed tool deliveries at a fixed rate, while the pipeline runs.

    python bench/bench_hooks.py                          # temp SQLite, 200 req/s for 20 s
    python bench/bench_hooks.py --rate 200 --seconds 30 --json
    python bench/bench_hooks.py --database-url postgresql://postgres@127.0.0.1:5432/bench_hooks

The target: a verified web hook is stored and answered in p95 < 50 ms at 200 requests/s on this
machine, with the pipeline running. A real uvicorn process serves the app; the deliveries are the
fixtures of tests/fixtures/webhooks/ (Typeform, Webflow, HubSpot, Intercom, Chatwoot in turn), each
with its own dedupe key and signed as that tool signs. Meanwhile `triage run --direct` runs in a loop
in its own process, so the hooks' inserts meet the batch's writes on the same database.

The load is open-loop: request i is due at start + i/rate whatever happened before, and its latency
is measured from that due time, so a stalled server shows as latency rather than as fewer requests
(no coordinated omission). The service time (from the moment the request was actually sent) is
reported beside it. A PostgreSQL database given with --database-url is emptied first: use a scratch
database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_review import free_port, server_environment, start_server  # noqa: E402  (bench/ is on sys.path)
from process_tree import PeakTreeMemory, cpu_seconds  # noqa: E402

from store.db import make_engine, upgrade_schema  # noqa: E402
from store.tables import Base, RawRecord  # noqa: E402
from tests.support.webhook_signing import tool_headers  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
SOURCES = {
    "typeform": ("website-demo", "typeform_form_response.json"),
    "webflow": ("contact-us", "webflow_form_submission.json"),
    "hubspot": ("crm", "hubspot_contact_creation.json"),
    "intercom": ("messenger", "intercom_conversation_user_created.json"),
    "chatwoot": ("support", "chatwoot_message_created.json"),
}
SECRETS = {f"{tool}:{source}": f"bench-{tool}-secret" for tool, (source, _) in SOURCES.items()}


def delivery(tool: str, number: int) -> bytes:
    """The tool's fixture with its dedupe key (and the enquiry's identity) made unique by `number`."""
    data: Any = json.loads((FIXTURES / SOURCES[tool][1]).read_text())
    if tool == "typeform":
        data["form_response"]["token"] = f"bench-{number}"
    elif tool == "webflow":
        data["payload"]["id"] = f"bench-{number}"
    elif tool == "hubspot":
        for offset, event in enumerate(data):
            event["eventId"] = number * 10 + offset
            event["objectId"] = number * 10 + offset
    elif tool == "intercom":
        data["id"] = f"notif_bench_{number}"
        data["data"]["item"]["id"] = f"bench-{number}"
    else:
        data["id"] = number
        data["conversation"]["id"] = number
    return json.dumps(data).encode()


def prepare(url: str) -> None:
    engine = make_engine(url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    engine.dispose()


def environment(url: str, home: Path, port: int) -> dict[str, str]:
    return {
        **server_environment(url, home),
        "TRIAGE_HOOKS__SECRETS": json.dumps(SECRETS),
        "TRIAGE_HOOKS__PUBLIC_URL": f"http://127.0.0.1:{port}",
        # HubSpot's API cannot exist here: its contacts wait, retried with backoff, as in an outage.
        "TRIAGE_HUBSPOT__ACCESS_TOKEN": "bench-token",
        "TRIAGE_HUBSPOT__BASE_URL": f"http://127.0.0.1:{free_port()}",
    }


def start_pipeline(env: dict[str, str], *, fresh_processes: bool, nice: int) -> subprocess.Popen[bytes]:
    """The pipeline, a pass every 0.5 s: in one long-lived process, as `triage flows serve` runs it,
    or (`fresh_processes`) as `triage run --direct` over and over, each pass a new interpreter."""
    if fresh_processes:
        triage = Path(sys.executable).parent / "triage"
        script = f"while true; do '{triage}' run --direct --json >/dev/null 2>&1; sleep 0.5; done"
        command = ["bash", "-c", script]
    else:
        command = [sys.executable, str(ROOT / "bench" / "pipeline_loop.py"), "--interval", "0.5"]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    return subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Connection:
    """One keep-alive HTTP/1.1 connection written by hand.

    A client library's shared pool was the bottleneck here: with requests queued, httpcore matched
    every waiting request against every connection on each change (py-spy showed the generator busy
    there while the server idled), so the bench measured itself. A fixed set of connections, each
    taking the next due request from one queue, costs the same per request however many wait.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def signed_request(host: str, port: int, tool: str, body: bytes) -> bytes:
    """The request as bytes, signed now (the timestamped tools allow five minutes)."""
    source = SOURCES[tool][0]
    path = f"/hooks/{tool}/{source}"
    headers = {
        "Host": f"{host}:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **tool_headers(
            tool,
            url=f"http://{host}:{port}{path}",
            body=body,
            secret=SECRETS[f"{tool}:{source}"],
            at=datetime.now(UTC),
        ),
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def load(host: str, port: int, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    total = int(rate * seconds)
    tools = list(SOURCES)
    bodies = [(tools[n % len(tools)], delivery(tools[n % len(tools)], n)) for n in range(total)]
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    due_requests: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def sender() -> None:
        connection = Connection(host, port)
        while (item := await due_requests.get()) is not None:
            due, request = item
            sent = time.perf_counter()
            try:
                status = await connection.exchange(request)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
                errors.append(f"{error.__class__.__name__}: {error}")
                connection.close()
                continue
            done = time.perf_counter()
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(done - due)
            service.append(done - sent)
        connection.close()

    senders = [asyncio.create_task(sender()) for _ in range(connections)]
    start = time.perf_counter() + 0.2
    for number, (tool, body) in enumerate(bodies):
        due = start + number / rate
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        # Open-loop: the request is due now whether or not a connection is free; the wait for one
        # counts in its latency (measured from `due`), as a tool's retry clock would see it.
        due_requests.put_nowait((due, signed_request(host, port, tool, body)))
    for _ in senders:
        due_requests.put_nowait(None)
    await asyncio.gather(*senders)
    elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "connections": connections,
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "latency_ms": summary(latencies),
        "service_ms": summary(service),
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1] * 1000, 1),
        "mean": round(statistics.fmean(ordered) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send (default 20)")
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="keep-alive connections sending the due requests (default 32)",
    )
    parser.add_argument(
        "--fresh-processes",
        action="store_true",
        help="run the pipeline as `triage run --direct` in a loop, a new process per pass (cron-style), "
        "instead of one long-lived process (`triage flows serve`-style)",
    )
    parser.add_argument(
        "--pipeline-nice",
        type=int,
        default=0,
        help="run the pipeline under `nice -n N` (the web process keeps its priority; default 0)",
    )
    parser.add_argument(
        "--web-workers", type=int, default=1, help="uvicorn processes serving the hooks (default 1)"
    )
    parser.add_argument("--no-pipeline", action="store_true", help="measure the hooks alone")
    parser.add_argument(
        "--batch-size", type=int, help="the pipeline's TRIAGE_BATCH_SIZE (default: the product's, 500)"
    )
    parser.add_argument(
        "--parse-workers",
        type=int,
        help="the pipeline's TRIAGE_PARSE_WORKERS (default: the product's, min(cores, 4))",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as scratch:
        home = Path(scratch)
        url = args.database_url or f"sqlite:///{home / 'bench.db'}"
        prepare(url)
        port = free_port()
        env = environment(url, home, port)
        if args.batch_size:
            env["TRIAGE_BATCH_SIZE"] = str(args.batch_size)
        if args.parse_workers:
            env["TRIAGE_PARSE_WORKERS"] = str(args.parse_workers)
        server = start_server(url, home, port, env, workers=args.web_workers)
        pipeline = (
            None
            if args.no_pipeline
            else start_pipeline(env, fresh_processes=args.fresh_processes, nice=args.pipeline_nice)
        )
        try:
            server_cpu, own_cpu = cpu_seconds(server.pid), time.process_time()
            with PeakTreeMemory(server.pid) as memory:
                result = asyncio.run(load("127.0.0.1", port, args.rate, args.seconds, args.connections))
            server_cpu = cpu_seconds(server.pid) - server_cpu
            own_cpu = time.process_time() - own_cpu
        finally:
            if pipeline is not None:
                os.killpg(pipeline.pid, 15)
                pipeline.wait()
            server.terminate()
            server.wait()
        engine = make_engine(url)
        with engine.connect() as connection:
            stored = connection.scalar(sa.select(sa.func.count()).select_from(RawRecord))
            enquiries = connection.execute(sa.text("SELECT count(*) FROM enquiries")).scalar()
        engine.dispose()
    result.update(
        {
            "backend": url.split(":", 1)[0],
            "pipeline_running": pipeline is not None,
            "pipeline_processes": "fresh per pass" if args.fresh_processes else "one long-lived",
            "pipeline_nice": args.pipeline_nice,
            "web_workers": args.web_workers,
            "pipeline_batch_size": args.batch_size or 500,
            "pipeline_parse_workers": args.parse_workers or "default",
            "raw_records_stored": stored,
            "enquiries_made_meanwhile": enquiries,
            "server_peak_mb": round(memory.peak_mb, 1),
            # Who was busy: the server's CPU per request, and the generator's own (on 2 cores, a
            # generator near a core's worth would be measuring itself).
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(result["requests"], 1), 2),
            "load_generator_cpu_s": round(own_cpu, 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "target": "p95 < 50 ms at 200 req/s",
        }
    )
    if args.json:
        print(json.dumps(result))
        return
    latency = result["latency_ms"]
    print(
        f"{result['requests']} deliveries at {args.rate:g}/s for {args.seconds:g} s "
        f"({result['backend']}, pipeline {'running' if pipeline is not None else 'off'}): "
        f"achieved {result['achieved_rate']}/s, statuses {result['statuses']}, errors {result['errors']}"
    )
    print(
        f"latency from due time: p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms, "
        f"p99 {latency.get('p99')} ms, max {latency.get('max')} ms; service p95 "
        f"{result['service_ms'].get('p95')} ms"
    )
    print(
        f"stored {stored} raw records; the pipeline made {enquiries} enquiries meanwhile; "
        f"server peak {result['server_peak_mb']} MB"
    )
    print(
        f"server CPU {result['server_cpu_ms_per_request']} ms per request; load generator CPU "
        f"{result['load_generator_cpu_s']} s; load average {result['load_average_1min']}"
    )


if __name__ == "__main__":
    main()
