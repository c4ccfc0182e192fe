"""Notifications to people: e-mail over SMTP and a Slack-compatible incoming webhook.

A notification is addressed to a *role*: `ops_lead` and `manager` are e-mail addresses from the
settings, `slack` is the webhook. Failures map onto models.errors: a refused connection, a timeout, a
4xx SMTP reply or an HTTP 5xx/429 is retriable; bad credentials or a rejected address are fatal.
"""

from __future__ import annotations

import smtplib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr

from connectors.smtp_client import smtp_session
from models.errors import FatalError, RetriableError

EMAIL_ROLES = ("ops_lead", "manager")


class SmtpSettings(BaseModel):
    """How to reach the outgoing mail server."""

    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65_535)
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = "triage@localhost"
    starttls: bool = True
    ssl: bool = Field(default=False, description="Implicit TLS (port 465) instead of STARTTLS.")
    timeout_seconds: float = Field(default=30.0, gt=0)


class NotifySettings(BaseModel):
    """Where SLA escalations and reports go: `TRIAGE_NOTIFY__...` in the environment."""

    smtp: SmtpSettings | None = None
    recipients: dict[str, list[str]] = Field(
        default_factory=dict, description="Role (ops_lead, manager) → e-mail addresses."
    )
    slack_webhook_url: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with an e-mail."""

    filename: str
    content: bytes
    maintype: str = "text"
    subtype: str = "html"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one role. `html` is used by e-mail only; Slack receives `text`."""

    role: str
    subject: str
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()


class Notifier(Protocol):
    """Something that delivers notifications to some roles."""

    def roles(self) -> frozenset[str]:
        """The roles this notifier can reach (a role nobody configured is skipped, not retried)."""
        ...

    def send(self, notification: Notification) -> None:
        """Deliver one notification or raise RetriableError/FatalError."""
        ...


class SmtpNotifier:
    """E-mail through an SMTP server, one message per notification to every address of its role."""

    def __init__(self, settings: SmtpSettings, recipients: Mapping[str, Sequence[str]]) -> None:
        self._settings = settings
        self._recipients = {role: list(addresses) for role, addresses in recipients.items() if addresses}

    def roles(self) -> frozenset[str]:
        return frozenset(self._recipients)

    def send(self, notification: Notification) -> None:
        addresses = self._recipients.get(notification.role)
        if not addresses:
            raise FatalError(f"no e-mail address configured for role {notification.role!r}")
        message = EmailMessage()
        message["From"] = self._settings.from_address
        message["To"] = ", ".join(addresses)
        message["Subject"] = notification.subject
        message.set_content(notification.text)
        if notification.html is not None:
            message.add_alternative(notification.html, subtype="html")
        for attachment in notification.attachments:
            message.add_attachment(
                attachment.content,
                maintype=attachment.maintype,
                subtype=attachment.subtype,
                filename=attachment.filename,
            )
        self.send_message(message)

    def send_message(self, message: EmailMessage) -> None:
        """Send a ready message (also used by the weekly report flow)."""
        settings = self._settings
        try:
            with smtp_session(settings) as client:
                client.send_message(message)
        except smtplib.SMTPAuthenticationError as error:
            raise FatalError(
                f"SMTP login to {settings.host} refused: check the username and password"
            ) from error
        except smtplib.SMTPRecipientsRefused as error:
            raise FatalError(f"SMTP server refused the recipients: {sorted(error.recipients)}") from error
        except smtplib.SMTPResponseException as error:
            if 400 <= error.smtp_code < 500:
                raise RetriableError(
                    f"SMTP temporary failure {error.smtp_code}: {error.smtp_error!r}"
                ) from error
            raise FatalError(
                f"SMTP server rejected the message: {error.smtp_code} {error.smtp_error!r}"
            ) from error
        except (smtplib.SMTPException, OSError) as error:
            raise RetriableError(
                f"cannot reach SMTP server {settings.host}:{settings.port}: {error}"
            ) from error


class WebhookNotifier:
    """A Slack-compatible incoming webhook: POST {"text": ...} as JSON."""

    def __init__(self, url: SecretStr, *, timeout_seconds: float = 10.0, role: str = "slack") -> None:
        self._url = url
        self._timeout = timeout_seconds
        self._role = role

    def roles(self) -> frozenset[str]:
        return frozenset({self._role})

    def send(self, notification: Notification) -> None:
        import httpx  # only a Slack send needs it: every `triage` command imports the settings module

        text = f"*{slack_escape(notification.subject)}*\n{slack_escape(notification.text)}"
        try:
            response = httpx.post(self._url.get_secret_value(), json={"text": text}, timeout=self._timeout)
        except httpx.HTTPError as error:
            # The URL is a secret (it carries the token): never put it in a message.
            raise RetriableError(f"cannot reach the Slack webhook: {type(error).__name__}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise RetriableError(f"Slack webhook answered {response.status_code}; will retry")
        if response.status_code >= 400:
            raise FatalError(f"Slack webhook refused the message ({response.status_code}): check the URL")


class CompositeNotifier:
    """Routes each notification to the notifier that serves its role."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self._notifiers = list(notifiers)

    def roles(self) -> frozenset[str]:
        return frozenset().union(*(notifier.roles() for notifier in self._notifiers))

    def send(self, notification: Notification) -> None:
        for notifier in self._notifiers:
            if notification.role in notifier.roles():
                notifier.send(notification)
                return
        raise FatalError(f"no notifier configured for role {notification.role!r}")


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's message format reserves, so enquiry text cannot ping @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_notifier(settings: NotifySettings) -> CompositeNotifier:
    """The notifier for the configured roles: SMTP for e-mail roles, the webhook for `slack`."""
    notifiers: list[Notifier] = []
    if settings.smtp is not None:
        email_recipients = {role: settings.recipients.get(role, []) for role in settings.recipients}
        notifiers.append(SmtpNotifier(settings.smtp, email_recipients))
    if settings.slack_webhook_url is not None:
        notifiers.append(
            WebhookNotifier(settings.slack_webhook_url, timeout_seconds=settings.timeout_seconds)
        )
    return CompositeNotifier(notifiers)


def notify_settings_from(settings: object) -> NotifySettings:
    """The `notify` section of the settings object, or none configured (every role skipped) without one."""
    value = getattr(settings, "notify", None)
    return value if isinstance(value, NotifySettings) else NotifySettings()
