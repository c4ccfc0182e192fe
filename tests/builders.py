"""Builders for test records: realistic raw mails, form posts and chat transcripts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import Enquiry, RawRecord, SlaTimer

T0 = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)


def email_bytes(
    *,
    message_id: str = "<a1@client.example.com>",
    sender: str = "Dana Fox <dana@brightwater-analytics.com>",
    subject: str = "Demo request for our sales team",
    body: str = "Hello, we would like a demo of your platform for 40 sales reps next week.",
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
    sent: datetime = T0,
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "hello@acme-triage.example"
    message["Subject"] = subject
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return bytes(message)


def team_answer(tag: str, *, in_reply_to: str, sent: datetime) -> bytes:
    """An SDR's answer from the team's domain (team.example) to the customer's mail `in_reply_to`."""
    return email_bytes(
        message_id=f"<r{tag}@team.example>",
        sender="Sam Seller <sdr@team.example>",
        subject="Re: Demo request for our sales team",
        body="Happy to show you. Does Tuesday work?",
        in_reply_to=in_reply_to,
        sent=sent,
    )


def first_response_timer(session: Session, enquiry_id: str) -> SlaTimer:
    return session.scalars(
        sa.select(SlaTimer).where(SlaTimer.enquiry_id == enquiry_id, SlaTimer.kind == "first_response")
    ).one()


def skipped_reasons(session: Session) -> list[str | None]:
    return list(session.scalars(sa.select(RawRecord.status_reason).where(RawRecord.status == "skipped")))


def form_json(**overrides: Any) -> bytes:
    record: dict[str, Any] = {
        "submission_id": "f-1001",
        "form_id": "contact",
        "submitted_at": "2026-11-18T10:00:00+01:00",
        "email": "sam@northwind-logistics.com",
        "name": "Sam Reyes",
        "company": "Northwind Logistics",
        "phone": None,
        "subject": "Pricing for 200 seats",
        "message": "What would the Growth plan cost for 200 seats on annual billing?",
        "website": "",
    }
    record.update(overrides)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def chat_json(
    conversation_id: str = "c-1", texts: tuple[str, ...] = ("Hi, do you integrate with HubSpot?",)
) -> bytes:
    messages = [{"id": "m0", "author": "bot", "sent_at": T0.isoformat(), "text": "Hi! How can we help?"}]
    for index, text in enumerate(texts, start=1):
        sent = T0 + timedelta(minutes=index)
        messages.append({"id": f"m{index}", "author": "v1", "sent_at": sent.isoformat(), "text": text})
    transcript = {
        "conversation_id": conversation_id,
        "source": "webchat",
        "started_at": T0.isoformat(),
        "participants": [
            {"id": "v1", "role": "visitor", "name": "Lee Chan", "email": "lee@corvid-robotics.io"},
            {"id": "bot", "role": "bot", "name": "Helper", "email": None},
        ],
        "messages": messages,
    }
    return json.dumps(transcript).encode()


def insert_enquiry(session: Session, *, at: datetime = T0, **fields: Any) -> str:
    """An enquiry row and its raw record, as the pipeline would have stored them; returns the enquiry id.

    Every column has a plain default; pass any `Enquiry` column to override it.
    """
    enquiry_id = fields.pop("id", None) or uuid.uuid4().hex
    raw = RawRecord(
        source="test",
        channel=fields.get("channel", "email"),
        external_key=enquiry_id,
        payload=b"x",
        received_at=at,
        imported_at=at,
        status="enquiry",
        enquiry_id=enquiry_id,
    )
    session.add(raw)
    session.flush()
    subject = fields.get("subject", "")
    columns: dict[str, Any] = {
        "channel": "email",
        "source": "test",
        "message_key": None,
        "thread_key": None,
        "content_hash": enquiry_id,
        "received_at": at,
        "sender_email": None,
        "sender_name": None,
        "phone": None,
        "subject": subject,
        "subject_norm": subject.lower()[:300],
        "body": "",
        "attributes": {},
        "attachments": [],
        "enrichment": {"free_mail": False, "segment": "smb"},
        "intent": "other",
        "queue": "general",
        "priority": "normal",
        "lane": "hybrid",
        "confidence": 0.9,
        "explanation": [],
        "model_version": "m-test",
        "status": "open",
        "created_at": at,
    }
    columns.update(fields)
    session.add(Enquiry(id=enquiry_id, raw_id=raw.id, **columns))
    session.flush()
    return enquiry_id
