"""File imports: `.eml` files, `.mbox` mailboxes, JSONL and CSV of form or chat records, JSON chat exports.

Every record is stored as received, broken ones included (they are quarantined later, with the
reason, never dropped). A record's key is the file's content hash plus its position, so importing the
same file twice stores nothing new, while an edited file is a new source of records.
"""

from __future__ import annotations

import csv
import hashlib
import json
import mailbox
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import CheckResult, SourceBatch
from connectors.bounded_json import load_json
from models.errors import SkippableError
from models.records import Channel, RawRecordIn

EMAIL_SUFFIXES = {".eml", ".mbox", ".mbx"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv", ".json"}
MAX_RECORD_BYTES = 25_000_000


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class FileSource:
    """One file (or every matching file of a folder) read as records of one channel."""

    def __init__(self, path: Path, channel: Channel, *, batch_size: int = 1_000) -> None:
        self.path = path
        self._channel = channel
        self.batch_size = batch_size
        self._name = f"file:{path.resolve()}"  # resolved once: every record carries it

    @property
    def name(self) -> str:
        return self._name

    @property
    def channel(self) -> Channel:
        return self._channel

    def files(self) -> list[Path]:
        """The files this source covers, in a stable order."""
        suffixes = EMAIL_SUFFIXES if self._channel is Channel.EMAIL else RECORD_SUFFIXES
        if self.path.is_dir():
            return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        return [self.path]

    def check(self) -> CheckResult:
        if not self.path.exists():
            return CheckResult(False, f"{self.path} does not exist")
        files = self.files()
        if not files:
            return CheckResult(False, f"{self.path} holds no {self._channel.value} files")
        unreadable = [str(p) for p in files if not p.is_file() or not _readable(p)]
        if unreadable:
            return CheckResult(False, f"cannot read {', '.join(unreadable[:3])}: check permissions")
        return CheckResult(True, f"{len(files)} file(s) to import")

    def read(self, state: dict[str, Any] | None) -> Iterator[SourceBatch]:
        done: dict[str, int] = dict((state or {}).get("positions", {}))
        for path in self.files():
            digest = _file_digest(path)
            already = done.get(digest, 0)
            batch: list[RawRecordIn] = []
            position = 0
            for position, payload in enumerate(self._payloads(path), start=1):
                if position <= already:
                    continue
                batch.append(
                    RawRecordIn(
                        source=self.name,
                        channel=self._channel,
                        external_key=f"{digest}:{position}",
                        payload=payload,
                        received_at=datetime.now(UTC),
                    )
                )
                if len(batch) >= self.batch_size:
                    done[digest] = position
                    yield SourceBatch(batch, {"positions": dict(done)})
                    batch = []
            done[digest] = max(position, already)
            if batch or position == 0:
                yield SourceBatch(batch, {"positions": dict(done)})

    def _payloads(self, path: Path) -> Iterator[bytes]:
        suffix = path.suffix.lower()
        if self._channel is Channel.EMAIL:
            if suffix == ".eml":
                yield path.read_bytes()[:MAX_RECORD_BYTES]
            else:
                box = mailbox.mbox(path, create=False)
                try:
                    for key in box.iterkeys():
                        yield box.get_bytes(key)[:MAX_RECORD_BYTES]
                finally:
                    box.close()
            return
        if suffix in {".jsonl", ".ndjson"}:
            with path.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        yield line.rstrip(b"\r\n")[:MAX_RECORD_BYTES]
        elif suffix == ".csv":
            with path.open("r", encoding="utf-8-sig", newline="") as handle:
                for row in csv.DictReader(handle):
                    # A short row has None values; a long one a None key: keep both visible.
                    clean = {str(k): v for k, v in row.items() if v not in (None, "")}
                    yield json.dumps(clean, ensure_ascii=False).encode()
        else:
            yield from _json_export(path)


def _json_export(path: Path) -> Iterator[bytes]:
    """A JSON export: a list of records, or an object with one list inside; else the file itself."""
    raw = path.read_bytes()
    try:
        data = load_json(raw, tool="JSON export")  # long integers stay text; the record's parse refuses them
    except SkippableError:
        yield raw[:MAX_RECORD_BYTES]  # stored, then quarantined with the parser's reason
        return
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        yield raw[:MAX_RECORD_BYTES]
        return
    for item in data:
        yield json.dumps(item, ensure_ascii=False).encode()


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError:
        return False
    return True


def sniff_channel(path: Path) -> Channel | None:
    """Guess a file's channel from its name, for `triage import` without --channel."""
    suffix = path.suffix.lower()
    if suffix in EMAIL_SUFFIXES:
        return Channel.EMAIL
    lowered = path.name.lower()
    if "chat" in lowered:
        return Channel.CHAT
    if "form" in lowered or suffix == ".csv":
        return Channel.FORM
    return None
