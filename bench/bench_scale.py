"""Costs at 10k, 100k and 1M stored enquiries, with the growth factor per 10x (issue 15).

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--database-url postgresql://...] [--json]
                                [--product-up-to 100000] [--batch 10000]

How the store is made:
- up to `--product-up-to` enquiries, the product's own path: each batch is a new mbox (unique senders,
  about 8 % replies to earlier mails, 4 % re-deliveries; bench_growth.write_batch) that `triage import`
  stores and `triage run --direct` processes with the starter model, each a real command;
- past that, the documented bulk path (`bulk_copy`): the product-made rows of every table an enquiry
  touches (raw record, enquiry, thread messages, audit rows, SLA timers, review item, CRM outbox,
  local lead and task) are copied in SQL, `INSERT ... SELECT` a round at a time, with fresh ids and
  keys (so dedupe and threading keys stay unique) and the same timestamps, lanes, intents and bytes.
  The counting triggers fire on these rows as on any other;
- the last 10,000 of every size are always a product batch: that batch's rate is the ingest figure.

At each size it prints: the ingest rate of that 10k batch (and its ratio to the first size's), the
run's dedupe/threading seconds per 10k, `GET /metrics` (in process, scrape cache off: p50, p95),
`triage status --json` (wall time of the command, and in process), the review queue's filters p95
(by intent, by queue, by lane, unfiltered; 50 pages each), the SLA report with its CSV and the audit
export over the whole store (wall time and peak memory of each command), the database size and what
the retention policy would free. `--database-url` points at a PostgreSQL server: a fresh database is
made there and dropped at the end. Without it, SQLite under a temporary TRIAGE_HOME.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_growth import ROOT, TRIAGE, p95, run, write_batch  # bench/ is on sys.path

sys.path.insert(0, str(ROOT))

TARGETS = {"metrics_p95_ms": 100.0, "status_s": 1.0, "queue_p95_ms": 300.0, "ingest_ratio": 0.8}
# What a copied row changes: every unique or lookup key gets the round's suffix, ids are shifted.
SUFFIXED = {
    "raw_records": ("external_key",),
    "enquiries": ("message_key", "thread_key"),
    "enquiry_messages": ("message_key",),
    "crm_outbox": ("idempotency_key",),
    "crm_tasks": ("idempotency_key",),
}
ENQUIRY_REFS = {
    "raw_records": "enquiry_id",
    "enquiries": "id",
    "enquiry_messages": "enquiry_id",
    "decisions": "enquiry_id",
    "sla_timers": "enquiry_id",
    "review_items": "enquiry_id",
    "crm_outbox": "enquiry_id",
    "crm_leads": "external_id",
    "crm_tasks": "lead_external_id",
}
RAW_REFS = {"enquiries": "raw_id", "enquiry_messages": "raw_id"}
HASHES = {"enquiries": "content_hash", "enquiry_messages": "content_hash"}
COPY_ORDER = tuple(ENQUIRY_REFS)


def _mapped_id(column: str, round_no: int, width: int) -> str:
    """A 32- or 64-character key with its last 6 characters replaced by the round: unique per round,
    the same length (the columns are sized for it)."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE substr({column}, 1, {width - 6}) || '{round_no:06x}' END"
    )


def bulk_copy(engine: Any, rounds: int, *, start_round: int, enquiries_per_round: int | None = None) -> int:
    """Copy the product-made rows `rounds` times (round numbers from `start_round`); returns enquiries
    added. `enquiries_per_round` copies only the first that many enquiries (and their rows)."""
    import sqlalchemy as sa

    from store.tables import Base

    tables = Base.metadata.tables
    postgresql = engine.dialect.name == "postgresql"
    added = 0
    with engine.begin() as connection:
        top_raw = int(connection.scalar(sa.text("SELECT max(id) FROM raw_records")) or 0)
        # The originals: product-made enquiries (not earlier copies), optionally the first N of them.
        base_ids = (
            "SELECT enquiries.id FROM enquiries JOIN raw_records ON raw_records.id = enquiries.raw_id "
            "WHERE raw_records.source NOT LIKE 'bulk:%' ORDER BY enquiries.id"
            + (f" LIMIT {enquiries_per_round}" if enquiries_per_round else "")
        )
        connection.execute(sa.text("DROP TABLE IF EXISTS bulk_base"))
        connection.execute(sa.text(f"CREATE TEMPORARY TABLE bulk_base AS {base_ids}"))
        for round_no in range(start_round, start_round + rounds):
            shift = round_no * (top_raw + 1)
            for name in COPY_ORDER:
                table = tables[name]
                columns, values = [], []
                for column in table.columns:
                    if column.primary_key and column.autoincrement is not False and name != "enquiries":
                        if name == "raw_records":
                            columns.append("id")
                            values.append(f"id + {shift}")
                        continue
                    expression = column.name
                    if column.name == ENQUIRY_REFS[name] or (
                        name == "crm_leads" and column.name == "external_id"
                    ):
                        expression = _mapped_id(column.name, round_no, 32)
                    elif column.name in SUFFIXED.get(name, ()):
                        expression = f"{column.name} || '#{round_no}'"  # NULL stays NULL
                    elif column.name == RAW_REFS.get(name):
                        expression = (
                            f"CASE WHEN {column.name} IS NULL THEN NULL ELSE {column.name} + {shift} END"
                        )
                    elif column.name == HASHES.get(name):
                        expression = _mapped_id(column.name, round_no, 64)
                    elif name == "raw_records" and column.name == "source":
                        expression = "'bulk:' || source"
                    columns.append(column.name)
                    values.append(expression)
                ref = ENQUIRY_REFS[name]
                where = f"{ref} IN (SELECT id FROM bulk_base)"
                if name == "raw_records":
                    where += " AND source NOT LIKE 'bulk:%'"
                connection.execute(
                    sa.text(
                        f"INSERT INTO {name} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {name} "
                        f"WHERE {where}"
                    )
                )
            added += connection.scalar(sa.text("SELECT count(*) FROM bulk_base"))
        connection.execute(sa.text("DROP TABLE bulk_base"))
        if postgresql:  # explicit ids above: move the sequence past them
            connection.execute(
                sa.text(
                    "SELECT setval(pg_get_serial_sequence('raw_records', 'id'), "
                    "(SELECT max(id) FROM raw_records))"
                )
            )
    with engine.connect() as connection:
        connection.execute(sa.text("ANALYZE"))
        connection.commit()
    return added


def enquiry_count(env: dict[str, str]) -> int:
    import sqlalchemy as sa

    from store.db import make_engine

    engine = make_engine(database_url(env))
    with engine.connect() as connection:
        count = int(connection.scalar(sa.text("SELECT count(*) FROM enquiries")) or 0)
    engine.dispose()
    return count


def database_url(env: dict[str, str]) -> str:
    return env.get("TRIAGE_DATABASE_URL") or f"sqlite:///{Path(env['TRIAGE_HOME']) / 'triage.db'}"


def product_batch(env: dict[str, str], work: Path, offset: int, n: int, rng: random.Random, texts: list[str],
                  domains: list[str]) -> dict[str, Any]:  # fmt: skip
    path = work / f"batch-{offset}.mbox"
    write_batch(path, offset, n, rng, texts, domains)
    import_s, _, _ = run([*TRIAGE, "import", str(path), "--channel", "email", "--json"], env)
    run_s, peak_mb, out = run([*TRIAGE, "run", "--direct", "--json"], env)
    path.unlink()
    summary = json.loads(out)
    return {
        "batch": n,
        "ingest_per_s": round(n / (import_s + run_s)),
        "dedupe_thread_s_per_10k": round(summary["stage_seconds"].get("dedupe_thread", 0.0) * 10_000 / n, 3),
        "run_peak_mb": round(peak_mb),
    }


def measure(env: dict[str, str], work: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.web import create_app
    from config.settings import Settings
    from pipeline.retention import database_size
    from pipeline.runtime import Runtime
    from store import review_repo

    os.environ.update(env)
    figures: dict[str, Any] = {}
    figures["status_s"] = round(
        statistics.median(run([*TRIAGE, "status", "--json"], env)[0] for _ in range(3)), 3
    )
    inproc = []
    for _ in range(3):
        started = time.perf_counter()
        assert CliRunner().invoke(cli, ["status", "--json"]).exit_code == 0
        inproc.append(time.perf_counter() - started)
    figures["status_in_process_ms"] = round(statistics.median(inproc) * 1000, 1)
    settings = Settings()
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.metrics_cache_seconds = 0.0  # every scrape computes
        scrapes = []
        for _ in range(21):
            started = time.perf_counter()
            assert client.get("/metrics").status_code == 200
            scrapes.append((time.perf_counter() - started) * 1000)
        figures["metrics_first_ms"] = round(scrapes[0], 1)
        figures["metrics_p50_ms"] = round(statistics.median(scrapes[1:]), 1)
        figures["metrics_p95_ms"] = round(p95(scrapes[1:]), 1)
    factory = app.state.session_factory
    filters = {
        "intent": {"intent": "pricing"},
        "queue": {"queue": "sales"},
        "lane": {"lane": "human"},
        "none": {},
    }
    with factory() as session:
        for name, kwargs in filters.items():
            pages = []
            for page in range(50):
                started = time.perf_counter()
                review_repo.queue_rows(session, limit=50, offset=(page % 5) * 50, **kwargs)  # type: ignore[arg-type]
                pages.append((time.perf_counter() - started) * 1000)
            figures[f"queue_{name}_p95_ms"] = round(p95(pages), 1)
    app.state.engine.dispose()
    report_s, report_mb, _ = run(
        [*TRIAGE, "report", "sla", "--since", "2025-01-01", "--until", "2030-01-01", "--out",
         str(work / "report.html"), "--csv", str(work / "report.csv"), "--json"], env
    )  # fmt: skip
    audit_s, audit_mb, _ = run([*TRIAGE, "audit", "export", "--out", str(work / "audit.jsonl")], env)
    with (work / "report.csv").open(encoding="utf-8") as handle:
        figures["report_csv_rows"] = sum(1 for _ in handle) - 1
    with (work / "audit.jsonl").open(encoding="utf-8") as handle:
        figures["audit_rows"] = sum(1 for _ in handle)
    figures.update(report_s=round(report_s, 2), report_peak_mb=round(report_mb),
                   audit_export_s=round(audit_s, 2), audit_export_peak_mb=round(audit_mb))  # fmt: skip
    for name in ("report.html", "report.csv", "audit.jsonl"):
        (work / name).unlink()
    runtime = Runtime(settings)
    size = database_size(runtime)
    runtime.engine.dispose()
    figures["db_mb"] = round(size["total_bytes"] / 1_048_576, 1)
    figures["retention_would_free_mb"] = round(
        sum(item["bytes"] for item in size["policy_would_free"].values()) / 1_048_576, 1
    )
    return figures


def growth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each figure's factor from one size to the next, normalised to a 10x step: (b/a) ** (1/log10(sb/sa))."""
    import math

    factors = []
    for before, after in itertools.pairwise(rows):
        steps = math.log10(after["size"] / before["size"])
        item: dict[str, Any] = {"from": before["size"], "to": after["size"]}
        for key, value in after.items():
            if key in ("size", "batch") or not isinstance(value, int | float) or not before.get(key):
                continue
            item[key] = round((value / before[key]) ** (1 / steps), 2) if steps else None
        factors.append(item)
    return factors


def retention_check(env: dict[str, str]) -> dict[str, Any]:
    """The database against the retention policy: what it holds per enquiry and what a year holds."""
    from config.settings import Settings
    from pipeline.retention import database_size
    from pipeline.runtime import Runtime

    os.environ.update(env)
    runtime = Runtime(Settings())
    size = database_size(runtime)
    runtime.engine.dispose()
    enquiries = enquiry_count(env)
    free = sum(item["bytes"] for item in size["policy_would_free"].values())
    per_enquiry = size["total_bytes"] / max(enquiries, 1)
    return {
        "enquiries": enquiries,
        "db_mb": round(size["total_bytes"] / 1_048_576, 1),
        "kb_per_enquiry": round(per_enquiry / 1024, 2),
        "policy_would_free_mb": round(free / 1_048_576, 1),
        "largest_tables": [(t["table"], round(t["bytes"] / 1_048_576, 1)) for t in size["tables"][:4]],
        "year_at_300_a_day_mb": round(per_enquiry * 300 * 365 / 1_048_576),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--database-url", help="a PostgreSQL server URL; a fresh database is made there")
    parser.add_argument("--product-up-to", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    sizes = [int(part) for part in options.sizes.split(",")]

    with (ROOT / "models" / "starter_data" / "train.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with (ROOT / "connectors" / "data" / "firmographics.csv").open(encoding="utf-8") as handle:
        domains = [row["domain"] for row in csv.DictReader(handle)] + ["gmail.com", "outlook.com"]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = {**os.environ, "TRIAGE_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("TRIAGE_DATABASE_URL", None)
    database = None
    if options.database_url:
        import psycopg

        database = f"bench_scale_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(options.database_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        env["TRIAGE_DATABASE_URL"] = options.database_url.rsplit("/", 1)[0] + f"/{database}"
    subprocess.run(
        [sys.executable, "-c", "from pipeline.runtime import Runtime; from pipeline import jobs; "
         "jobs.ensure_starter_model(Runtime())"],
        env=env, cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    from store.db import make_engine

    rng = random.Random(15)
    rows: list[dict[str, Any]] = []
    offset = 0  # mails written so far (their numbers keep senders and message ids unique)
    bulk_round = 1
    try:
        for target in sizes:
            started = time.perf_counter()
            made = "product"
            while enquiry_count(env) < min(target, options.product_up_to) - options.batch:
                product_batch(env, work, offset, options.batch, rng, texts, domains)
                offset += options.batch
            have = enquiry_count(env)
            if target - options.batch > have:
                made = "product + bulk copy"
                engine = make_engine(database_url(env))
                while (have := enquiry_count(env)) < target - options.batch:
                    base = min(options.product_up_to, have)
                    want = target - options.batch - have
                    rounds = max(1, want // base)
                    bulk_copy(engine, min(rounds, 5), start_round=bulk_round,
                              enquiries_per_round=None if want >= base else want)  # fmt: skip
                    bulk_round += min(rounds, 5)
                engine.dispose()
            batch = product_batch(env, work, offset, options.batch, rng, texts, domains)
            offset += options.batch
            build_s = round(time.perf_counter() - started)
            row = {"size": enquiry_count(env), "made_by": made, "build_s": build_s, **batch,
                   **measure(env, work)}  # fmt: skip
            rows.append(row)
            if not options.json:
                print(json.dumps(row), flush=True)
        retention = retention_check(env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if database and options.database_url:
            import psycopg

            with psycopg.connect(options.database_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for row in rows:
        row["ingest_vs_first"] = round(row["ingest_per_s"] / rows[0]["ingest_per_s"], 2)
    result = {
        "backend": "postgresql" if options.database_url else "sqlite",
        "targets": TARGETS,
        "rows": rows,
        "growth_per_10x": growth(rows),
        "retention": retention,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
