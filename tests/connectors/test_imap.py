"""The IMAP source against a real Dovecot on 127.0.0.1."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from config.policy import load_policy
from config.settings import DEFAULT_POLICY_DIR
from connectors.base import SourceBatch
from connectors.enrichment import bundled_firmographics
from connectors.imap import ImapMailbox, ImapSource, parse_external_key, uid_set
from connectors.mime import parse_email
from models.errors import ConfigError, FatalError, RetriableError, SkippableError
from models.records import Channel, EnquiryIn
from pipeline.intake import ingest_source
from pipeline.process import PipelineContext, process_pending
from sla.policies import load_policies
from sla.service import timer_starter
from store import raw as raw_store
from store.db import make_engine, make_session_factory, upgrade_schema
from store.tables import Enquiry, EnquiryMessage, RawRecord
from tests.support.dovecot import DovecotServer, append_messages, free_port, reset_uidvalidity


def _mail(number: int) -> bytes:
    return (
        f"From: Buyer {number} <buyer{number}@example.com>\r\nTo: sales@example.org\r\n"
        f"Subject: Pricing question {number}\r\nMessage-ID: <p{number}@example.com>\r\n"
        f"Date: Mon, 02 Nov 2026 09:0{number % 10}:00 +0100\r\n\r\n"
        f"How much are {number} seats per year?\r\n"
    ).encode()


def _flags(server: DovecotServer, folder: str) -> dict[int, tuple[bytes, ...]]:
    client = server.client()
    try:
        client.select_folder(folder, readonly=True)
        return {int(uid): tuple(flags) for uid, flags in client.get_flags(client.search(["ALL"])).items()}
    finally:
        client.logout()


def _count(server: DovecotServer, folder: str) -> int:
    client = server.client()
    try:
        return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def test_settings_need_a_password_or_a_token() -> None:
    with pytest.raises(ValidationError, match="password or an oauth2_token"):
        ImapMailbox(host="imap.example.com", username="sales")
    mailbox = ImapMailbox(name="sales", host="imap.example.com", username="s", oauth2_token=SecretStr("t0k"))
    assert mailbox.source_name == "imap:sales"
    assert (mailbox.port, mailbox.ssl, mailbox.folder, mailbox.mark_seen) == (993, True, "INBOX", False)
    assert "t0k" not in repr(mailbox)


def test_bad_password_check_says_what_to_fix(dovecot: DovecotServer, imap_folder: str) -> None:
    source = ImapSource(dovecot.mailbox(folder=imap_folder, password=SecretStr("nope-nope")))
    result = source.check()
    assert not result.ok
    assert "login as 'test' refused" in result.message
    assert "password" in result.message
    assert "nope-nope" not in result.message


def test_bad_password_read_raises_fatal(dovecot: DovecotServer, imap_folder: str) -> None:
    source = ImapSource(dovecot.mailbox(folder=imap_folder, password=SecretStr("nope-nope")))
    with pytest.raises(FatalError, match="check the username and password"):
        list(source.read(None))


def test_connection_refused_is_retriable_and_check_reports_it() -> None:
    mailbox = ImapMailbox(
        host="127.0.0.1", port=free_port(), ssl=False, username="u", password=SecretStr("p")
    )
    source = ImapSource(mailbox)
    result = source.check()
    assert not result.ok and "connection refused" in result.message
    with pytest.raises(RetriableError, match="connection refused"):
        list(source.read(None))


def test_missing_folder_is_fatal_with_the_folder_named(dovecot: DovecotServer) -> None:
    source = ImapSource(dovecot.mailbox(folder="NoSuchFolder"))
    assert "cannot open folder 'NoSuchFolder'" in source.check().message
    with pytest.raises(FatalError, match="NoSuchFolder"):
        list(source.read(None))


def test_check_reports_a_missing_move_to_folder(dovecot: DovecotServer, imap_folder: str) -> None:
    result = ImapSource(dovecot.mailbox(folder=imap_folder, move_to="Nowhere")).check()
    assert not result.ok and "'Nowhere' (move_to) does not exist" in result.message


def test_read_from_empty_state_yields_every_mail_in_batches(dovecot: DovecotServer, imap_folder: str) -> None:
    mails = [_mail(n) for n in range(7)]
    append_messages(dovecot, imap_folder, mails)
    source = ImapSource(dovecot.mailbox(folder=imap_folder, batch_size=3))
    batches = list(source.read(None))
    assert [len(batch.records) for batch in batches] == [3, 3, 1]
    records = [record for batch in batches for record in batch.records]
    assert [record.payload for record in records] == mails
    validity = batches[0].state["uidvalidity"]
    assert [record.external_key for record in records] == [f"{validity}:{uid}" for uid in range(1, 8)]
    assert [batch.state for batch in batches] == [
        {"uidvalidity": validity, "last_uid": 3},
        {"uidvalidity": validity, "last_uid": 6},
        {"uidvalidity": validity, "last_uid": 7},
    ]
    assert all(record.source == "imap:test" and record.channel is Channel.EMAIL for record in records)
    # The server's INTERNALDATE, as aware UTC (the server's clock, which need not be ours).
    client = dovecot.client()
    try:
        client.select_folder(imap_folder, readonly=True)
        dates = client.fetch(list(range(1, 8)), ["INTERNALDATE"])
    finally:
        client.logout()
    server_times = [dates[uid][b"INTERNALDATE"].astimezone(UTC) for uid in range(1, 8)]
    assert [record.received_at for record in records] == server_times
    assert all(record.received_at.utcoffset() == timedelta(0) for record in records)


def test_internaldate_is_the_received_time(dovecot: DovecotServer, imap_folder: str) -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    client = dovecot.client()
    try:
        client.append(imap_folder, _mail(1), msg_time=when)
    finally:
        client.logout()
    (batch,) = ImapSource(dovecot.mailbox(folder=imap_folder)).read(None)
    assert batch.records[0].received_at == when


def test_replay_from_checkpoint_yields_only_new_mail(dovecot: DovecotServer, imap_folder: str) -> None:
    append_messages(dovecot, imap_folder, [_mail(n) for n in range(3)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    checkpoint = list(source.read(None))[-1].state
    assert list(source.read(checkpoint)) == []
    append_messages(dovecot, imap_folder, [_mail(9)])
    (batch,) = list(source.read(checkpoint))
    assert [record.payload for record in batch.records] == [_mail(9)]
    assert batch.state == {"uidvalidity": checkpoint["uidvalidity"], "last_uid": 4}


def test_uidvalidity_change_rereads_the_whole_folder(
    dovecot: DovecotServer, imap_folder: str, caplog: pytest.LogCaptureFixture
) -> None:
    mails = [_mail(n) for n in range(4)]
    append_messages(dovecot, imap_folder, mails)
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    checkpoint = list(source.read(None))[-1].state
    reset_uidvalidity(dovecot, imap_folder, mails)
    with caplog.at_level(logging.WARNING, logger="connectors.imap"):
        batches = list(source.read(checkpoint))
    new_validity = batches[-1].state["uidvalidity"]
    assert new_validity != checkpoint["uidvalidity"]
    assert [record.payload for batch in batches for record in batch.records] == mails
    assert all(parse_external_key(r.external_key)[0] == new_validity for b in batches for r in b.records)
    assert "UIDVALIDITY" in caplog.text and "re-reading the whole folder" in caplog.text
    assert list(source.read(batches[-1].state)) == []


def test_uidvalidity_change_on_an_empty_folder_still_moves_the_checkpoint(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    (batch,) = list(source.read({"uidvalidity": 1, "last_uid": 50}))
    assert batch.records == [] and batch.state["uidvalidity"] != 1 and batch.state["last_uid"] == 0


def test_reading_never_sets_seen(dovecot: DovecotServer, imap_folder: str) -> None:
    append_messages(dovecot, imap_folder, [_mail(n) for n in range(3)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, mark_seen=False))
    for batch in source.read(None):
        source.after_stored(batch)
    assert all(b"\\Seen" not in flags for flags in _flags(dovecot, imap_folder).values())


def test_mark_seen_marks_only_after_store(dovecot: DovecotServer, imap_folder: str) -> None:
    append_messages(dovecot, imap_folder, [_mail(n) for n in range(4)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, mark_seen=True, batch_size=2))
    batches = source.read(None)
    first = next(batches)
    assert all(b"\\Seen" not in flags for flags in _flags(dovecot, imap_folder).values())
    source.after_stored(first)
    second = next(batches)
    assert list(batches) == []
    flags = _flags(dovecot, imap_folder)
    assert [b"\\Seen" in flags[uid] for uid in (1, 2, 3, 4)] == [True, True, False, False]
    source.after_stored(second)  # the read has ended: after_stored opens its own connection
    assert all(b"\\Seen" in flags for flags in _flags(dovecot, imap_folder).values())


def test_move_to_moves_stored_batches_only(dovecot: DovecotServer, imap_folder: str) -> None:
    done = f"{imap_folder}-done"
    client = dovecot.client()
    client.create_folder(done)
    client.logout()
    append_messages(dovecot, imap_folder, [_mail(n) for n in range(5)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, move_to=done, batch_size=2))
    assert source.check().ok
    batches = source.read(None)
    first = next(batches)
    assert _count(dovecot, imap_folder) == 5
    source.after_stored(first)
    assert (_count(dovecot, imap_folder), _count(dovecot, done)) == (3, 2)
    rest = list(batches)  # moving did not disturb the UIDs still to be fetched
    assert sum(len(batch.records) for batch in rest) == 3
    for batch in rest:
        source.after_stored(batch)
    assert (_count(dovecot, imap_folder), _count(dovecot, done)) == (0, 5)
    source.after_stored(first)  # again: nothing left to move, no error
    assert list(source.read(rest[-1].state)) == []


def test_after_stored_ignores_mail_of_an_older_uidvalidity(dovecot: DovecotServer, imap_folder: str) -> None:
    append_messages(dovecot, imap_folder, [_mail(1)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, mark_seen=True))
    (batch,) = list(source.read(None))
    stale = SourceBatch(
        records=[batch.records[0].model_copy(update={"external_key": "1:1"})], state=batch.state
    )
    source.after_stored(stale)
    assert b"\\Seen" not in _flags(dovecot, imap_folder)[1]


@pytest.mark.slow
def test_spamassassin_corpus_reads_and_parses_completely(
    dovecot: DovecotServer, imap_folder: str, spamassassin_raw: list[bytes]
) -> None:
    """All 6,046 mails: each is read once and parses to an enquiry or a clean SkippableError."""
    append_messages(dovecot, imap_folder, spamassassin_raw)
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    started = time.perf_counter()
    outcomes = {"enquiry": 0, "skipped": 0, "quarantined": 0}
    keys: set[str] = set()
    batches = list(source.read(None))
    for batch in batches:
        for record in batch.records:
            keys.add(record.external_key)
            try:
                parsed = parse_email(record.payload, source=record.source, received_at=record.received_at)
            except SkippableError:
                outcomes["quarantined"] += 1
                continue
            assert isinstance(parsed, EnquiryIn)
            outcomes["skipped" if parsed.skip_reason else "enquiry"] += 1
    elapsed = time.perf_counter() - started
    assert len(keys) == len(spamassassin_raw) == 6_046
    assert sum(outcomes.values()) == 6_046
    assert outcomes["skipped"] >= 5  # the corpus holds a few real bounces
    assert batches[-1].state["last_uid"] == 6_046
    assert list(source.read(batches[-1].state)) == []
    print(f"read+parse {6_046 / elapsed:.0f} mails/s, outcomes {outcomes}")


# --- end to end: Dovecot → raw records → enquiries ------------------------------------------------

FINAL_STATUSES = {"enquiry", "threaded", "skipped", "quarantined", "duplicate"}


def _pipeline_context() -> PipelineContext:
    # No model: every enquiry goes to people. The intake books are what is under test here.
    return PipelineContext(
        policy=load_policy(DEFAULT_POLICY_DIR),
        firmographics=bundled_firmographics(),
        model=None,
        start_timers=timer_starter(load_policies()),
    )


def _raw_statuses(factory: sessionmaker[Session]) -> Counter[str]:
    with factory() as session:
        rows = session.execute(sa.select(RawRecord.status, sa.func.count()).group_by(RawRecord.status))
        return Counter({status: int(count) for status, count in rows})


def _row_count(factory: sessionmaker[Session], table: type[Any]) -> int:
    with factory() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


@pytest.mark.slow
def test_spamassassin_end_to_end_books_balance_and_rerun_adds_nothing(
    dovecot: DovecotServer, imap_folder: str, spamassassin_raw: list[bytes], tmp_path: Path
) -> None:
    """6,046 mails in: enquiry + threaded + skipped + quarantined + duplicate = 6,046; rerun adds nothing."""
    factory = _sqlite_factory(tmp_path)
    append_messages(dovecot, imap_folder, spamassassin_raw)
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    context = _pipeline_context()

    started = time.perf_counter()
    ingested = ingest_source(factory, source)
    processed = process_pending(factory, context)
    elapsed = time.perf_counter() - started
    assert (ingested.read, ingested.stored) == (6_046, 6_046)
    statuses = _raw_statuses(factory)
    assert set(statuses) <= FINAL_STATUSES and sum(statuses.values()) == 6_046
    assert sum(processed.outcomes.values()) == 6_046
    assert statuses["enquiry"] == _row_count(factory, Enquiry) > 4_000
    assert statuses["skipped"] >= 5 and statuses["threaded"] > 0
    print(f"Dovecot → stored enquiries: {6_046 / elapsed:.0f} mails/s; {dict(statuses)}")

    before = (
        _row_count(factory, RawRecord),
        _row_count(factory, Enquiry),
        _row_count(factory, EnquiryMessage),
    )
    again = ingest_source(factory, source)
    assert (again.read, again.stored) == (0, 0)
    assert process_pending(factory, context).processed == 0
    assert (
        _row_count(factory, RawRecord),
        _row_count(factory, Enquiry),
        _row_count(factory, EnquiryMessage),
    ) == before


@pytest.mark.slow
def test_uidvalidity_change_end_to_end_opens_nothing_twice(
    dovecot: DovecotServer, imap_folder: str, spamassassin_raw: list[bytes], tmp_path: Path
) -> None:
    """A recreated folder is read again in full under its new UIDVALIDITY; the pipeline sees duplicates."""
    factory = _sqlite_factory(tmp_path)
    mails = spamassassin_raw[:: len(spamassassin_raw) // 600][:600]  # a spread over all five folders
    append_messages(dovecot, imap_folder, mails)
    source = ImapSource(dovecot.mailbox(folder=imap_folder))
    context = _pipeline_context()
    ingest_source(factory, source)
    first = process_pending(factory, context).outcomes
    before = (_row_count(factory, Enquiry), _row_count(factory, EnquiryMessage))

    reset_uidvalidity(dovecot, imap_folder, mails)
    reread = ingest_source(factory, source)
    assert (reread.read, reread.stored) == (600, 600)  # new UIDVALIDITY: new keys, same content
    second = process_pending(factory, context).outcomes
    assert set(second) <= {"duplicate", "skipped", "quarantined"}, second
    assert second["duplicate"] == first["enquiry"] + first["threaded"] + first["duplicate"]
    assert (_row_count(factory, Enquiry), _row_count(factory, EnquiryMessage)) == before


_INGEST_CHILD = """
import sys
from connectors.imap import ImapSource
from connectors.imap_settings import ImapMailbox
from pipeline.intake import ingest_source
from store.db import make_engine, make_session_factory
url, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mailbox = ImapMailbox(name="test", host="127.0.0.1", port=port, ssl=False, username="test", password="secret",
                      folder=folder, batch_size=50)
ingest_source(make_session_factory(make_engine(url)), ImapSource(mailbox))
"""


@pytest.mark.slow
def test_ingest_killed_mid_run_loses_and_doubles_nothing(
    dovecot: DovecotServer, imap_folder: str, spamassassin_raw: list[bytes], tmp_path: Path
) -> None:
    """SIGKILL an ingesting process part-way, restart: every mail is stored exactly once."""
    factory = _sqlite_factory(tmp_path)
    url = str(factory.kw["bind"].url)
    append_messages(dovecot, imap_folder, spamassassin_raw)
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _INGEST_CHILD, url, str(dovecot.port), imap_folder], cwd=repo,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        stored_at_kill = 0
        while time.monotonic() < deadline and child.poll() is None:
            stored_at_kill = _row_count(factory, RawRecord)
            if stored_at_kill >= 500:
                break
            time.sleep(0.02)
        assert child.poll() is None, f"the child ended before it could be killed: {child.stderr!r}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stderr is not None:
            child.stderr.close()
    stored_at_kill = _row_count(factory, RawRecord)
    assert 0 < stored_at_kill < 6_046, "the kill must land mid-run"
    with factory() as session:
        checkpoint = raw_store.get_checkpoint(session, "imap:test")
    assert checkpoint is not None and checkpoint["last_uid"] == stored_at_kill  # stored with its batch

    resumed = ingest_source(factory, ImapSource(dovecot.mailbox(folder=imap_folder, batch_size=50)))
    assert resumed.read == resumed.stored == 6_046 - stored_at_kill
    with factory() as session:
        keys = list(session.scalars(sa.select(RawRecord.external_key)))
        payloads = list(session.scalars(sa.select(RawRecord.payload).order_by(RawRecord.id)))
    assert len(keys) == len(set(keys)) == 6_046
    # Stored exactly as the server sent them: the files' bytes, give or take the CRs of line ends.
    assert [p.replace(b"\r", b"") for p in payloads] == [r.replace(b"\r", b"") for r in spamassassin_raw]


def _sqlite_factory(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'triage.db'}")
    upgrade_schema(engine)
    return make_session_factory(engine)


# --- TLS ------------------------------------------------------------------------------------------


def _tls_server(dovecot: DovecotServer) -> tuple[int, Path]:
    if not dovecot.tls_port or dovecot.ca_file is None:
        pytest.skip("trustme not installed: no TLS certificate for Dovecot")
    return dovecot.tls_port, dovecot.ca_file


def test_implicit_tls_with_the_servers_ca_reads(dovecot: DovecotServer, imap_folder: str) -> None:
    port, ca_file = _tls_server(dovecot)
    append_messages(dovecot, imap_folder, [_mail(1)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, port=port, ssl=True, ssl_ca_file=ca_file))
    assert source.check().ok
    assert [len(batch.records) for batch in source.read(None)] == [1]


def test_starttls_with_the_servers_ca_reads(dovecot: DovecotServer, imap_folder: str) -> None:
    _, ca_file = _tls_server(dovecot)
    append_messages(dovecot, imap_folder, [_mail(1)])
    source = ImapSource(dovecot.mailbox(folder=imap_folder, ssl=False, starttls=True, ssl_ca_file=ca_file))
    assert [len(batch.records) for batch in source.read(None)] == [1]


def test_untrusted_certificate_is_fatal_and_says_what_to_set(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    port, _ = _tls_server(dovecot)
    source = ImapSource(dovecot.mailbox(folder=imap_folder, port=port, ssl=True))
    result = source.check()
    assert (
        not result.ok and "certificate is not trusted" in result.message and "ssl_ca_file" in result.message
    )
    with pytest.raises(FatalError, match="ssl_ca_file"):
        list(source.read(None))


def test_tls_against_a_plain_port_is_fatal(dovecot: DovecotServer, imap_folder: str) -> None:
    _, ca_file = _tls_server(dovecot)
    source = ImapSource(dovecot.mailbox(folder=imap_folder, ssl=True, ssl_ca_file=ca_file))  # plain port
    with pytest.raises(FatalError, match="TLS failed"):
        list(source.read(None))


def test_batches_close_early_at_the_byte_budget(dovecot: DovecotServer, imap_folder: str) -> None:
    big = [_mail(n).replace(b"per year?", b"per year?\r\n" + b"x" * 78 * 5_000) for n in range(5)]  # ~400 kB
    append_messages(dovecot, imap_folder, big)
    source = ImapSource(dovecot.mailbox(folder=imap_folder, batch_size=100, max_batch_bytes=1_000_000))
    batches = list(source.read(None))
    assert [len(batch.records) for batch in batches] == [2, 2, 1]
    assert [record.payload for batch in batches for record in batch.records] == big


def test_wrong_oauth2_token_is_a_login_failure_naming_the_token(
    dovecot: DovecotServer, imap_folder: str
) -> None:
    source = ImapSource(
        dovecot.mailbox(folder=imap_folder, password=None, oauth2_token=SecretStr("ya29.bad"))
    )
    result = source.check()
    assert not result.ok and "oauth2_token" in result.message and "ya29.bad" not in result.message
    with pytest.raises(FatalError, match="oauth2_token"):
        list(source.read(None))


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    mailbox = ImapMailbox(
        host="127.0.0.1",
        port=free_port(),
        username="u",
        password=SecretStr("p"),
        ssl_ca_file=tmp_path / "no.pem",
    )
    source = ImapSource(mailbox)
    result = source.check()
    assert not result.ok and "ssl_ca_file" in result.message
    with pytest.raises(ConfigError, match="cannot be used as a CA bundle"):
        list(source.read(None))


def test_uid_set_collapses_runs() -> None:
    assert uid_set([5, 1, 2, 3, 7, 8, 10]) == "1:3,5,7:8,10"
    assert uid_set([42]) == "42"
    assert uid_set(list(range(1, 5_001))) == "1:5000"
