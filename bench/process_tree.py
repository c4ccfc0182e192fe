"""Peak memory of a whole process tree: a command and every process it starts.

`ru_maxrss` covers one process, but the pipeline's workers are grandchildren (the fork server forks
them), so the benchmarks sample /proc instead: every 100 ms, the proportional set size (PSS) of the
root process and all its descendants, summed. PSS splits a page shared by several processes (the
workers share what the fork server imported) between them, so the sum is the memory the tree uses,
without counting shared pages once per process as summed RSS would.
"""

from __future__ import annotations

import threading
from pathlib import Path

PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for listing in PROC.glob(f"{pid}/task/*/children"):
        try:
            found += [int(child) for child in listing.read_text().split()]
        except OSError:  # the task ended while we looked
            continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_mb(root: int) -> float:
    """The summed proportional set size of `root` and its descendants now, in MB."""
    pending, total = [root], 0
    while pending:
        pid = pending.pop()
        total += _pss_kib(pid)
        pending += _children(pid)
    return total / 1024


class PeakTreeMemory:
    """Samples a process tree in a background thread until stopped; `peak_mb` is the largest sum seen."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakTreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, tree_pss_mb(self.root))
            self._stop.wait(self.interval)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` and its live descendants have used so far (/proc/PID/stat, clock
    ticks): a server with worker processes (uvicorn --workers) is counted whole."""
    import os

    pending, ticks = [pid], 0
    while pending:
        current = pending.pop()
        try:
            fields = (PROC / str(current) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        ticks += int(fields[11]) + int(fields[12])
        pending += _children(current)
    return ticks / os.sysconf("SC_CLK_TCK")
