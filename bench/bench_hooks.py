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

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_review import free_port, server_environment, start_server  # noqa: E402  (bench/ is on sys.path)
from process_tree import PeakTreeMemory  # noqa: E402

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


def start_pipeline_loop(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`triage run --direct` over and over, as the schedule would with a short interval."""
    triage = Path(sys.executable).parent / "triage"
    script = f"while true; do '{triage}' run --direct --json >/dev/null 2>&1; sleep 0.5; done"
    return subprocess.Popen(["bash", "-c", script], env=env, cwd=ROOT, start_new_session=True)


async def load(base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    total = int(rate * seconds)
    bodies = [(tool, delivery(tool, n)) for n in range(total) for tool in (list(SOURCES)[n % 5],)]
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def send(due: float, tool: str, body: bytes) -> None:
            path = f"/hooks/{tool}/{SOURCES[tool][0]}"
            headers = {
                "content-type": "application/json",
                **tool_headers(
                    tool,
                    url=base_url + path,
                    body=body,
                    secret=SECRETS[f"{tool}:{SOURCES[tool][0]}"],
                    at=datetime.now(UTC),
                ),
            }
            sent = time.perf_counter()
            try:
                response = await client.post(path, content=body, headers=headers)
            except httpx.HTTPError as error:
                errors.append(f"{error.__class__.__name__}: {error}")
                return
            done = time.perf_counter()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            latencies.append(done - due)
            service.append(done - sent)

        tasks = []
        start = time.perf_counter() + 0.2
        for number, (tool, body) in enumerate(bodies):
            due = start + number / rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(send(due, tool, body)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "requests": total,
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
    parser.add_argument("--no-pipeline", action="store_true", help="measure the hooks alone")
    parser.add_argument(
        "--batch-size", type=int, help="the pipeline's TRIAGE_BATCH_SIZE (default: the product's, 500)"
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
        server = start_server(url, home, port, env)
        pipeline = None if args.no_pipeline else start_pipeline_loop(env)
        try:
            with PeakTreeMemory(server.pid) as memory:
                result = asyncio.run(load(f"http://127.0.0.1:{port}", args.rate, args.seconds))
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
            "pipeline_batch_size": args.batch_size or 500,
            "raw_records_stored": stored,
            "enquiries_made_meanwhile": enquiries,
            "server_peak_mb": round(memory.peak_mb, 1),
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


if __name__ == "__main__":
    main()
