"""Settings of one IMAP mailbox.

Kept apart from `connectors.imap` so that loading settings never imports imapclient. The main
`Settings` nests this model (`imap: ImapMailbox | None`, `mailboxes: list[ImapMailbox]`), so with the
`TRIAGE_` prefix and `__` delimiter one mailbox is configured as `TRIAGE_IMAP__HOST`,
`TRIAGE_IMAP__USERNAME`, `TRIAGE_IMAP__PASSWORD`, ... and several as JSON in `TRIAGE_MAILBOXES`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class ImapMailbox(BaseModel):
    """How to reach and read one mailbox folder."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.-]{1,60}$",
        description="Short unique name; the source is called 'imap:<name>' and keeps its own checkpoint.",
    )
    host: str = Field(min_length=1)
    port: int = Field(default=993, ge=1, le=65535)
    ssl: bool = Field(default=True, description="Implicit TLS (port 993). False means a plain connection.")
    starttls: bool = Field(default=False, description="Upgrade a plain connection with STARTTLS.")
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    oauth2_token: SecretStr | None = Field(
        default=None,
        description="OAuth2 access token for XOAUTH2 (Gmail, Microsoft 365); wins over password.",
    )
    folder: str = "INBOX"
    mark_seen: bool = Field(default=False, description="Set \\Seen on mail once it is stored.")
    move_to: str | None = Field(default=None, description="Move mail to this existing folder once stored.")
    sent_folder: str | None = Field(
        default=None,
        description="The mailbox's Sent folder (e.g. 'Sent'): intake reads it too, as the source "
        "'imap:<name>:sent', and mail there only ever stops the clock of the enquiry it answers (it never "
        "becomes an enquiry); replies to this mailbox's enquiries are looked up there before a re-send.",
    )
    batch_size: int = Field(default=500, ge=1, le=5_000, description="Mails fetched and stored per batch.")
    max_batch_bytes: int = Field(
        default=50_000_000, ge=1_000_000, description="A batch closes early once its mails reach this size."
    )
    timeout_seconds: float = Field(default=30.0, gt=0)
    ssl_ca_file: Path | None = Field(default=None, description="CA bundle for a server with a private CA.")

    @model_validator(mode="after")
    def _needs_credentials(self) -> ImapMailbox:
        if self.password is None and self.oauth2_token is None:
            raise ValueError(f"mailbox {self.name!r}: set a password or an oauth2_token")
        if self.ssl and self.starttls:
            raise ValueError(f"mailbox {self.name!r}: choose ssl (implicit TLS) or starttls, not both")
        if self.move_to is not None and self.move_to == self.folder:
            raise ValueError(f"mailbox {self.name!r}: move_to must differ from folder")
        if self.sent_folder is not None and self.sent_folder in {self.folder, self.move_to}:
            raise ValueError(f"mailbox {self.name!r}: sent_folder must differ from folder and move_to")
        return self

    @property
    def source_name(self) -> str:
        """The source name records and checkpoints are stored under."""
        return f"imap:{self.name}"

    @property
    def sent_source_name(self) -> str:
        """The source name of this mailbox's Sent folder: 'imap:<name>:sent'."""
        return f"imap:{self.name}:sent"

    def sent_folder_mailbox(self) -> ImapMailbox | None:
        """The same account opened on its Sent folder (read only: never marked seen, never moved)."""
        if self.sent_folder is None:
            return None
        return self.model_copy(
            update={"folder": self.sent_folder, "mark_seen": False, "move_to": None, "sent_folder": None}
        )
