"""The shared public data sets beside the repo (`<repo>/../shared/data`), or a skip with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SPAMASSASSIN_COUNT = 6_046


def spamassassin_files() -> list[Path]:
    """All 6,046 SpamAssassin mails in a stable order, or skip when the data sets are absent."""
    folder = SHARED_DATA / "spamassassin"
    if not folder.is_dir():
        pytest.skip(f"{folder.resolve()} is absent: the public data sets live beside the repo in CI only")
    return sorted(folder.rglob("*.txt"))
