"""The pipeline in one long-lived process, a pass every `interval` seconds, as `triage flows serve`
runs it: the benches use it to load the database as production does, without paying a fresh
interpreter's start-up (imports, the model) on every pass.

    python bench/pipeline_loop.py [--interval 0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import _run_pass, _runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between passes (default 0.5)")
    args = parser.parse_args()
    runtime = _runtime()
    while True:
        _run_pass(runtime, direct=True, quiet=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
