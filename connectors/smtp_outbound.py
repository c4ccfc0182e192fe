"""Replies to customers over SMTP, and the mailbox's Sent folder that proves one went out (issue 17).

`OutboundSettings` is the `TRIAGE_OUTBOUND__...` section: the SMTP server (`SMTP__HOST`, `__PORT`,
`__USERNAME`, `__PASSWORD`, `__SSL`, `__STARTTLS`, the same model notifications use), the address
replies come from (`FROM_ADDRESS`), an optional IMAP Sent folder, the team's own domains and the rate
limits. `build_reply` makes the message with the standard library's `email` API, whose default policy
refuses CR or LF in a header value, so no field of an enquiry can inject a header. `SmtpReplySender`
sends it and files a copy in the Sent folder; `SentFolder.holds` answers whether a Message-ID is
already there, which is how a re-send after a crash is avoided.

Failures map onto models.errors like notifications: a 4xx reply, a timeout or a refused connection is
`RetriableError`; a 5xx is `PermanentSendError` carrying the server's own words, shown on the item.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from pydantic import BaseModel, Field

from connectors.imap_settings import ImapMailbox
from connectors.notify import SmtpSettings
from connectors.smtp_client import smtp_session
from models.errors import FatalError, RetriableError

log = logging.getLogger(__name__)


class MailboxOutbound(BaseModel):
    """A mailbox's own way out: replies to enquiries it received go from here (unset fields inherit)."""

    from_address: str | None = None
    from_name: str | None = None
    smtp: SmtpSettings | None = None
    sent_folder: ImapMailbox | None = None


class OutboundSettings(BaseModel):
    """How replies reach customers: `TRIAGE_OUTBOUND__...` in the environment."""

    smtp: SmtpSettings | None = Field(default=None, description="The SMTP server replies go through.")
    from_address: str | None = Field(
        default=None, description="The address replies come from (and the domain of their Message-IDs)."
    )
    from_name: str | None = Field(default=None, description="Display name shown with the from address.")
    sent_folder: ImapMailbox | None = Field(
        default=None,
        description="The mailbox and folder (e.g. 'Sent') where sent replies are filed and looked up "
        "before a re-send after a crash.",
    )
    file_copy_in_sent: bool = Field(
        default=True,
        description="Append a copy of each sent reply to the Sent folder (off for servers that do it "
        "themselves, such as Gmail).",
    )
    team_domains: list[str] = Field(
        default_factory=list,
        description="The team's own mail domains: their mail in a thread is a first touch, and replies "
        "are never sent to them.",
    )
    max_attempts: int = Field(default=6, ge=1, description="Attempts on temporary failures before giving up.")
    backoff_seconds: float = Field(default=60.0, gt=0, description="First retry delay; doubles per attempt.")
    lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a reply being sent stays claimed; after that a pass treats it as in doubt.",
    )
    mailboxes: dict[str, MailboxOutbound] = Field(
        default_factory=dict,
        description="Per-mailbox overrides, by mailbox name (the source imap:<name>): replies to its "
        "enquiries use its from address, SMTP server and Sent folder.",
    )
    per_domain_per_hour: int = Field(default=20, ge=1, description="Replies per recipient domain per hour.")
    total_per_hour: int = Field(default=500, ge=1, description="Replies per hour in total.")

    def for_source(self, source: str) -> OutboundSettings:
        """These settings with the override of the mailbox an enquiry came from, if it has one."""
        name = source.removeprefix("imap:") if source.startswith("imap:") else None
        override = self.mailboxes.get(name) if name is not None else None
        if override is None:
            return self
        changes = {
            key: getattr(override, key)
            for key in MailboxOutbound.model_fields
            if getattr(override, key) is not None
        }
        return self.model_copy(update=changes)

    @property
    def domains(self) -> frozenset[str]:
        """The team domains, lower case (the from address's own domain included)."""
        found = {domain.strip().lower().lstrip("@") for domain in self.team_domains if domain.strip()}
        addresses = [self.from_address] + [box.from_address for box in self.mailboxes.values()]
        found.update(address.rsplit("@", 1)[1].lower() for address in addresses if address and "@" in address)
        return frozenset(found)


def outbound_settings_from(settings: object) -> OutboundSettings:
    """The `outbound` section of the settings object, or an unconfigured one."""
    value = getattr(settings, "outbound", None)
    return value if isinstance(value, OutboundSettings) else OutboundSettings()


class PermanentSendError(FatalError):
    """The SMTP server refused the reply for good (5xx); the message holds the server's words."""


@dataclass(frozen=True, slots=True)
class OutgoingReply:
    """What a reply says and how it threads; ids without angle brackets."""

    from_address: str
    to_address: str
    subject: str
    body: str
    message_id: str
    in_reply_to: str | None
    references: Sequence[str]
    date: datetime
    from_name: str | None = None


def _one_line(value: str) -> str:
    """Header text on one line: CR, LF and other controls become spaces (the policy would refuse them)."""
    return " ".join("".join(ch if ch >= " " else " " for ch in value).split())


def build_reply(reply: OutgoingReply) -> EmailMessage:
    """The reply as an `EmailMessage` (policy.default: a CR or LF in a header value is an error)."""
    message = EmailMessage()
    sender = reply.from_address
    if reply.from_name:
        from email.headerregistry import Address

        local, _, domain = reply.from_address.partition("@")
        message["From"] = Address(_one_line(reply.from_name), local, domain)
    else:
        message["From"] = sender
    message["To"] = _one_line(reply.to_address)
    message["Subject"] = _one_line(reply.subject)
    message["Date"] = format_datetime(reply.date)
    message["Message-ID"] = _angle(reply.message_id)
    if reply.in_reply_to:
        message["In-Reply-To"] = _angle(reply.in_reply_to)
    if reply.references:
        message["References"] = " ".join(_angle(key) for key in reply.references)
    message.set_content(reply.body)
    return message


def _angle(message_id: str) -> str:
    return f"<{_one_line(message_id).strip('<>')}>"


class SentFolder:
    """The IMAP folder where sent replies are kept: look a Message-ID up, file a copy."""

    def __init__(self, mailbox: ImapMailbox) -> None:
        self.mailbox = mailbox

    def holds(self, message_id: str) -> bool:
        """Whether a message with this Message-ID is in the folder. Raises RetriableError if unreachable."""
        from connectors.imap import ImapSource

        source = ImapSource(self.mailbox)
        client = source._connect()
        try:
            if not client.folder_exists(self.mailbox.folder):
                return False
            client.select_folder(self.mailbox.folder, readonly=True)
            return bool(client.search(["HEADER", "Message-ID", _angle(message_id)]))
        except Exception as error:  # imapclient and socket errors
            raise RetriableError(f"cannot search the Sent folder {self.mailbox.folder!r}: {error}") from error
        finally:
            _logout(client)

    def file_copy(self, message: EmailMessage) -> None:
        """Append a sent message (seen) to the folder, creating the folder if needed."""
        from connectors.imap import ImapSource

        client = ImapSource(self.mailbox)._connect()
        try:
            if not client.folder_exists(self.mailbox.folder):
                client.create_folder(self.mailbox.folder)
            client.append(self.mailbox.folder, message.as_bytes(), flags=[b"\\Seen"])
        finally:
            _logout(client)


def _logout(client: object) -> None:
    try:
        client.logout()  # type: ignore[attr-defined]
    except Exception:
        log.debug("IMAP logout failed", exc_info=True)


class SmtpReplySender:
    """Sends replies through the configured SMTP server and files them in the Sent folder."""

    def __init__(self, settings: OutboundSettings) -> None:
        self.settings = settings
        self.smtp = settings.smtp
        self.sent_folder = SentFolder(settings.sent_folder) if settings.sent_folder is not None else None

    def already_sent(self, message_id: str) -> bool | None:
        """True/False from the Sent folder; None when there is no Sent folder to ask."""
        if self.sent_folder is None:
            return None
        return self.sent_folder.holds(message_id)

    def send(self, message: EmailMessage) -> None:
        """Hand the message to the SMTP server; returns once the server accepted it."""
        smtp = self.smtp
        if smtp is None:  # waits (with backoff) for the configuration rather than failing the reply
            raise RetriableError("no SMTP server for replies: set TRIAGE_OUTBOUND__SMTP__HOST")
        try:
            with smtp_session(smtp) as client:
                client.send_message(message)
        except smtplib.SMTPAuthenticationError as error:
            raise FatalError(f"SMTP login to {smtp.host} refused: check the username and password") from error
        except smtplib.SMTPRecipientsRefused as error:
            code, words = next(iter(error.recipients.values()), (550, b"recipient refused"))
            if 400 <= code < 500:
                raise RetriableError(f"SMTP temporary failure {code}: {_words(words)}") from error
            raise PermanentSendError(f"{code} {_words(words)}") from error
        except smtplib.SMTPResponseException as error:
            if 400 <= error.smtp_code < 500:
                raise RetriableError(
                    f"SMTP temporary failure {error.smtp_code}: {_words(error.smtp_error)}"
                ) from error
            raise PermanentSendError(f"{error.smtp_code} {_words(error.smtp_error)}") from error
        except (smtplib.SMTPException, OSError) as error:
            raise RetriableError(f"cannot reach SMTP server {smtp.host}:{smtp.port}: {error}") from error
        if self.sent_folder is not None and self.settings.file_copy_in_sent:
            try:
                self.sent_folder.file_copy(message)
            except Exception as error:
                log.warning(
                    "reply %s sent but not filed in the Sent folder: %s", message["Message-ID"], error
                )


class SenderPool:
    """One sender per enquiry source: a mailbox with an override sends through its own server.

    `sent_folders` (source → the mailbox opened on its Sent folder, `ImapMailbox.sent_folder`): replies
    to that mailbox's enquiries are looked up (and filed) there, unless the outbound settings name a
    Sent folder of their own for it.
    """

    def __init__(
        self, settings: OutboundSettings, sent_folders: dict[str, ImapMailbox] | None = None
    ) -> None:
        self.settings = settings
        self.sent_folders = dict(sent_folders or {})
        self._senders: dict[str, SmtpReplySender] = {}

    @classmethod
    def for_mailboxes(cls, settings: OutboundSettings, mailboxes: Sequence[ImapMailbox]) -> SenderPool:
        """A pool that knows the Sent folder each IMAP mailbox names (`ImapMailbox.sent_folder`)."""
        sent = {box.source_name: folder for box in mailboxes if (folder := box.sent_folder_mailbox())}
        return cls(settings, sent)

    @property
    def configured(self) -> bool:
        """Whether any SMTP server is configured at all."""
        return self.settings.smtp is not None or any(box.smtp for box in self.settings.mailboxes.values())

    def __call__(self, source: str) -> SmtpReplySender:
        if source not in self._senders:
            settings = self.settings.for_source(source)
            own = settings.mailboxes.get(source.removeprefix("imap:"))
            if source in self.sent_folders and (own is None or own.sent_folder is None):
                settings = settings.model_copy(update={"sent_folder": self.sent_folders[source]})
            self._senders[source] = SmtpReplySender(settings)
        return self._senders[source]


def _words(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return _one_line(text)[:500]
