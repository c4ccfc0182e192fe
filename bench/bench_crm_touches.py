"""Salesforce first touches per second: the touch poll over the HTTPS double (issue 17).

    python bench/bench_crm_touches.py [--leads 5000] [--json]

Setup (not timed): that many enquiries with running first-response clocks on SQLite, their leads in
the double with the CRM ids in the outbox, then every lead moved out of the open status in Salesforce
(half of them sharing one LastModifiedDate, as a mass update does) and one completed Task per ten
leads. Timed: the first poll (every clock stops), and a second poll that finds nothing to do. The
double runs in this process and shares the GIL with the client, so the figures are a floor. Peak
memory is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from config.settings import CrmSettings, SalesforceSettings  # noqa: E402
from connectors.crm.mapping import load_mapping  # noqa: E402
from connectors.crm.salesforce import SalesforceCrm  # noqa: E402
from pipeline.crm_touches import poll_crm_touches  # noqa: E402
from sla.policies import load_policies  # noqa: E402
from sla.service import TimerStart, start_timers  # noqa: E402
from store import outbox  # noqa: E402
from store.db import make_engine, make_session_factory, transaction, upgrade_schema  # noqa: E402
from store.tables import CrmOutbox  # noqa: E402
from tests.crm.builders import DEFAULT_MAPPING  # noqa: E402
from tests.sla.sla_helpers import add_enquiries  # noqa: E402
from tests.support.salesforce_double import SalesforceDouble  # noqa: E402

MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SDR = "005000000000SDRAAA"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, SalesforceDouble() as double:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade_schema(engine)
        factory = make_session_factory(engine)
        ids = [f"{n:032x}" for n in range(count)]
        with transaction(factory) as session:
            add_enquiries(session, ids, received_at=MONDAY)
            start_timers(
                session,
                [TimerStart(i, MONDAY, "normal", "support", "email", "support", "smb") for i in ids],
                load_policies(),
                now=MONDAY,
            )
            rows = [
                {"idempotency_key": f"lead:{i}", "enquiry_id": i, "operation": "upsert_lead", "payload": {}}
                for i in ids
            ]
            outbox.enqueue(session, rows, now=MONDAY)
        lead_ids: dict[str, str] = {}
        for n, enquiry_id in enumerate(ids):  # leads as the drain would have written them
            lead_id = f"00Q{n:012d}AAA"
            double.records["Lead"][lead_id] = {
                "Id": lead_id,
                "LastName": "x",
                "Company": "y",
                "Status": "Open - Not Contacted",
                double.external_id_field: enquiry_id,
                "OwnerId": SDR,
            }
            lead_ids[enquiry_id] = lead_id
        table = CrmOutbox.__table__
        with engine.begin() as connection:  # Core executemany: the CRM ids the drain would have stored
            connection.execute(
                sa.update(table)
                .where(table.c.enquiry_id == sa.bindparam("eid"))
                .values(status="sent", crm_id=sa.bindparam("cid")),
                [{"eid": e, "cid": c} for e, c in lead_ids.items()],
            )
        for n, enquiry_id in enumerate(ids):
            at = MONDAY + timedelta(minutes=30 if n % 2 else 30 + n % 600)
            double.edit_record("Lead", lead_ids[enquiry_id], {"Status": "Working - Contacted"}, by=SDR, at=at)
            if n % 10 == 0:
                double.add_task(
                    {"WhoId": lead_ids[enquiry_id], "Subject": "Call", "Status": "Completed"},
                    by=SDR,
                    at=MONDAY + timedelta(minutes=20),
                )
        crm = SalesforceCrm(double.settings(), CrmSettings(), load_mapping(DEFAULT_MAPPING))
        settings = SalesforceSettings()
        now = MONDAY + timedelta(days=1)
        start = time.perf_counter()
        first = poll_crm_touches(factory, crm, settings, clock=lambda: now)
        first_seconds = time.perf_counter() - start
        start = time.perf_counter()
        second = poll_crm_touches(factory, crm, settings, clock=lambda: now + timedelta(minutes=5))
        second_seconds = time.perf_counter() - start
        engine.dispose()
    records = first.leads_seen + first.tasks_seen
    return {
        "leads": count,
        "records_read": records,
        "clocks_stopped": first.clocks_stopped,
        "first_poll_seconds": round(first_seconds, 3),
        "records_per_s": round(records / first_seconds),
        "clocks_per_s": round(first.clocks_stopped / first_seconds),
        "second_poll_seconds": round(second_seconds, 3),
        "second_poll_stopped": second.clocks_stopped,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=5_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(args.leads)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['records_read']} records read, {result['clocks_stopped']} clocks stopped in "
        f"{result['first_poll_seconds']} s ({result['records_per_s']}/s); second poll "
        f"{result['second_poll_seconds']} s, {result['second_poll_stopped']} stopped"
    )
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
