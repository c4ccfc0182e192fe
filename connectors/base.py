"""The contract every intake source follows (after Airbyte's CDK and Meltano's Singer SDK).

A source reports problems from `check()` without raising, and `read(state)` yields batches of raw
records, each with the checkpoint state that is true once that batch is stored. The caller stores the
batch and the checkpoint in one transaction, so a crash between batches loses and doubles nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from models.records import Channel, RawRecordIn


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Whether a source can be read, and if not, what a person should do about it."""

    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Raw records read in one go, and the checkpoint that holds once they are stored."""

    records: list[RawRecordIn]
    state: dict[str, Any]


class Source(Protocol):
    """An intake source: a mailbox, a file, a webhook inbox."""

    @property
    def name(self) -> str:
        """Unique source name, used as the checkpoint key, e.g. 'imap:sales' or 'file:/path/x.mbox'."""
        ...

    @property
    def channel(self) -> Channel:
        """The channel every record of this source belongs to."""
        ...

    def check(self) -> CheckResult:
        """Report whether the source can be read; never raises."""
        ...

    def read(self, state: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """Yield batches of records after the given checkpoint state (None: from the start)."""
        ...
