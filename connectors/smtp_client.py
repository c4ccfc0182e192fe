"""One SMTP session, as notifications and customer replies both open it: SSL or STARTTLS, then login."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from pydantic import SecretStr


class SmtpServer(Protocol):
    host: str
    port: int
    ssl: bool
    starttls: bool
    username: str | None
    password: SecretStr | None
    timeout_seconds: float


@contextmanager
def smtp_session(server: SmtpServer) -> Iterator[smtplib.SMTP]:
    """A connected, logged-in client, closed on exit; smtplib's errors pass through for the caller
    to sort into retriable and permanent."""
    client: smtplib.SMTP
    if server.ssl:
        client = smtplib.SMTP_SSL(
            server.host, server.port, timeout=server.timeout_seconds, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=server.timeout_seconds)
    with client:
        if server.starttls and not server.ssl:
            client.starttls(context=ssl.create_default_context())
        if server.username and server.password is not None:
            client.login(server.username, server.password.get_secret_value())
        yield client
