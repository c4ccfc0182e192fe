"""One hostile record must never stop intake: per-record budgets, bisection and worker replacement.

Three layers, cheapest first, so a clean record pays almost nothing:
1. Limits checked before parsing (connectors.mime.check_limits, connectors.bounded_json): a bomb is
   refused in microseconds with the limit it broke.
2. A wall-clock budget per record (`RecordTimer`): a one-shot SIGALRM timer armed around each
   record's parse in the process that parses it (a worker's main thread, or the main process when it
   parses itself on its main thread). Python code and regular expressions (`re` checks for signals)
   are interrupted; the record is quarantined with "took too long to parse". Arming costs two
   `setitimer` calls per record.
3. A watchdog over the workers (`WorkerPool`): a chunk that does not come back in its time (a worker
   stuck in C code that ignores signals) or a worker that dies (a segfault, the kernel's OOM killer)
   gets the pool's processes killed and replaced, and that chunk is prepared again, split in halves
   in fresh single-use processes, until the one record at fault is found and quarantined.

Anything a single record raises during prepare is that record's problem (pipeline.prepare); a failure
that cannot be pinned to one record (a whole batch's write, a whole chunk's classification) is retried
in halves by `bisect` until it can.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

TOO_LONG = "took too long to parse"
DEFAULT_BUDGET_SECONDS = 2.0
# A chunk may take this much longer than its records' budgets together before its worker is killed:
# workers share the cores with the main process, and a loaded machine is slow, not stuck.
CHUNK_SLACK_SECONDS = 30.0

T = TypeVar("T")
R = TypeVar("R")


class PrepareTimeout(BaseException):
    """A record's budget ran out. BaseException, so `except Exception` in parsers cannot swallow it."""


class RecordTimer:
    """A one-shot per-record alarm; does nothing off the main thread or where SIGALRM does not exist."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._armed = False
        self._usable = False

    def __enter__(self) -> RecordTimer:
        self._usable = (
            bool(self.seconds)
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if self._usable:
            self._previous = signal.signal(signal.SIGALRM, self._expired)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._usable:
            self.disarm()
            signal.signal(signal.SIGALRM, self._previous)

    def arm(self) -> None:
        if self._usable:
            self._armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds or 0.0)

    def disarm(self) -> None:
        if self._usable and self._armed:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0.0)

    def _expired(self, signum: int, frame: object) -> None:
        if self._armed:  # a late alarm after disarm() is ignored
            self._armed = False
            raise PrepareTimeout(TOO_LONG)


def problem_text(error: BaseException, what: str = "could not be parsed") -> str:
    """The quarantine reason for an exception: what failed, the exception's class and message."""
    if isinstance(error, PrepareTimeout):
        return TOO_LONG
    return f"{what}: {error.__class__.__name__}: {str(error)[:200]}"


def bisect(
    items: Sequence[T],
    run: Callable[[Sequence[T]], list[R]],
    on_single_failure: Callable[[T, BaseException], R],
) -> list[R]:
    """`run(items)`; when it raises, run each half on its own, down to single items, whose failure
    `on_single_failure` turns into a result. One result per item, in order."""
    try:
        return run(items)
    except (Exception, PrepareTimeout) as error:
        if len(items) == 1:
            return [on_single_failure(items[0], error)]
        log.warning("%d records failed together (%s): retrying in halves", len(items), error)
    middle = len(items) // 2
    return bisect(items[:middle], run, on_single_failure) + bisect(items[middle:], run, on_single_failure)


class WorkerPool:
    """Worker processes that prepare chunks, replaced when one of them dies or overruns."""

    def __init__(
        self,
        workers: int,
        context: multiprocessing.context.BaseContext,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...],
        budget_seconds: float | None,
        *,
        slack_seconds: float = CHUNK_SLACK_SECONDS,
    ) -> None:
        self.workers = workers
        self.slack_seconds = slack_seconds
        self._context = context
        self._initializer = initializer
        self._initargs = initargs
        self.budget_seconds = budget_seconds
        self.replacements = 0
        self.generation = 0  # bumped by replace(): futures of older workers are submitted again
        self._generations: dict[int, int] = {}
        self.executor = self._start(workers)

    def _start(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=self._initializer, initargs=self._initargs
        )

    def submit(self, function: Callable[[list[T]], R], chunk: list[T]) -> Future[R]:
        future = self.executor.submit(function, chunk)
        self._generations[id(future)] = self.generation
        return future

    def deadline(self, size: int) -> float | None:
        """Seconds a chunk of `size` records may take before its worker counts as stuck."""
        if not self.budget_seconds:
            return None
        return self.budget_seconds * size + self.slack_seconds

    def result(
        self,
        future: Future[R],
        chunk: list[T],
        function: Callable[[list[T]], R],
        split: Callable[[list[T], BaseException], R],
    ) -> R:
        """The chunk's result; when its worker died or overran, the pool is replaced and `split`
        prepares the chunk again in isolation (it gets the chunk and what went wrong)."""
        submitted_to = self._generations.pop(id(future), self.generation)
        try:
            return future.result(timeout=self.deadline(len(chunk)))
        except (BrokenProcessPool, CancelledError):
            if submitted_to != self.generation:  # the workers were replaced for another chunk's sake
                return self.result(self.submit(function, chunk), chunk, function, split)
            if not isinstance(sys.exc_info()[1], BrokenProcessPool):
                raise
            log.error("a worker died preparing a chunk of %d records: replacing the workers", len(chunk))
            self.replace()
            return split(chunk, BrokenProcessPool("the worker preparing it died"))
        except FutureTimeout as error:
            log.error(
                "a worker overran its budget on a chunk of %d records: replacing the workers", len(chunk)
            )
            self.replace()
            return split(chunk, error)

    def replace(self) -> None:
        """Kill every worker (a stuck one ignores everything else) and start new ones."""
        self.replacements += 1
        _kill_workers(self.executor)
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._start(self.workers)

    def run_alone(self, function: Callable[[list[T]], R], chunk: list[T]) -> R:
        """Run one chunk in a fresh single-use process, killed if it overruns; raises on any failure."""
        single = self._start(1)
        try:
            future = single.submit(function, chunk)
            try:
                return future.result(timeout=self.deadline(len(chunk)))
            except FutureTimeout:
                _kill_workers(single)
                raise PrepareTimeout(TOO_LONG) from None
        finally:
            single.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    # The executor has no public way to reach its processes; a stuck worker answers nothing else.
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
