"""An IMAP mailbox as an intake source (imapclient).

The checkpoint is `{"uidvalidity": int, "last_uid": int}`. Each `read` selects the folder, lists the
UIDs above `last_uid` and fetches them with `BODY.PEEK[]`, which never sets \\Seen, in batches of at
most `batch_size` mails and about `max_batch_bytes`, so memory stays flat whatever the mailbox holds.

When the folder's UIDVALIDITY differs from the checkpoint's, the old UIDs mean nothing any more, so
the whole folder is read again from UID 1 under the new validity: the store recognises mail it
already holds by content, which turns this into a deduplicated re-read rather than a skip.

How a caller uses it (see `connectors.base`):

    source = ImapSource(mailbox)
    for batch in source.read(checkpoint):
        store batch.records and batch.state in one transaction   # commit first ...
        source.after_stored(batch)                               # ... then mark \\Seen / move

`after_stored` only does something when `mark_seen` or `move_to` is configured; calling it before the
commit could move mail that a crash then loses from the store.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from connectors.base import CheckResult, SourceBatch
from connectors.imap_settings import ImapMailbox
from models.errors import ConfigError, FatalError, RetriableError, TriageError
from models.records import Channel, RawRecordIn

__all__ = ["ImapMailbox", "ImapSource", "SentFolderSource", "parse_external_key", "uid_set"]

logger = logging.getLogger(__name__)

_FETCH_ITEMS = [b"BODY.PEEK[]", b"INTERNALDATE"]


def uid_set(uids: list[int]) -> str:
    """An IMAP sequence set with runs collapsed ("1:500,502"): servers cap command lines (Dovecot 64 kB)."""
    ordered = sorted(set(uids))
    runs: list[str] = []
    start = previous = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == previous + 1:
            previous = uid
            continue
        runs.append(str(start) if start == previous else f"{start}:{previous}")
        if uid is not None:
            start = previous = uid
    return ",".join(runs)


def parse_external_key(external_key: str) -> tuple[int, int]:
    """Split an IMAP record key 'UIDVALIDITY:UID' into its two numbers."""
    validity, _, uid = external_key.partition(":")
    return int(validity), int(uid)


class ImapSource:
    """Reads one folder of one mailbox incrementally; see the module docstring for the caller's part."""

    def __init__(self, mailbox: ImapMailbox) -> None:
        self.mailbox = mailbox
        # The connection of a `read` in progress and the UIDVALIDITY it saw; None between reads.
        self._client: IMAPClient | None = None
        self._client_uidvalidity = 0

    @property
    def name(self) -> str:
        """'imap:<mailbox name>': the records' source and the checkpoint key."""
        return self.mailbox.source_name

    @property
    def channel(self) -> Channel:
        """Always EMAIL."""
        return Channel.EMAIL

    def check(self) -> CheckResult:
        """Log in, open the folder read-only and report what a person should fix; never raises."""
        mailbox = self.mailbox
        try:
            client = self._connect()
            try:
                info = self._select(client, readonly=True)
                if mailbox.move_to is not None and not client.folder_exists(mailbox.move_to):
                    return CheckResult(
                        ok=False,
                        message=f"mailbox {mailbox.name!r}: folder {mailbox.move_to!r} (move_to) does not "
                        f"exist on {mailbox.host}; create it or change move_to",
                    )
            finally:
                _close_quietly(client)
        except TriageError as error:
            return CheckResult(ok=False, message=str(error))
        except Exception as error:  # check() must never raise, whatever the library does
            return CheckResult(ok=False, message=f"mailbox {mailbox.name!r}: unexpected {error!r}")
        return CheckResult(
            ok=True,
            message=f"mailbox {mailbox.name!r}: {mailbox.folder!r} on {mailbox.host} has "
            f"{int(info.get(b'EXISTS', 0))} messages (UIDVALIDITY {int(info[b'UIDVALIDITY'])})",
        )

    def read(self, state: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """Yield the mail after `state` in batches of at most `batch_size`, oldest UID first.

        Each batch's `state` is the checkpoint to store with it. Raises `FatalError` (credentials,
        missing folder, TLS trust) or `RetriableError` (connection refused, timeout, dropped link).
        """
        client = self._connect()
        self._client = client
        try:
            info = self._select(client, readonly=not self._writes_after_store)
            uidvalidity = int(info[b"UIDVALIDITY"])
            self._client_uidvalidity = uidvalidity
            last_uid = self._resume_uid(state, uidvalidity)
            uids = self._uids_after(client, last_uid)
            if not uids and (state or {}).get("uidvalidity") != uidvalidity:
                # Nothing to read, but the checkpoint must learn the new validity.
                yield SourceBatch(records=[], state={"uidvalidity": uidvalidity, "last_uid": last_uid})
            for chunk in self._chunks(client, uids):
                records = self._fetch(client, chunk, uidvalidity)
                yield SourceBatch(records=records, state={"uidvalidity": uidvalidity, "last_uid": chunk[-1]})
        except (IMAPClientError, OSError) as error:
            raise self._translate(error) from error
        finally:
            self._client = None
            _close_quietly(client)

    def after_stored(self, batch: SourceBatch) -> None:
        """Mark the batch's mail \\Seen and/or move it, as configured. Call only after the commit.

        Safe to call again for the same batch (mail already moved is simply not found). Uses the
        connection of a `read` in progress, or opens its own.
        """
        if not self._writes_after_store or not batch.records:
            return
        keys = [parse_external_key(record.external_key) for record in batch.records]
        reading = self._client
        client = reading if reading is not None else self._connect()
        try:
            self._apply_after_store(client, keys)
        except (IMAPClientError, OSError) as error:
            raise self._translate(error) from error
        finally:
            if client is not reading:
                _close_quietly(client)

    # --- internals -------------------------------------------------------------------------------

    @property
    def _writes_after_store(self) -> bool:
        return self.mailbox.mark_seen or self.mailbox.move_to is not None

    def _connect(self) -> IMAPClient:
        mailbox = self.mailbox
        context: ssl.SSLContext | None = None
        if mailbox.ssl or mailbox.starttls:
            cafile = str(mailbox.ssl_ca_file) if mailbox.ssl_ca_file is not None else None
            try:
                context = ssl.create_default_context(cafile=cafile)
            except OSError as error:  # missing file, or not a PEM bundle (ssl.SSLError)
                raise ConfigError(
                    f"mailbox {mailbox.name!r}: ssl_ca_file {cafile!r} cannot be used as a CA bundle "
                    f"({error})"
                ) from error
        try:
            client = IMAPClient(
                mailbox.host,
                port=mailbox.port,
                ssl=mailbox.ssl,
                ssl_context=context,
                timeout=SocketTimeout(connect=mailbox.timeout_seconds, read=mailbox.timeout_seconds),
            )
        except (IMAPClientError, OSError) as error:
            raise self._translate(error) from error
        # Aware datetimes straight from the server instead of naive local times.
        client.normalise_times = False
        try:
            if mailbox.starttls:
                client.starttls(context)
            if mailbox.oauth2_token is not None:
                client.oauth2_login(mailbox.username, mailbox.oauth2_token.get_secret_value())
            else:
                assert mailbox.password is not None  # guaranteed by ImapMailbox's validator
                client.login(mailbox.username, mailbox.password.get_secret_value())
        except (IMAPClientError, OSError) as error:
            _close_quietly(client)
            raise self._translate(error) from error
        return client

    def _select(self, client: IMAPClient, *, readonly: bool) -> dict[bytes, Any]:
        mailbox = self.mailbox
        try:
            info: dict[bytes, Any] = client.select_folder(mailbox.folder, readonly=readonly)
        except IMAPClientAbortError as error:
            raise self._translate(error) from error
        except IMAPClientError as error:
            raise FatalError(
                f"mailbox {mailbox.name!r}: cannot open folder {mailbox.folder!r} on {mailbox.host} "
                f"({_server_text(error)}); check the folder name (case and hierarchy separator)"
            ) from error
        return info

    def _resume_uid(self, state: dict[str, Any] | None, uidvalidity: int) -> int:
        if not state:
            return 0
        if int(state.get("uidvalidity", -1)) != uidvalidity:
            logger.warning(
                "source %s: UIDVALIDITY of %r changed from %s to %s; re-reading the whole folder from UID 1 "
                "(mail already stored is recognised by content and not doubled)",
                self.name,
                self.mailbox.folder,
                state.get("uidvalidity"),
                uidvalidity,
            )
            return 0
        return int(state.get("last_uid", 0))

    def _uids_after(self, client: IMAPClient, last_uid: int) -> list[int]:
        found = client.search(["UID", f"{last_uid + 1}:*"])
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(int(uid) for uid in found if int(uid) > last_uid)

    def _chunks(self, client: IMAPClient, uids: list[int]) -> Iterator[list[int]]:
        """UIDs in fetch order, at most `batch_size` mails and about `max_batch_bytes` per chunk.

        Sizes come from RFC822.SIZE, asked for a window of UIDs at a time, so that a run of huge mails
        cannot make one batch hold gigabytes.
        """
        batch_size, budget = self.mailbox.batch_size, self.mailbox.max_batch_bytes
        # imapclient's fetch needs the UIDs listed one by one (it filters its answer by them), so the
        # window is capped to keep the command line under servers' limits (Dovecot: 64 kB).
        window = min(batch_size * 10, 5_000)
        chunk: list[int] = []
        chunk_bytes = 0
        for start in range(0, len(uids), window):
            part = uids[start : start + window]
            sizes = client.fetch(part, [b"RFC822.SIZE"])
            for uid in part:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                if chunk and (len(chunk) >= batch_size or chunk_bytes + size > budget):
                    yield chunk
                    chunk, chunk_bytes = [], 0
                chunk.append(uid)
                chunk_bytes += size
        if chunk:
            yield chunk

    def _fetch(self, client: IMAPClient, uids: list[int], uidvalidity: int) -> list[RawRecordIn]:
        response = client.fetch(uids, _FETCH_ITEMS)
        records: list[RawRecordIn] = []
        for uid in uids:
            item = response.get(uid)
            if item is None:
                continue  # expunged between SEARCH and FETCH: nothing to store
            payload = item.get(b"BODY[]")
            if not isinstance(payload, bytes):
                payload = b""  # the server has no body for this UID; the parser quarantines it
            records.append(
                RawRecordIn(
                    source=self.name,
                    channel=Channel.EMAIL,
                    external_key=f"{uidvalidity}:{uid}",
                    payload=payload,
                    received_at=_as_utc(item.get(b"INTERNALDATE")),
                )
            )
        return records

    def _apply_after_store(self, client: IMAPClient, keys: list[tuple[int, int]]) -> None:
        mailbox = self.mailbox
        if self._client is client:
            uidvalidity = self._client_uidvalidity
        else:
            uidvalidity = int(self._select(client, readonly=False)[b"UIDVALIDITY"])
        uids = [uid for validity, uid in keys if validity == uidvalidity]
        if len(uids) < len(keys):
            logger.warning(
                "source %s: %d stored mails belong to an older UIDVALIDITY; not marking or moving them",
                self.name,
                len(keys) - len(uids),
            )
        if not uids:
            return
        if mailbox.mark_seen:
            client.add_flags(uid_set(uids), [b"\\Seen"], silent=True)
        if mailbox.move_to is not None:
            self._move(client, uids, mailbox.move_to)

    def _move(self, client: IMAPClient, uids: list[int], folder: str) -> None:
        if not client.folder_exists(folder):
            raise ConfigError(
                f"mailbox {self.mailbox.name!r}: move_to folder {folder!r} does not exist on "
                f"{self.mailbox.host}; create it or change move_to"
            )
        if client.has_capability("MOVE"):
            client.move(uid_set(uids), folder)
        elif client.has_capability("UIDPLUS"):
            client.copy(uid_set(uids), folder)
            client.delete_messages(uid_set(uids), silent=True)
            client.uid_expunge(uid_set(uids))
        else:
            raise FatalError(
                f"mailbox {self.mailbox.name!r}: {self.mailbox.host} supports neither MOVE nor UIDPLUS, "
                "so mail cannot be moved safely; unset move_to"
            )

    def _translate(self, error: BaseException) -> TriageError:
        """Map library and socket failures onto how the caller should react."""
        mailbox = self.mailbox
        where = f"mailbox {mailbox.name!r} ({mailbox.host}:{mailbox.port})"
        if isinstance(error, TriageError):
            return error
        if isinstance(error, LoginError):
            secret = "oauth2_token (it may have expired)" if mailbox.oauth2_token else "password"
            return FatalError(
                f"{where}: login as {mailbox.username!r} refused ({_server_text(error)}); check the "
                f"username and {secret} of this mailbox"
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            return FatalError(
                f"{where}: the server's TLS certificate is not trusted ({error.verify_message}); set "
                "ssl_ca_file to its CA bundle or fix the host name"
            )
        if isinstance(error, ssl.SSLError):
            return FatalError(
                f"{where}: TLS failed ({error.reason or error}); check that the port speaks TLS "
                "(ssl=true for 993, starttls=true or ssl=false for 143)"
            )
        if isinstance(error, socket.gaierror):
            if error.errno == socket.EAI_AGAIN:
                return RetriableError(f"{where}: name lookup failed for now ({error}); will retry")
            return FatalError(f"{where}: host name not found ({error}); check the host setting")
        if isinstance(error, ConnectionRefusedError):
            return RetriableError(f"{where}: connection refused; is the server up and the port right?")
        if isinstance(error, TimeoutError):
            return RetriableError(f"{where}: no answer within {mailbox.timeout_seconds:g} s; will retry")
        if isinstance(error, IMAPClientAbortError | OSError):
            return RetriableError(f"{where}: connection lost ({error}); will retry")
        if isinstance(error, IMAPClientError):
            return RetriableError(f"{where}: server said {_server_text(error)}; will retry")
        return RetriableError(f"{where}: {error!r}")


def _as_utc(value: object) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    # A server that sends no INTERNALDATE: the time we read it is the best we know.
    return datetime.now(UTC)


def _server_text(error: BaseException) -> str:
    text = str(error.args[0] if error.args else error)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text[:200]


def _close_quietly(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the link may already be gone; closing must not mask the real error
        try:
            client.shutdown()
        except Exception:
            logger.debug("closing an IMAP connection failed", exc_info=True)


class SentFolderSource(ImapSource):
    """A mailbox's Sent folder as a source of its own ('imap:<name>:sent', its own checkpoint).

    What it reads is the team's outbound mail: the pipeline (`PipelineContext.sent_sources`) threads it
    onto the enquiry it answers as an outbound message (a first touch at its Date) and never opens an
    enquiry from it. It is read only: never marked seen, never moved.
    """

    def __init__(self, mailbox: ImapMailbox) -> None:
        sent = mailbox.sent_folder_mailbox()
        if sent is None:
            raise ConfigError(f"mailbox {mailbox.name!r} names no sent_folder")
        super().__init__(sent)
        self._source_name = mailbox.sent_source_name

    @property
    def name(self) -> str:
        """'imap:<mailbox name>:sent'."""
        return self._source_name
