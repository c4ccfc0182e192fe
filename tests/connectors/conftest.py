"""Fixtures for connector tests: one real Dovecot per test session, a fresh folder per test."""

from __future__ import annotations

import uuid

import pytest

from tests.support.corpus import spamassassin_files
from tests.support.dovecot import DovecotServer


@pytest.fixture
def imap_folder(dovecot: DovecotServer) -> str:
    """A new, empty folder of the test's own (left in place: the whole server is removed at the end)."""
    folder = f"t{uuid.uuid4().hex[:12]}"
    client = dovecot.client()
    try:
        client.create_folder(folder)
    finally:
        client.logout()
    return folder


@pytest.fixture(scope="session")
def spamassassin_raw() -> list[bytes]:
    """The SpamAssassin corpus as bytes, in a stable order."""
    return [path.read_bytes() for path in spamassassin_files()]
