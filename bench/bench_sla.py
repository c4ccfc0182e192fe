"""Benchmark: one SLA watch pass over 100,000 open timers, on SQLite and on PostgreSQL.

Two situations per backend, each on a fresh database:
- steady: every timer is open, 1% of them reach a threshold in this pass (a normal minute);
- catch_up: the watch was down for a day and every timer crossed its breach and both escalation tiers
  (the worst case: 100,000 breaches and 200,000 escalations recorded, then one digest per role).

    python bench/bench_sla.py [--timers 100000] [--backend sqlite|postgresql|both] [--json]

PostgreSQL: a dedicated temporary database on TRIAGE_BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432/test), dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import sqlalchemy as sa

from connectors.notify import Notification
from sla.policies import load_policies
from sla.watch import watch_pass
from store.db import make_engine, make_session_factory, upgrade_schema
from store.tables import Enquiry, RawRecord, SlaTimer

PG_ADMIN_URL = os.environ.get("TRIAGE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday morning


class CountingNotifier:
    """Counts messages; the benchmark measures the pass, not a mail server."""

    def __init__(self) -> None:
        self.messages = 0
        self.lines = 0

    def roles(self) -> frozenset[str]:
        return frozenset({"ops_lead", "manager", "slack"})

    def send(self, notification: Notification) -> None:
        self.messages += 1
        self.lines += notification.text.count("\n")


def seed(url: str, timers: int, *, scenario: str) -> None:
    """Insert `timers` enquiries with one running first-response timer each (standard policy)."""
    engine = make_engine(url)
    upgrade_schema(engine)
    received = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    due_friday = datetime(2026, 2, 27, 17, 0, tzinfo=UTC)
    with engine.begin() as connection:
        for start in range(0, timers, 10_000):
            ids = range(start, min(start + 10_000, timers))
            connection.execute(
                sa.insert(RawRecord),
                [
                    {
                        "id": n + 1,
                        "source": "bench",
                        "channel": "email",
                        "external_key": str(n),
                        "payload": b"{}",
                        "received_at": received,
                        "imported_at": received,
                        "status": "enquiry",
                        "enquiry_id": f"e{n}",
                    }
                    for n in ids
                ],
            )
            connection.execute(
                sa.insert(Enquiry),
                [
                    {
                        "id": f"e{n}",
                        "raw_id": n + 1,
                        "channel": "email",
                        "source": "bench",
                        "content_hash": str(n),
                        "received_at": received,
                        "subject": f"Enquiry {n}",
                        "subject_norm": f"enquiry {n}",
                        "body": "",
                        "attributes": {},
                        "attachments": [],
                        "enrichment": {"segment": "smb"},
                        "intent": "support",
                        "queue": "support",
                        "priority": "normal",
                        "lane": "hybrid",
                        "confidence": 0.9,
                        "explanation": [],
                        "model_version": "bench",
                        "status": "open",
                        "created_at": received,
                    }
                    for n in ids
                ],
            )
            rows = []
            for n in ids:
                if scenario == "catch_up":
                    # Due last Friday afternoon (every timer its own second, so no two share a threshold):
                    # the 100% and 200% (Monday afternoon) tiers have both passed.
                    this_due = due_friday - timedelta(seconds=n % 20_000)
                    status, next_check = "running", this_due
                elif n % 100 == 0:  # 1% reach their due time (and the 100% tier) in this pass
                    status, this_due, next_check = (
                        "running",
                        NOW - timedelta(seconds=30),
                        NOW - timedelta(seconds=30),
                    )
                else:  # the rest are due later today or this week
                    this_due = NOW + timedelta(minutes=1 + n % 5_000)
                    status, next_check = "running", this_due
                rows.append(
                    {
                        "enquiry_id": f"e{n}",
                        "kind": "first_response",
                        "policy": "standard",
                        "target_minutes": 480,
                        "started_at": received,
                        "due_at": this_due,
                        "status": status,
                        "next_check_at": next_check,
                    }
                )
            connection.execute(sa.insert(SlaTimer), rows)
    engine.dispose()


def run_pass(url: str) -> dict[str, Any]:
    """Time watch passes at one instant until there is nothing left to do (one pass in steady state)."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    policies = load_policies()
    notifier = CountingNotifier()
    passes: list[dict[str, Any]] = []
    while True:
        started = time.perf_counter()
        summary = watch_pass(factory, policies, notifier, now=NOW)
        seconds = time.perf_counter() - started
        if summary.checked == 0 and summary.breached == 0 and passes:
            break
        passes.append({"seconds": round(seconds, 3), **summary.as_dict()})
    engine.dispose()
    return {
        "seconds": passes[0]["seconds"],
        "passes": len(passes),
        "max_pass_seconds": max(p["seconds"] for p in passes),
        "breached": sum(p["breached"] for p in passes),
        "checked": sum(p["checked"] for p in passes),
        "escalations_fired": sum(p["escalations_fired"] for p in passes),
        "messages_sent": sum(p["messages_sent"] for p in passes),
        "events_delivered": sum(p["events_delivered"] for p in passes),
        "idle_pass_seconds": round(seconds, 3),
    }


def bench_sqlite(timers: int, scenario: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        seed(url, timers, scenario=scenario)
        return run_pass(url)


def bench_postgresql(timers: int, scenario: str) -> dict[str, Any]:
    name = f"triage_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        seed(url, timers, scenario=scenario)
        return run_pass(url)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--scenario", choices=["steady", "catch_up", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    scenarios = ["steady", "catch_up"] if args.scenario == "both" else [args.scenario]
    results: list[dict[str, Any]] = []
    for backend in backends:
        for scenario in scenarios:
            runner = bench_sqlite if backend == "sqlite" else bench_postgresql
            result = {
                "backend": backend,
                "scenario": scenario,
                "open_timers": args.timers,
                **runner(args.timers, scenario),
            }
            results.append(result)
            if not args.json:
                print(
                    f"{backend:10} {scenario:9} {args.timers:>7} open timers: "
                    f"first pass {result['seconds']:.2f} s, "
                    f"{result['passes']} pass(es), slowest {result['max_pass_seconds']:.2f} s "
                    f"(breached {result['breached']}, fired {result['escalations_fired']}, "
                    f"delivered {result['events_delivered']} in {result['messages_sent']} messages); "
                    f"idle pass {result['idle_pass_seconds']:.2f} s"
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"results": results, "peak_rss_mb": round(peak_mb, 1)}, indent=2))
    else:
        print(f"peak memory (RSS): {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
