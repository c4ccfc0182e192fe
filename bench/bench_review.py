"""Queue page speed: N requests for /review with 10,000 open items, over HTTP to a real uvicorn process.

    python bench/bench_review.py                     # temp SQLite, 10,000 items, 200 requests
    python bench/bench_review.py --items 10000 --requests 300 --json
    python bench/bench_review.py --database-url postgresql://postgres@127.0.0.1:5432/bench_review

The target is p95 under 300 ms. Requests cycle through the plain queue, the filters (queue, intent,
lane) and deeper pages, logged in as an SDR; the first 10 requests warm up and are not counted.
Planner statistics are gathered after seeding (ANALYZE), as a running system has them.
A PostgreSQL database given with --database-url is emptied first: use a scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from review import service  # noqa: E402
from review.auth import create_user  # noqa: E402
from store.common import utcnow  # noqa: E402
from store.db import make_engine, make_session_factory, upgrade_schema  # noqa: E402
from store.tables import Base, Enquiry, RawRecord, ReviewItem, SlaTimer  # noqa: E402

PASSWORD = "bench-password-123"
PATHS = (
    "/review",
    "/review?queue=sales",
    "/review?intent=support",
    "/review?lane=hybrid",
    "/review?page=20",
    "/review?queue=finance&intent=billing",
)


def seed(url: str, items: int) -> None:
    """A migrated, emptied database with `items` open review items and one SDR."""
    engine = make_engine(url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    now = utcnow()
    rng = random.Random(7)
    raws, enquiries, review_items, timers = [], [], [], []
    for number in range(items):
        enquiry_id = uuid.uuid4().hex
        intent = rng.choice(service.INTENTS)
        queue = rng.choice(service.QUEUES)
        due = now + timedelta(minutes=rng.randint(-600, 3000))
        raws.append(
            {
                "id": number + 1,
                "source": "bench",
                "channel": "email",
                "external_key": enquiry_id,
                "payload": b"x",
                "received_at": now,
                "imported_at": now,
                "status": "enquiry",
                "enquiry_id": enquiry_id,
            }
        )
        enquiries.append(
            {
                "id": enquiry_id,
                "raw_id": number + 1,
                "channel": "email",
                "source": "bench",
                "message_key": None,
                "thread_key": None,
                "content_hash": enquiry_id,
                "received_at": now,
                "sender_email": f"p{number}@x.example",
                "sender_name": f"Person {number}",
                "phone": None,
                "subject": f"Enquiry number {number} about {intent}",
                "subject_norm": f"enquiry number {number}",
                "body": "Hello " * 40,
                "attributes": {},
                "attachments": [],
                "enrichment": {},
                "intent": intent,
                "queue": queue,
                "priority": rng.choice(service.PRIORITIES),
                "lane": rng.choice(service.LANES),
                "confidence": rng.random(),
                "explanation": [],
                "model_version": "bench",
                "status": "review",
                "created_at": now,
            }
        )
        review_items.append(
            {
                "enquiry_id": enquiry_id,
                "lane": enquiries[-1]["lane"],
                "queue": queue,
                "status": "open",
                "due_at": due,
                "created_at": now,
            }
        )
        timers.append(
            {
                "enquiry_id": enquiry_id,
                "kind": "first_response",
                "policy": "bench",
                "target_minutes": 60,
                "started_at": now,
                "due_at": due,
                "status": "running",
                "next_check_at": due,
            }
        )
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        for table, rows in (
            (RawRecord, raws),
            (Enquiry, enquiries),
            (ReviewItem, review_items),
            (SlaTimer, timers),
        ):
            for start in range(0, len(rows), 2000):
                session.execute(sa.insert(table), rows[start : start + 2000])
        create_user(session, "bench", role="sdr", password=PASSWORD)
    # A running system has planner statistics (autovacuum on PostgreSQL, the app's start-up ANALYZE on
    # SQLite); a bulk load just now has none, so gather them as steady state would.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(url: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TRIAGE_DATABASE_URL": url,
        "TRIAGE_HOME": str(home),
        "TRIAGE_WEB__SECRET_KEY": "bench-secret-key-0123456789",
        "TRIAGE_WEB__SECURE_COOKIES": "false",
        "PYTHONPATH": str(ROOT),
    }


def start_server(
    url: str, home: Path, port: int, env: dict[str, str] | None = None, *, workers: int = 1
) -> subprocess.Popen[bytes]:
    """uvicorn serving the app on 127.0.0.1:`port`, once /healthz answers (env: the whole environment;
    `workers`: uvicorn processes, `uvicorn --workers`)."""
    env = env or server_environment(url, home)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.web:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("uvicorn did not answer /healthz within 60 s")


def measure(base_url: str, requests: int) -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        login_page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', login_page)
        assert token, "the login page has no CSRF token"
        response = client.post(
            "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token[1]}
        )
        assert response.status_code == 303, f"login failed: {response.status_code}"
        timings = []
        for number in range(requests + 10):
            path = PATHS[number % len(PATHS)]
            started = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - started
            assert response.status_code == 200 and "table" in response.text, path
            if number >= 10:
                timings.append(elapsed * 1000)
    timings.sort()
    return {
        "requests": len(timings),
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
        "max_ms": round(timings[-1], 1),
        "mean_ms": round(statistics.fmean(timings), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--database-url", default=None, help="A scratch database (emptied!); temp SQLite if unset."
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-review-") as scratch:
        home = Path(scratch)
        url = arguments.database_url or f"sqlite:///{home / 'triage.db'}"
        started = time.perf_counter()
        seed(url, arguments.items)
        seed_seconds = time.perf_counter() - started
        port = free_port()
        server = start_server(url, home, port)
        try:
            result = measure(f"http://127.0.0.1:{port}", arguments.requests)
        finally:
            server.terminate()
            server.wait(timeout=10)
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    summary = {
        "backend": backend,
        "open_items": arguments.items,
        "seed_seconds": round(seed_seconds, 1),
        **result,
        "target_p95_ms": 300,
        "ok": result["p95_ms"] < 300,
    }
    if arguments.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>14}: {value}")


if __name__ == "__main__":
    main()
