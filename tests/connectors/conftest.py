"""Fixtures for connector tests: one real Dovecot per test session, a fresh folder per test."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.support.corpus import spamassassin_files
from tests.support.dovecot import DovecotServer, dovecot_binary, make_root, run_dovecot


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A running Dovecot on 127.0.0.1 with user test/secret."""
    if dovecot_binary() is None:
        pytest.skip("dovecot not installed: apt-get install dovecot-imapd")
    root = make_root()
    try:
        with run_dovecot(root) as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
