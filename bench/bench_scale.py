"""Costs at 10k, 100k and 1M stored enquiries, with the growth factor per 10x (issue 15).

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--database-url postgresql://...] [--json]
                                [--product-up-to 100000] [--batch 10000] [--keep] [--reuse PATH|URL]
                                [--baseline] [--skip-exports] [--repeat 3]

How the store is made: bench_store.BenchStore (the product's path up to `--product-up-to`, then the
bulk copy; the last `--repeat` batches of `--batch` at every size are always product batches, and
the median of their rates is the ingest figure, printed with the range). `--database-url` points at a
PostgreSQL server: a fresh database is made there and dropped at the end. Without it, SQLite under a
temporary TRIAGE_HOME.

At each size it prints: the ingest rate of that last product batch and its ratio to the empty
store's rate (`ingest_vs_empty`, target >= 0.8), the run's dedupe/threading seconds per 10k,
`GET /metrics` (in process, scrape cache off: p50, p95), `triage status --json` (wall time of the
command, and in process), the review queue's filters p95 (by intent, by queue, by lane, unfiltered;
50 pages each), the SLA report with its CSV and the audit export over the whole store (wall time and
peak memory of each command), the database size and what the retention policy would free.

Options:
- `--keep`: keep the built store (TRIAGE_HOME, and the PostgreSQL database) and print where it is;
- `--reuse PATH|URL`: measure an already-built store (a kept TRIAGE_HOME, a SQLite file or a
  PostgreSQL URL) as it is: nothing is built or imported into it, so there is no ingest figure;
- `--baseline`: measure the empty-store ingest rate in a fresh empty store of the same backend
  (`--repeat` product batches of `--batch`) rather than taking the build's first `--repeat` product
  batches; the baseline is always printed (`baseline`) with where it came from;
- `--repeat N` (default 3): product batches per figure; their median is reported;
- `--skip-exports`: skip the SLA report and audit export runs (minutes at 1M).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_growth import TRIAGE, p95, run  # bench/ is on sys.path
from bench_store import BenchStore

TARGETS = {"metrics_p95_ms": 100.0, "status_s": 1.0, "queue_p95_ms": 300.0, "ingest_vs_empty": 0.8}


def measure(env: dict[str, str], work: Path, *, exports: bool = True) -> dict[str, Any]:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.web import create_app
    from config.settings import Settings
    from pipeline.retention import database_size
    from pipeline.runtime import Runtime
    from store import review_repo

    _use_env(env)
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
    if exports:
        figures.update(measure_exports(env, work))
    runtime = Runtime(settings)
    size = database_size(runtime)
    runtime.engine.dispose()
    figures["db_mb"] = round(size["total_bytes"] / 1_048_576, 1)
    figures["retention_would_free_mb"] = round(
        sum(item["bytes"] for item in size["policy_would_free"].values()) / 1_048_576, 1
    )
    return figures


def measure_exports(env: dict[str, str], work: Path) -> dict[str, Any]:
    """The SLA report with its CSV and the audit export over the whole store: time and peak memory."""
    figures: dict[str, Any] = {}
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
    return figures


def _use_env(env: dict[str, str]) -> None:
    """This process reads the store's settings from the environment, as the commands do."""
    if "TRIAGE_DATABASE_URL" not in env:
        os.environ.pop("TRIAGE_DATABASE_URL", None)
    os.environ.update(env)


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


def retention_check(store: BenchStore) -> dict[str, Any]:
    """The database against the retention policy: what it holds per enquiry and what a year holds."""
    from config.settings import Settings
    from pipeline.retention import database_size
    from pipeline.runtime import Runtime

    _use_env(store.env)
    runtime = Runtime(Settings())
    size = database_size(runtime)
    runtime.engine.dispose()
    enquiries = store.enquiry_count()
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
    parser.add_argument("--keep", action="store_true", help="keep the built store and print where it is")
    parser.add_argument("--reuse", metavar="PATH|URL", help="measure this already-built store, build nothing")
    parser.add_argument("--baseline", action="store_true",
                        help="measure the empty-store ingest rate in a fresh empty store")  # fmt: skip
    parser.add_argument("--skip-exports", action="store_true", help="skip the SLA report and audit export")
    parser.add_argument("--repeat", type=int, default=3,
                        help="product batches per ingest figure, median reported (default 3)")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    sizes = [int(part) for part in options.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))

    baseline: dict[str, Any] | None = None
    if options.baseline:
        empty = BenchStore.create(work / "baseline", database_url=options.database_url, name="bench_baseline")
        try:
            for _ in range(options.repeat):
                empty.product_batch(options.batch)
            figure = empty.empty_figure(options.repeat) or {}
            baseline = {**figure, "from": "a fresh empty store (--baseline)"}
        finally:
            empty.close(keep=False)
        log(f"baseline: {json.dumps(baseline)}", options.json)

    if options.reuse:
        store = BenchStore.reuse(work, options.reuse)
    else:
        store = BenchStore.create(work / "store", database_url=options.database_url, name="bench_scale")
    rows: list[dict[str, Any]] = []
    kept = None
    try:
        if options.reuse:
            row = {"size": store.enquiry_count(), "made_by": f"reused {options.reuse}",
                   **measure(store.env, store.work, exports=not options.skip_exports)}  # fmt: skip
            rows.append(row)
            log(json.dumps(row), options.json)
        for target in [] if options.reuse else sizes:
            started = time.perf_counter()
            made, batch = store.grow_to(
                target, product_up_to=options.product_up_to, batch=options.batch, repeat=options.repeat
            )
            build_s = round(time.perf_counter() - started)
            if baseline is None and (first := store.empty_figure(options.repeat)) is not None:
                made_from = f"the build's first {options.repeat} product batches, from the empty store"
                baseline = {**first, "from": made_from}
            row = {"size": store.enquiry_count(), "made_by": made, "build_s": build_s, **batch,
                   **measure(store.env, store.work, exports=not options.skip_exports)}  # fmt: skip
            if baseline and "ingest_per_s" in row:
                row["ingest_vs_empty"] = round(row["ingest_per_s"] / baseline["ingest_per_s"], 2)
            rows.append(row)
            log(json.dumps(row), options.json)
        retention = retention_check(store)
    finally:
        # A reused store is never ours to remove: only this run's folder (exports, a scratch home) goes.
        kept = None if options.reuse else store.close(keep=options.keep)
        if not kept:
            shutil.rmtree(work, ignore_errors=True)
    if kept:
        log(f"kept the store: {kept}", False)
    result = {
        "backend": store.backend,
        "targets": TARGETS,
        "baseline": baseline,
        "rows": rows,
        "growth_per_10x": growth(rows),
        "retention": retention,
        "kept": kept,
    }
    print(json.dumps(result, indent=2))


def log(line: str, quiet: bool) -> None:
    """Progress on stderr (the result, on stdout, stays one JSON object)."""
    if not quiet:
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
