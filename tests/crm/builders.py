"""Minimal enquiries and outbox rows for CRM tests, inserted directly with SQLAlchemy.

The outbox's `enquiry_id` is a foreign key to `enquiries`, which points at `raw_records`; these builders
make the smallest valid rows of both so CRM tests need nothing from intake or classification.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from store import outbox
from store.tables import Enquiry, RawRecord

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DEFAULT_MAPPING = Path(__file__).resolve().parents[2] / "config" / "defaults" / "crm_mapping.yaml"


def enquiry_id(number: int) -> str:
    """A stable enquiry id like the pipeline's (32 hex characters)."""
    return f"{number:032x}"


def insert_enquiries(session: Session, count: int, *, start: int = 0, channel: str = "email") -> list[str]:
    """Insert `count` raw records and their enquiries; returns the enquiry ids."""
    ids = [enquiry_id(number) for number in range(start, start + count)]
    raw_rows = [
        {
            "source": "test",
            "channel": channel,
            "external_key": f"k{number}",
            "payload": b"{}",
            "received_at": T0,
            "imported_at": T0,
            "status": "enquiry",
            "enquiry_id": enquiry_id(number),
        }
        for number in range(start, start + count)
    ]
    raw_ids = session.execute(sa.insert(RawRecord).returning(RawRecord.id), raw_rows).scalars().all()
    session.execute(
        sa.insert(Enquiry),
        [
            {
                "id": eid,
                "raw_id": raw_id,
                "channel": channel,
                "source": "test",
                "content_hash": eid * 2,
                "received_at": T0,
                "sender_email": f"buyer{n}@example.com",
                "subject": f"Pricing {n}",
                "subject_norm": f"pricing {n}",
                "body": "We need a quote.",
                "attributes": {},
                "attachments": [],
                "enrichment": {},
                "intent": "pricing",
                "queue": "sales",
                "priority": "P2",
                "lane": "hybrid",
                "confidence": 0.9,
                "explanation": [],
                "model_version": "m1",
                "status": "decided",
                "created_at": T0,
            }
            for n, (eid, raw_id) in enumerate(zip(ids, raw_ids, strict=True), start=start)
        ],
    )
    return ids


def lead_payload(eid: str, number: int, **overrides: Any) -> dict[str, Any]:
    """A canonical lead payload as the pipeline writes it."""
    payload: dict[str, Any] = {
        "external_id": eid,
        "email": f"buyer{number}@example.com",
        "first_name": "Ada",
        "last_name": f"Buyer{number}",
        "company": f"Company {number}",
        "channel": "email",
        "source": "imap:sales",
        "subject": f"Pricing {number}",
        "description": "We need a quote.",
        "intent": "pricing",
        "priority": "P2",
        "lane": "hybrid",
        "employees": 120,
        "received_at": T0.isoformat(),
    }
    payload.update(overrides)
    return payload


def fill_outbox(
    factory: sessionmaker[Session],
    count: int,
    *,
    start: int = 0,
    with_tasks: bool = False,
    payload_overrides: dict[int, dict[str, Any]] | None = None,
) -> list[str]:
    """Enquiries plus one `upsert_lead` outbox row each (and a `create_task` row if asked)."""
    overrides = payload_overrides or {}
    with factory() as session, session.begin():
        ids = insert_enquiries(session, count, start=start)
        rows = [
            {
                "idempotency_key": f"lead:{eid}",
                "enquiry_id": eid,
                "operation": "upsert_lead",
                "payload": lead_payload(eid, number, **overrides.get(number, {})),
            }
            for number, eid in enumerate(ids, start=start)
        ]
        if with_tasks:
            rows += [
                {
                    "idempotency_key": f"task:{eid}",
                    "enquiry_id": eid,
                    "operation": "create_task",
                    "payload": {
                        "subject": f"Review enquiry {eid[-6:]}",
                        "priority": "P2",
                        "due_at": T0.isoformat(),
                    },
                }
                for eid in ids
            ]
        outbox.enqueue(session, rows, now=T0)  # the test clocks start at T0
    return ids


class StepClock:
    """A clock the test moves: drains see `now`, `advance` jumps past backoffs."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
