"""Helpers for the SLA tests: stored enquiries, a recording notifier, and real SMTP/webhook receivers."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session

from connectors.notify import Notification
from models.errors import RetriableError
from store.common import insert_ignore
from store.tables import Enquiry, RawRecord


def add_enquiries(
    session: Session,
    ids: Sequence[str],
    *,
    received_at: datetime | None = None,
    channel: str = "email",
    intent: str = "support",
    queue: str = "support",
    priority: str = "normal",
    lane: str = "hybrid",
    segment: str = "smb",
    subject: str = "Question about our account",
) -> list[str]:
    """Store minimal enquiries (and the raw records they point at) with the given facts."""
    received = received_at or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    raw_rows = [
        {
            "source": "test",
            "channel": channel,
            "external_key": enquiry_id,
            "payload": b"{}",
            "received_at": received,
            "imported_at": received,
            "status": "enquiry",
            "enquiry_id": enquiry_id,
        }
        for enquiry_id in ids
    ]
    insert_ignore(session, RawRecord, raw_rows, conflict=["source", "external_key"])
    raw_ids = {
        key: raw_id
        for key, raw_id in session.query(RawRecord.external_key, RawRecord.id).filter(
            RawRecord.external_key.in_(list(ids))
        )
    }
    rows = [
        {
            "id": enquiry_id,
            "raw_id": raw_ids[enquiry_id],
            "channel": channel,
            "source": "test",
            "content_hash": enquiry_id,
            "received_at": received,
            "subject": subject,
            "subject_norm": subject.lower(),
            "body": "body",
            "attributes": {},
            "attachments": [],
            "enrichment": {"segment": segment},
            "intent": intent,
            "queue": queue,
            "priority": priority,
            "lane": lane,
            "confidence": 0.9,
            "explanation": [],
            "model_version": "test",
            "status": "open",
            "created_at": received,
        }
        for enquiry_id in ids
    ]
    insert_ignore(session, Enquiry, rows, conflict=["id"])
    return list(ids)


class RecordingNotifier:
    """A notifier that keeps what it was asked to send; `failing` roles raise RetriableError."""

    def __init__(self, roles: Sequence[str] = ("ops_lead", "manager", "slack")) -> None:
        self._roles = frozenset(roles)
        self.sent: list[Notification] = []
        self.failing: set[str] = set()

    def roles(self) -> frozenset[str]:
        return self._roles

    def send(self, notification: Notification) -> None:
        if notification.role in self.failing:
            raise RetriableError(f"{notification.role} is down")
        self.sent.append(notification)

    def to(self, role: str) -> list[Notification]:
        return [n for n in self.sent if n.role == role]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SmtpSink:
    """Messages a real SMTP server (aiosmtpd) received."""

    host: str
    port: int
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@contextmanager
def smtp_server() -> Iterator[SmtpSink]:
    """An in-process SMTP server on a free port (aiosmtpd cannot take port 0)."""
    sink = SmtpSink("127.0.0.1", free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class WebhookSink:
    """JSON bodies a local HTTP server received; answers `status` (change it to simulate an outage)."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@contextmanager
def webhook_server() -> Iterator[WebhookSink]:
    """A tiny Slack-compatible webhook receiver on 127.0.0.1."""
    sink = WebhookSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if sink.status == 200:
                sink.bodies.append(json.loads(body))
            self.send_response(sink.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/slack"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
