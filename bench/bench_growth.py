"""Costs as the store grows: ingest rate, dedupe/threading, `triage status`, `/metrics`, the review queue.

    python bench/bench_growth.py [--sizes 10000,50000,100000] [--batch 10000] [--pg URL] [--json]

The store is grown with the product's own path: each batch of `--batch` records is a new mbox (mails
with unique senders, about 8 % replies to earlier mails and 4 % exact re-deliveries) that
`triage import` stores and `triage run --direct` processes with the starter model, each as a real
command in its own process. At each size it measures:
- ingest: records per second of the last batch (import + run wall time), and the run's seconds spent
  in dedupe and threading per 10,000 records;
- `triage status --json`: wall time of the command (median of 3; start-up included), and in-process
  (the same command through typer's runner: its queries and the runtime, no interpreter start-up);
- `GET /metrics` in-process (TestClient), with the scrape cache off: the first scrape, median and p95
  of 20; the p95 with the default 5 s cache on (rapid scrapes); and the p95 of scrapes that miss the
  5 s cache while the slow collectors (confidence, drift) are within their one-minute cache;
- the review queue filtered by intent (`review.service.list_queue`'s query, 50 pages): p95;
- the database's size and what the retention policy would free;
- the peak memory of `triage run`'s process tree.
With `--pg URL` the same runs on a fresh PostgreSQL database made at that server.
"""

from __future__ import annotations

import argparse
import csv
import json
import mailbox
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from process_tree import PeakTreeMemory  # bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRIAGE = [sys.executable, "-m", "app.cli"]
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
PASSES = ("outbox_payloads", "raw_bodies", "enquiry_bodies")


def write_batch(
    path: Path, offset: int, n: int, rng: random.Random, texts: list[str], domains: list[str]
) -> None:
    """`n` mails numbered from `offset`: most new, some replies to earlier mails, some re-deliveries."""
    box = mailbox.mbox(path)
    box.lock()
    for i in range(offset, offset + n):
        roll = rng.random()
        message = EmailMessage()
        if offset and roll < 0.04:  # an exact copy of an earlier mail (a second mailbox, a re-send)
            j = rng.randrange(0, offset)
            build(message, j, rng=random.Random(j), texts=texts, domains=domains)
        elif offset and roll < 0.12:  # the customer replies in an earlier thread
            j = rng.randrange(0, offset)
            build(message, j, rng=random.Random(j), texts=texts, domains=domains)
            del message["Message-ID"], message["Subject"]
            message["Message-ID"] = f"<reply-{i}@bench.example>"
            message["Subject"] = "Re: " + texts[j % len(texts)].split("\n")[0][:60]
            message["In-Reply-To"] = message["References"] = f"<bench-{j}@bench.example>"
            message.set_payload(f"Any news on this? (follow-up {i})")
        else:
            build(message, i, rng=random.Random(i), texts=texts, domains=domains)
        box.add(message)
    box.flush()
    box.unlock()
    box.close()


def build(message: EmailMessage, i: int, *, rng: random.Random, texts: list[str], domains: list[str]) -> None:
    text = texts[i % len(texts)]
    message["From"] = f"Person {i} <p{i}@{rng.choice(domains)}>"
    message["To"] = "hello@acme-triage.example"
    message["Subject"] = text.split("\n")[0][:60]
    message["Date"] = format_datetime(START + timedelta(minutes=i))
    message["Message-ID"] = f"<bench-{i}@bench.example>"
    message.set_content(f"Hello,\n\n{text}\n\nBest regards,\nPerson {i}\nTicket ref {i:07d}\n")


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with PeakTreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr.decode()[-3000:]}")
    return time.perf_counter() - started, memory.peak_mb, stdout.decode()


def ingest_batch(path: Path, n: int, env: dict[str, str]) -> dict[str, Any]:
    """`triage import` then `triage run --direct` of the `n` mails in `path` (removed after): the
    batch's ingest rate, its dedupe/threading seconds per 10k and the run's peak memory."""
    import_s, _, _ = run([*TRIAGE, "import", str(path), "--channel", "email", "--json"], env)
    run_s, peak_mb, out = run([*TRIAGE, "run", "--direct", "--json"], env)
    path.unlink()
    summary = json.loads(out)
    return {
        "ingest_per_s": round(n / (import_s + run_s)),
        "dedupe_thread_s_per_10k": round(summary["stage_seconds"].get("dedupe_thread", 0.0) * 10_000 / n, 3),
        "run_peak_mb": round(peak_mb),
    }


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(env: dict[str, str]) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from app.web import create_app
    from config.settings import Settings
    from pipeline.retention import database_size
    from pipeline.runtime import Runtime
    from store import review_repo

    status_times = [run([*TRIAGE, "status", "--json"], env)[0] for _ in range(3)]
    os.environ.update(env)
    from typer.testing import CliRunner

    from app.cli import app as cli

    inproc = []
    for _ in range(3):
        started = time.perf_counter()
        assert CliRunner().invoke(cli, ["status", "--json"]).exit_code == 0
        inproc.append(time.perf_counter() - started)
    settings = Settings()
    app = create_app(settings)
    figures: dict[str, Any] = {
        "status_s": round(statistics.median(status_times), 3),
        "status_in_process_ms": round(statistics.median(inproc) * 1000, 1),
    }
    with TestClient(app) as client:
        app.state.metrics_cache_seconds = 0.0
        started = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        figures["metrics_first_ms"] = round((time.perf_counter() - started) * 1000, 1)
        scrapes = []
        for _ in range(20):
            started = time.perf_counter()
            client.get("/metrics")
            scrapes.append((time.perf_counter() - started) * 1000)
        figures["metrics_p50_ms"] = round(statistics.median(scrapes), 1)
        figures["metrics_p95_ms"] = round(p95(scrapes), 1)
        app.state.metrics_cache_seconds = 5.0
        cached = []
        for _ in range(20):
            started = time.perf_counter()
            client.get("/metrics")
            cached.append((time.perf_counter() - started) * 1000)
        figures["metrics_cached_p95_ms"] = round(p95(cached), 1)
        # Scrapes more than 5 s apart (the body cache missed) within a minute: the counts are computed,
        # the slow distributions (confidence, drift) come from their one-minute cache.
        steady = []
        for _ in range(20):
            app.state.metrics_cache = None
            started = time.perf_counter()
            client.get("/metrics")
            steady.append((time.perf_counter() - started) * 1000)
        figures["metrics_counts_only_p95_ms"] = round(p95(steady[1:]), 1)
    factory = app.state.session_factory
    with factory() as session:
        pages = []
        for page in range(50):
            started = time.perf_counter()
            review_repo.queue_rows(session, intent="pricing", limit=50, offset=(page % 5) * 50)
            pages.append((time.perf_counter() - started) * 1000)
    figures["queue_intent_p95_ms"] = round(p95(pages), 1)
    app.state.engine.dispose()
    runtime = Runtime(settings)
    size = database_size(runtime)
    figures["db_mb"] = round(size["total_bytes"] / 1_048_576, 1)
    figures["retention_would_free_mb"] = round(
        sum(item["bytes"] for item in size["policy_would_free"].values()) / 1_048_576, 1
    )
    runtime.engine.dispose()
    return figures


def retention_check(env: dict[str, str], days_ahead: int) -> dict[str, Any]:
    """Run the default retention policy as if `days_ahead` days had passed, then reclaim the space."""
    import sqlalchemy as sa

    from config.settings import Settings
    from pipeline.retention import apply_retention, database_size
    from pipeline.runtime import Runtime
    from store.common import utcnow

    os.environ.update(env)
    later = utcnow() + timedelta(days=days_ahead)
    runtime = Runtime(Settings(), clock=lambda: later)
    before = database_size(runtime)["total_bytes"]
    started = time.perf_counter()
    summary = apply_retention(runtime)
    prune_s = time.perf_counter() - started
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("VACUUM"))
    after = database_size(runtime)["total_bytes"]
    runtime.engine.dispose()
    return {
        "days_ahead": days_ahead,
        "db_mb_before": round(before / 1_048_576, 1),
        "db_mb_after_prune_and_vacuum": round(after / 1_048_576, 1),
        "prune_s": round(prune_s, 1),
        "pruned_rows": {name: summary[name]["rows"] for name in PASSES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--pg", help="a PostgreSQL server URL (postgresql://user@host:port/db)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--retention-days",
        type=int,
        default=800,
        help="Finally prune with the default policy as if this many days had passed (0: skip).",
    )
    options = parser.parse_args()
    sizes = [int(part) for part in options.sizes.split(",")]

    with (ROOT / "models" / "starter_data" / "train.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with (ROOT / "connectors" / "data" / "firmographics.csv").open(encoding="utf-8") as handle:
        domains = [row["domain"] for row in csv.DictReader(handle)] + ["gmail.com", "outlook.com"]

    work = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    env = {**os.environ, "TRIAGE_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("TRIAGE_DATABASE_URL", None)
    database = None
    if options.pg:
        import psycopg

        database = f"bench_growth_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(options.pg, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        env["TRIAGE_DATABASE_URL"] = options.pg.rsplit("/", 1)[0] + f"/{database}"

    # The starter model, so lanes and intents look like production's.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipeline.runtime import Runtime; from pipeline import jobs; "
            "jobs.ensure_starter_model(Runtime())",
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    rng = random.Random(11)
    rows: list[dict[str, Any]] = []
    stored = 0
    try:
        for target in sizes:
            last: dict[str, Any] = {}
            while stored < target:
                n = min(options.batch, target - stored)
                path = work / f"batch-{stored}.mbox"
                write_batch(path, stored, n, rng, texts, domains)
                last = {"records": n, **ingest_batch(path, n, env)}
                stored += n
            row = {"size": stored, **last, **measure(env)}
            rows.append(row)
            if not options.json:
                print(json.dumps(row), flush=True)
        retention = retention_check(env, options.retention_days) if options.retention_days else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if database and options.pg:
            import psycopg

            with psycopg.connect(options.pg, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    first = rows[0]
    result = {
        "backend": "postgresql" if options.pg else "sqlite",
        "rows": rows,
        "ingest_rate_vs_first": round(rows[-1]["ingest_per_s"] / first["ingest_per_s"], 2),
    }
    if retention is not None:
        result["retention"] = retention
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
