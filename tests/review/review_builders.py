"""Builders that put enquiries with review items (and SLA timers) straight into the database."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from store.tables import ReviewItem, SlaTimer
from tests.builders import insert_enquiry

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def add_enquiry_with_item(
    session: Session,
    *,
    subject: str = "Demo for 40 seats?",
    body: str = "Hello, we would like a demo of your product for our sales team.",
    sender_email: str | None = "ann@acme.example",
    sender_name: str | None = "Ann Lee",
    intent: str = "sales_demo",
    queue: str = "sales",
    priority: str = "high",
    lane: str = "hybrid",
    confidence: float = 0.71,
    explanation: list[Any] | None = None,
    enrichment: dict[str, Any] | None = None,
    due_in_minutes: int | None = 60,
    status: str = "open",
    claimed_by: str | None = None,
    with_timer: bool = True,
    now: datetime = NOW,
) -> tuple[int, str]:
    """An enquiry, its review item and (optionally) a running first-response timer: (item id, enquiry id)."""
    enquiry_id = uuid.uuid4().hex
    insert_enquiry(
        session,
        id=enquiry_id,
        at=now,
        message_key=f"<{enquiry_id}@x>",
        received_at=now - timedelta(minutes=5),
        sender_email=sender_email,
        sender_name=sender_name,
        subject=subject,
        body=body,
        enrichment=enrichment
        if enrichment is not None
        else {"domain": "acme.example", "company": "Acme", "segment": "mid_market", "employees": 250},
        intent=intent,
        queue=queue,
        priority=priority,
        lane=lane,
        confidence=confidence,
        explanation=explanation if explanation is not None else [["demo", 1.25], ["seats", 0.5]],
        model_version="m-2026-11-01",
        status="review",
        created_at=now - timedelta(minutes=5),
    )
    due_at = now + timedelta(minutes=due_in_minutes) if due_in_minutes is not None else None
    item = ReviewItem(
        enquiry_id=enquiry_id,
        lane=lane,
        queue=queue,
        intent=intent,
        status=status,
        claimed_by=claimed_by,
        claimed_at=now if claimed_by else None,
        due_at=due_at,
        created_at=now - timedelta(minutes=5),
    )
    session.add(item)
    if with_timer and due_at is not None:
        session.add(
            SlaTimer(
                enquiry_id=enquiry_id,
                kind="first_response",
                policy="default",
                target_minutes=120,
                started_at=now - timedelta(minutes=5),
                due_at=due_at,
                status="running",
                next_check_at=due_at,
            )
        )
    session.flush()
    return item.id, enquiry_id


PASSWORD = "correct horse battery"
USERS = (("sam", "sdr"), ("sue", "sdr"), ("olga", "ops_lead"), ("adam", "admin"))


def add_users(session: Session) -> None:
    """Two SDRs, an ops lead and an admin, all with PASSWORD."""
    from review.auth import create_user

    for name, role in USERS:
        create_user(session, name, role=role, password=PASSWORD)


DEMO_ITEMS = (
    # subject, sender name, email, intent, queue, priority, lane, confidence, minutes to due
    (
        "Pricing for 250 seats, annual billing?",
        "Maria Gomez",
        "maria@northwind.example",
        "pricing",
        "sales",
        "high",
        "hybrid",
        0.64,
        -42,
    ),
    (
        "Invoice INV-20931 charged twice",
        "Tom Becker",
        "tom.becker@contoso.example",
        "billing",
        "finance",
        "urgent",
        "human_only",
        0.58,
        -5,
    ),
    (
        "Demo request for our EMEA sales team",
        "Priya Nair",
        "priya@fabrikam.example",
        "sales_demo",
        "sales",
        "high",
        "hybrid",
        0.71,
        12,
    ),
    (
        "Cannot log in after SSO change",
        "Lee Wong",
        "lee@tailspin.example",
        "support",
        "support",
        "urgent",
        "human_only",
        0.49,
        25,
    ),
    (
        "Partnership: reseller programme in the Nordics",
        "Anna Berg",
        "anna@litware.example",
        "partnership",
        "partnerships",
        "normal",
        "hybrid",
        0.66,
        95,
    ),
    (
        "Interview request for a feature on AI triage",
        "Sam Reed",
        "sam@dailytech.example",
        "press",
        "marketing",
        "normal",
        "human_only",
        0.55,
        140,
    ),
    (
        "Question about the enterprise SLA",
        "Jon Park",
        "jon@adatum.example",
        "pricing",
        "sales",
        "normal",
        "hybrid",
        0.62,
        210,
    ),
    (
        "Open role: senior data engineer?",
        "Eva Ruiz",
        "eva.ruiz@mail.example",
        "careers",
        "hr",
        "low",
        "hybrid",
        0.68,
        300,
    ),
    (
        "Quote for a 3-year contract",
        "Ken Ito",
        "ken@wingtip.example",
        "pricing",
        "sales",
        "high",
        "hybrid",
        0.59,
        420,
    ),
    (
        "Webhook retries failing since Monday",
        "Olu Ade",
        "olu@proseware.example",
        "support",
        "support",
        "high",
        "hybrid",
        0.73,
        600,
    ),
)


def add_demo_queue(session: Session, *, now: datetime = NOW) -> list[int]:
    """A realistic-looking queue (for screenshots and the browser tests): item ids, soonest due first."""
    ids = []
    for subject, name, email, intent, queue, priority, lane, confidence, minutes in DEMO_ITEMS:
        item_id, _ = add_enquiry_with_item(
            session,
            subject=subject,
            sender_name=name,
            sender_email=email,
            intent=intent,
            queue=queue,
            priority=priority,
            lane=lane,
            confidence=confidence,
            due_in_minutes=minutes,
            now=now,
            body=f"Hello,\n\n{subject}\n\nBest regards,\n{name}",
        )
        ids.append(item_id)
    return ids


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)
