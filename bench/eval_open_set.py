"""The open-set protocol of docs/classifier.md: precision of the automated lane with unknown intents.

    python bench/eval_open_set.py [--target-precision 0.95] [--rotations 4] [--ham 500] [--before]
                                  [--no-baseline] [--json]

BANKING77 with a quarter of its intents held out as unknown (4 rotations), plus SpamAssassin ham bodies
as out-of-domain text; prints, per rotation and on average/worst, the product's automated precision,
coverage and in-scope accuracy beside a plain TF-IDF + LogisticRegression baseline with one global
threshold tuned the same way (`baseline`: simulated unknowns and the binomial bound) and with the point
estimate on the same simulated unknowns (`baseline_point`). `--before` measures the thresholds as they
were before the open-set fit (in-distribution point estimates). Also prints the wall time, the load
average and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.open_set import run_protocol  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--rotations", type=int, default=4)
    parser.add_argument("--ham", type=int, default=500, help="SpamAssassin ham bodies added as unknowns")
    parser.add_argument("--train-share", type=float, default=1.0)
    parser.add_argument("--before", action="store_true", help="in-distribution thresholds (pre issue 13)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()

    def progress(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    report = run_protocol(
        args.data / "banking77",
        args.data / "spamassassin",
        target_precision=args.target_precision,
        rotation_count=args.rotations,
        ham_count=args.ham,
        train_share=args.train_share,
        with_baseline=not args.no_baseline,
        open_set=not args.before,
        n_jobs=args.jobs,
        progress=progress,
    )
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average"] = [round(value, 2) for value in os.getloadavg()]
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{'rotation':>8} {'system':>14} {'precision':>9} {'coverage':>8} {'in-scope acc':>12} "
        f"{'unknowns auto':>13}"
    )
    for entry in report["rotations"]:
        for system in ("product", "baseline", "baseline_point"):
            row = entry.get(system)
            if row:
                print(
                    f"{entry['rotation']:>8} {system:>14} {row['automated_precision'] or 0:>9.4f} "
                    f"{row['coverage']:>8.4f} {row['in_scope_accuracy']:>12.4f} "
                    f"{row['unknowns_automated']:>13}"
                )
    print(json.dumps(report["summary"], indent=2))
    print(
        f"wall {report['wall_seconds']} s, load {report['load_average']}, peak RSS {report['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
