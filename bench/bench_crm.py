"""Leads per second into the CRM backends: local (SQLite) and the Salesforce HTTPS double.

    python bench/bench_crm.py [--leads 20000] [--double-leads 5000] [--json]

Phases: the local backend's upsert (new leads, then the same leads again as updates), the whole outbox
drain into the local backend, and the Salesforce double through sObject Collections (200 a request)
and Bulk API 2.0 jobs. The double runs in this process, so its own work shares the GIL with the
client: the figures for it are a floor, not a ceiling. Peak memory is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config.settings import CrmSettings  # noqa: E402
from connectors.crm.base import LeadWrite  # noqa: E402
from connectors.crm.local import LocalCrm  # noqa: E402
from connectors.crm.mapping import load_mapping  # noqa: E402
from connectors.crm.salesforce import SalesforceCrm  # noqa: E402
from pipeline.crm_sync import drain_outbox  # noqa: E402
from store.db import make_engine, make_session_factory, upgrade_schema  # noqa: E402
from tests.crm.builders import DEFAULT_MAPPING, fill_outbox, lead_payload  # noqa: E402
from tests.support.salesforce_double import SalesforceDouble  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(count: int, work: Callable[[], None]) -> dict[str, float]:
    """Wall time and this process's CPU time (a loaded machine slows the first, not the second)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    work()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "leads": count,
        "seconds": round(seconds, 3),
        "leads_per_s": round(count / seconds),
        "cpu_seconds": round(cpu, 3),
        "leads_per_cpu_s": round(count / cpu),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def leads(count: int, offset: int = 0) -> list[LeadWrite]:
    return [
        LeadWrite(f"lead:{n:032x}", f"{n:032x}", lead_payload(f"{n:032x}", n))
        for n in range(offset, offset + count)
    ]


def in_batches(
    send: Callable[[list[LeadWrite]], Any], items: list[LeadWrite], size: int
) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(items), size):
            results = send(items[start : start + size])
            if not all(result.ok for result in results):
                raise SystemExit(f"a write failed: {next(r for r in results if not r.ok)}")

    return run


def bench_local(count: int, workdir: Path) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{workdir / 'local.db'}")
    upgrade_schema(engine)
    factory = make_session_factory(engine)
    crm = LocalCrm(factory)
    batch = leads(count)
    figures = {
        "upsert_new": timed(count, in_batches(crm.upsert_leads, batch, 1000)),
        "upsert_update": timed(count, in_batches(crm.upsert_leads, batch, 1000)),
    }
    fill_outbox(factory, count, start=10_000_000)

    def drain() -> None:
        summary = drain_outbox(factory, crm, batch_size=1000)
        if summary.sent != count:
            raise SystemExit(f"drain sent {summary.sent} of {count}: {summary.errors[:1]}")

    figures["drain_outbox"] = timed(count, drain)
    engine.dispose()
    return figures


def bench_double(count: int) -> dict[str, Any]:
    mapping = load_mapping(DEFAULT_MAPPING)
    with SalesforceDouble() as double:
        collections = SalesforceCrm(double.settings(), CrmSettings(bulk_threshold=10**9), mapping)
        bulk = SalesforceCrm(
            double.settings(), CrmSettings(bulk_threshold=1), mapping, bulk_poll_seconds=0.05
        )
        figures = {
            "collections_new": timed(count, in_batches(collections.upsert_leads, leads(count), 1000)),
            "collections_update": timed(count, in_batches(collections.upsert_leads, leads(count), 1000)),
            "bulk2_new": timed(count, in_batches(bulk.upsert_leads, leads(count, 10**6), 2000)),
        }
        created = sorted(set(double.created.values()))
        if created != [1] or len(double.leads_by_external_id()) != 2 * count:
            raise SystemExit(f"the double does not hold each lead exactly once: {created}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=20_000, help="leads into the local backend")
    parser.add_argument("--double-leads", type=int, default=5_000, help="leads into the Salesforce double")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        result: dict[str, Any] = {
            "local_sqlite": bench_local(args.leads, Path(workdir)),
            "salesforce_double": bench_double(args.double_leads),
        }
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for backend, phases in result.items():
        if not isinstance(phases, dict):
            continue
        for phase, figures in phases.items():
            print(
                f"{backend:18} {phase:20} {figures['leads']:>7} leads {figures['seconds']:>8.2f} s "
                f"{figures['leads_per_s']:>8} leads/s {figures['leads_per_cpu_s']:>8} per CPU-s  "
                f"peak RSS {figures['peak_rss_mb']:.0f} MB"
            )
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
