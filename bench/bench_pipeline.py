"""End-to-end throughput: `triage import` + `triage run` over N enquiries (an mbox and a JSONL of form posts).

    python bench/bench_pipeline.py [--n 10000] [--json]

Each step runs as the real command in its own process, so the figures include start-up; peak memory
is the largest summed resident set of the command's process tree (workers included). Prefect's fixed
cost (the ephemeral API server a first flow starts, then a warm flow) is measured separately on an
empty queue, then the same backlog goes through the real flow (`triage run` without `--direct`).
"""

from __future__ import annotations

import argparse
import csv
import json
import mailbox
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from process_tree import PeakTreeMemory  # bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = [sys.executable, "-m", "app.cli"]


def corpus(directory: Path, n: int, seed: int = 7) -> tuple[Path, Path]:
    """Half mails, half form posts; texts from the starter set with unique senders and sign-offs."""
    rng = random.Random(seed)
    with (ROOT / "models" / "starter_data" / "train.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with (ROOT / "connectors" / "data" / "firmographics.csv").open(encoding="utf-8") as handle:
        domains = [row["domain"] for row in csv.DictReader(handle)] + ["gmail.com", "outlook.com"]
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    mbox_path, jsonl_path = directory / "bench.mbox", directory / "bench-forms.jsonl"
    box = mailbox.mbox(mbox_path)
    box.lock()
    for i in range(n // 2):
        text = rng.choice(texts)
        message = EmailMessage()
        message["From"] = f"Person {i} <p{i}@{rng.choice(domains)}>"
        message["To"] = "hello@acme-triage.example"
        message["Subject"] = text.split("\n")[0][:70]
        message["Date"] = format_datetime(start + timedelta(minutes=i))
        message["Message-ID"] = f"<bench-{i}@bench.example>"
        message.set_content(f"Hello,\n\n{text}\n\nBest regards,\nPerson {i}\nTicket ref {i:06d}\n")
        box.add(message)
    box.flush()
    box.unlock()
    box.close()
    with jsonl_path.open("w", encoding="utf-8") as out:
        for i in range(n - n // 2):
            record = {
                "submission_id": f"bench-{i}",
                "form_id": "contact",
                "submitted_at": (start + timedelta(minutes=i)).isoformat(),
                "email": f"f{i}@{rng.choice(domains)}",
                "name": f"Form Person {i}",
                "message": f"{rng.choice(texts)} (ref {i:06d})",
                "website": "",
            }
            out.write(json.dumps(record) + "\n")
    return mbox_path, jsonl_path


def run_peak(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command: wall seconds, the peak memory of its whole process tree in MB (the command, the
    fork server and the workers), and stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with PeakTreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stderr.decode()[-3000:]}")
    return elapsed, memory.peak_mb, stdout.decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="enquiries in total (half mail, half forms)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-prefect", action="store_true", help="do not measure Prefect's fixed cost")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        home, prefect_home = Path(tmp) / "home", Path(tmp) / "home-prefect"
        env = {**os.environ, "TRIAGE_HOME": str(home), "PYTHONPATH": str(ROOT)}
        env.pop("TRIAGE_DATABASE_URL", None)
        setup = [
            sys.executable,
            "-c",
            "from pipeline.jobs import ensure_starter_model; from pipeline.runtime import Runtime;"
            " ensure_starter_model(Runtime())",
        ]
        train_seconds, _, _ = run_peak(setup, env)
        mbox_path, jsonl_path = corpus(Path(tmp), args.n)

        steps: dict[str, dict[str, float]] = {}
        for name, command in (
            ("import_mbox", [*TRIAGE, "import", str(mbox_path), "--channel", "email", "--json"]),
            ("import_jsonl", [*TRIAGE, "import", str(jsonl_path), "--channel", "form", "--json"]),
            ("run", [*TRIAGE, "run", "--direct", "--json"]),
        ):
            if name == "run" and not args.skip_prefect:  # the same backlog, for a run through Prefect
                shutil.copytree(home, prefect_home)
            seconds, peak, stdout = run_peak(command, env)
            steps[name] = {"seconds": round(seconds, 2), "peak_mb": round(peak, 1)}
            if name == "run":
                summary = json.loads(stdout)
        total = sum(step["seconds"] for step in steps.values())
        result: dict[str, object] = {
            "enquiries": args.n,
            "steps": steps,
            "end_to_end_seconds": round(total, 2),
            "enquiries_per_second": round(args.n / total, 1),
            "peak_mb": max(step["peak_mb"] for step in steps.values()),
            "run_summary": {
                k: summary[k]
                for k in (
                    "enquiries",
                    "duplicates",
                    "quarantined",
                    "automated",
                    "review",
                    "crm_written",
                    "stage_seconds",
                )
            },
            "starter_model_training_seconds": round(train_seconds, 1),
        }
        if not args.skip_prefect:
            cold, cold_peak, _ = run_peak([*TRIAGE, "run", "--json"], env)
            warm, _, _ = run_peak([*TRIAGE, "run", "--json"], env)
            result["prefect_fixed_seconds"] = {
                "first_flow_cold": round(cold, 1),
                "next_flow": round(warm, 1),
                "peak_mb": round(cold_peak, 1),
            }
            # The same backlog through the real flow (`triage run` without --direct), with Prefect's home
            # as warm as the second flow above had it: the fixed cost to subtract is `next_flow`.
            shutil.copytree(home / "prefect", prefect_home / "prefect", dirs_exist_ok=True)
            seconds, peak, _ = run_peak([*TRIAGE, "run", "--json"], {**env, "TRIAGE_HOME": str(prefect_home)})
            result["run_through_prefect"] = {
                "seconds": round(seconds, 2),
                "peak_mb": round(peak, 1),
                "enquiries_per_second_beyond_fixed_cost": round(args.n / max(seconds - warm, 0.001), 1),
            }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.n} enquiries: import + run in {result['end_to_end_seconds']} s = "
        f"{result['enquiries_per_second']} enquiries/s; peak memory {result['peak_mb']} MB"
    )
    for name, step in steps.items():
        print(f"  {name:13s} {step['seconds']:7.2f} s   peak {step['peak_mb']:7.1f} MB")
    print(f"  stages (s): {result['run_summary']['stage_seconds']}")  # type: ignore[index]
    if "prefect_fixed_seconds" in result:
        print(f"Prefect fixed cost (empty queue): {result['prefect_fixed_seconds']}")
        print(f"run through Prefect (same backlog): {result['run_through_prefect']}")


if __name__ == "__main__":
    main()
