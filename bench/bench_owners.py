"""Account matching and owner routing: their share of the end-to-end pipeline, and SOQL round trips.

    python bench/bench_owners.py [--n 2000] [--json]

1. Local CRM: the pipeline benchmark's corpus (bench/bench_pipeline.py) goes through `triage import`
   and `triage run --direct` in a workspace with 3 SDRs and an account for every sender domain of the
   corpus. The run reports seconds per stage; matching (`accounts`) and routing (`routing`) are
   measured inside the batch, so their overhead is (accounts + routing) / (the run without them).
2. Salesforce double: one lookup of 500 distinct senders (contacts, leads and domain accounts in the
   org) counts the API round trips it takes, and the language detector's resident memory is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_pipeline import TRIAGE, corpus, run_peak  # noqa: E402


def local_crm(n: int, tmp: Path) -> dict[str, object]:
    home = tmp / "home"
    env = {**os.environ, "TRIAGE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("TRIAGE_DATABASE_URL", None)
    setup = [
        sys.executable,
        "-c",
        "from pipeline.jobs import ensure_starter_model; from pipeline.runtime import Runtime;"
        " ensure_starter_model(Runtime())",
    ]
    run_peak(setup, env)
    mbox_path, jsonl_path = corpus(tmp, n)
    domains = sorted(
        {
            line.split("@", 1)[1].strip().strip(">").lower()
            for line in mbox_path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.lower().startswith("from:") and "@" in line
        }
        | {json.loads(line)["email"].split("@", 1)[1] for line in jsonl_path.read_text().splitlines()}
    )
    accounts = tmp / "accounts.csv"
    rows = [
        f"{d},Account {i},{(i % 7) * 20000},{'ana' if i % 2 else ''},customer,3"
        for i, d in enumerate(domains)
    ]
    accounts.write_text("domain,name,arr,owner,status,contacts\n" + "\n".join(rows) + "\n")
    for name, capacity in (("ana", 100_000), ("ben", 100_000), ("cy", 100_000)):
        run_peak(
            [
                *TRIAGE,
                "users",
                "add",
                name,
                "--role",
                "sdr",
                "--teams",
                "sales,support,partnerships",
                "--capacity",
                str(capacity),
                "--password",
                "bench-password-123",
            ],
            env,
        )
    run_peak([*TRIAGE, "crm", "accounts", "import", str(accounts), "--json"], env)
    steps = {}
    for name, command in (
        ("import_mbox", [*TRIAGE, "import", str(mbox_path), "--channel", "email", "--json"]),
        ("import_jsonl", [*TRIAGE, "import", str(jsonl_path), "--channel", "form", "--json"]),
        ("run", [*TRIAGE, "run", "--direct", "--json"]),
    ):
        seconds, peak, stdout = run_peak(command, env)
        steps[name] = {"seconds": round(seconds, 2), "peak_mb": round(peak, 1)}
        if name == "run":
            summary = json.loads(stdout)
    stages = summary["stage_seconds"]
    added = stages.get("accounts", 0.0) + stages.get("routing", 0.0)
    total = sum(step["seconds"] for step in steps.values())
    return {
        "enquiries": n,
        "account_domains": len(domains),
        "steps": steps,
        "end_to_end_seconds": round(total, 2),
        "accounts_seconds": round(stages.get("accounts", 0.0), 3),
        "routing_seconds": round(stages.get("routing", 0.0), 3),
        "overhead_of_end_to_end": round(added / max(total - added, 1e-9), 4),
        "overhead_of_run": round(added / max(steps["run"]["seconds"] - added, 1e-9), 4),
        "review_items": summary.get("review"),
    }


def salesforce_round_trips(senders: int = 500) -> dict[str, object]:
    from config.settings import AccountSettings, CrmSettings
    from connectors.crm.accounts import SalesforceAccountDirectory
    from connectors.crm.mapping import default_mapping_path, load_mapping
    from connectors.crm.salesforce import SalesforceCrm
    from tests.support.salesforce_double import SalesforceDouble

    with SalesforceDouble() as sf:
        for n in range(senders // 2):
            account = sf.add_record(
                "Account",
                Name=f"Co {n}",
                Domain__c=f"co{n}.example",
                OwnerId="005A",
                AnnualRevenue=n * 1000,
                Type="Customer - Direct",
                CreatedDate="2020",
            )
            if n % 5 == 0:
                sf.add_record("Contact", LastName=f"C{n}", Email=f"buyer{n}@co{n}.example", AccountId=account)
        for n in range(0, senders, 10):
            sf.add_record(
                "Lead", LastName=f"L{n}", Company="Leadco", Email=f"lead{n}@leads.example", OwnerId="005L"
            )
        crm = SalesforceCrm(
            sf.settings(), CrmSettings(), load_mapping(default_mapping_path(ROOT / "config" / "defaults"))
        )
        directory = SalesforceAccountDirectory(crm, AccountSettings(), lambda domain: domain == "gmail.com")
        directory.lookup(["warm@up.example"])  # the login
        emails = [f"buyer{n}@co{n % (senders // 2)}.example" for n in range(senders - senders // 10)]
        emails += [f"lead{n}@leads.example" for n in range(0, senders, 10)]
        before = sf.api_request_count()
        found = directory.lookup(emails)
        trips = sf.api_request_count() - before
    return {"senders": len(emails), "matched": len(found), "round_trips": trips}


def language_memory() -> dict[str, object]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from pipeline.language import detect_language

    detect_language("Guten Tag, wir hätten gern ein Angebot für 40 Lizenzen.")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"detector_peak_rss_added_mb": round(after - before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2_000, help="enquiries for the local-CRM run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result: dict[str, object] = {"language": language_memory()}
    result["salesforce"] = salesforce_round_trips()
    with tempfile.TemporaryDirectory(prefix="triage-bench-owners-") as tmp:
        result["local_crm"] = local_crm(args.n, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    local, sf = result["local_crm"], result["salesforce"]
    print(
        f"local CRM, {args.n} enquiries: matching {local['accounts_seconds']} s + routing "  # type: ignore[index]
        f"{local['routing_seconds']} s = {local['overhead_of_end_to_end']:.1%} of end to end"
    )  # type: ignore[index]
    print(
        f"Salesforce double: {sf['senders']} senders, {sf['matched']} matched "
        f"in {sf['round_trips']} round trips"
    )  # type: ignore[index]
    print(f"language detector: +{result['language']['detector_peak_rss_added_mb']} MB peak RSS")  # type: ignore[index]


if __name__ == "__main__":
    main()
