"""Hostile mix (issue 16): N normal mails (SpamAssassin ham) with 1 % bombs mixed in, through `triage
import` + `triage run`, against the same mails clean. Prints throughput of both runs, their ratio
(target >= 80 %) and the peak memory of the hostile run's process tree (target < 500 MB).

    PYTHONPATH=. python bench/bench_hostile.py --mails 10000 [--repeat 2] [--json]

Every bomb copy has its own Message-ID, so dedupe does not absorb the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_tree import PeakTreeMemory  # bench/ is on sys.path when a benchmark runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HAM = ROOT.parent / "shared" / "data" / "spamassassin"
TRIAGE = [sys.executable, "-m", "app.cli"]
_MESSAGE_ID = re.compile(rb"^Message-ID:[^\r\n]*\r?\n", re.IGNORECASE | re.MULTILINE)


def write_mails(folder: Path, count: int, with_bombs: bool) -> int:
    """`count` ham mails (the corpus repeated, each with a fresh Message-ID); 1 % of them bombs."""
    from tests.support.bombs import bomb_corpus

    folder.mkdir(parents=True)
    ham = sorted(p for d in ("easy-ham-1", "easy-ham-2", "hard-ham-1") for p in (HAM / d).glob("*.txt"))
    mail_bombs = [b for b in bomb_corpus() if b.channel == "email"]
    bombs = 0
    for i in range(count):
        if with_bombs and i % 100 == 50:
            # Each copy its own Message-ID: an attacker varies them, so dedupe does not absorb the repeats.
            bomb = b"Message-ID: <bomb%d@example.com>\r\n" % i + mail_bombs[bombs % len(mail_bombs)].payload
            (folder / f"bomb{i:05d}.eml").write_bytes(bomb)
            bombs += 1
            continue
        raw = _MESSAGE_ID.sub(b"", ham[i % len(ham)].read_bytes(), count=1)
        (folder / f"m{i:05d}.eml").write_bytes(b"Message-ID: <bench%d@example.com>\n" % i + raw)
    return bombs


def run(home: Path, folder: Path) -> dict[str, float]:
    env = {**os.environ, "TRIAGE_HOME": str(home)}
    env.pop("TRIAGE_DATABASE_URL", None)
    started = time.perf_counter()
    steps = [["import", str(folder), "--channel", "email", "--json"], ["run", "--direct", "--json"]]
    peak = 0.0
    figures: dict[str, float] = {}
    for step in steps:
        step_started = time.perf_counter()
        process = subprocess.Popen([*TRIAGE, *step], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        with PeakTreeMemory(process.pid) as memory:
            out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"triage {step[0]} failed ({process.returncode})")
        peak = max(peak, memory.peak_mb)
        figures[f"{step[0]}_seconds"] = time.perf_counter() - step_started
        # Refused at import (too large, unreadable) or quarantined by the run: both count.
        quarantined = float(json.loads(out).get("quarantined", 0))
        figures["quarantined"] = figures.get("quarantined", 0.0) + quarantined
    figures["seconds"] = time.perf_counter() - started
    figures["peak_mb"] = peak
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="Clean and hostile runs alternate this many times; the fastest of each counts (a shared "
        "machine's load then weighs on both alike).",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    cleans: list[dict[str, float]] = []
    hostiles: list[dict[str, float]] = []
    try:
        write_mails(work / "clean", args.mails, with_bombs=False)
        bombs = write_mails(work / "hostile", args.mails, with_bombs=True)
        for attempt in range(args.repeat):
            cleans.append(run(work / f"home-clean-{attempt}", work / "clean"))
            hostiles.append(run(work / f"home-hostile-{attempt}", work / "hostile"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clean = min(cleans, key=lambda figures: figures["seconds"])
    hostile = min(hostiles, key=lambda figures: figures["seconds"])
    result = {
        "mails": args.mails,
        "bombs": bombs,
        "clean_per_second": round(args.mails / clean["seconds"], 1),
        "hostile_per_second": round(args.mails / hostile["seconds"], 1),
        "throughput_ratio": round(clean["seconds"] / hostile["seconds"], 3),
        "clean_import_run_seconds": [round(clean["import_seconds"], 1), round(clean["run_seconds"], 1)],
        "hostile_import_run_seconds": [round(hostile["import_seconds"], 1), round(hostile["run_seconds"], 1)],
        "hostile_peak_mb": round(max(figures["peak_mb"] for figures in hostiles), 1),
        "quarantined": int(hostile["quarantined"]),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
