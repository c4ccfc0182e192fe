"""Every intake source passes the shared conformance suite; here the IMAP source against real Dovecot."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from connectors.imap import ImapSource
from tests.support.dovecot import DovecotServer, append_messages
from tests.support.source_conformance import SourceConformance

WRONG_PASSWORD = "wrong-password-8c1f"


def _mail(number: int) -> bytes:
    return (
        f"From: Buyer {number} <buyer{number}@example.com>\r\nTo: sales@example.org\r\n"
        f"Subject: Quote request {number}\r\nMessage-ID: <q{number}@example.com>\r\n\r\n"
        f"Please send a quote for {number} licences.\r\n"
    ).encode()


class TestImapConformance(SourceConformance):
    @pytest.fixture
    def expected_count(self) -> int:
        return 7

    @pytest.fixture
    def source(self, dovecot: DovecotServer, imap_folder: str, expected_count: int) -> ImapSource:
        append_messages(dovecot, imap_folder, [_mail(n) for n in range(expected_count)])
        return ImapSource(dovecot.mailbox(folder=imap_folder, batch_size=3))

    @pytest.fixture
    def bad_source(self, dovecot: DovecotServer, imap_folder: str) -> ImapSource:
        return ImapSource(dovecot.mailbox(folder=imap_folder, password=SecretStr(WRONG_PASSWORD)))

    @pytest.fixture
    def secrets(self) -> tuple[str, ...]:
        return (WRONG_PASSWORD,)
