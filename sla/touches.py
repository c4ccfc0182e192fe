"""First touches seen outside the review pages: the local CRM by hand, the mailbox (issue 17).

A touch is a message that reached the customer. `record_touch` stops the enquiry's first-response
clock at the touch's own time, names who touched it and where (`crm`, `mailbox`, ...), and writes an
audit row. The earliest touch wins (`sla.service.stop_first_response`): a touch seen later but made
earlier replaces the recorded one; a later one changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from models.errors import TriageError
from sla import service as sla_service
from store import review_repo


class TouchError(TriageError):
    """A touch that cannot be recorded; the message says why."""


@dataclass(frozen=True, slots=True)
class TouchResult:
    """What a recorded touch did."""

    enquiry_id: str
    stopped: bool  # False: the clock was already stopped by an earlier touch (or there is none)
    at: datetime
    by: str
    source: str


def record_touch(
    session: Session, enquiry_id: str, *, by: str, at: datetime, source: str, now: datetime, note: str = ""
) -> TouchResult:
    """Stop the first-response clock at `at` (a touch in the future is refused) and audit it."""
    if at.tzinfo is None:
        raise TouchError("the touch time needs a time zone, e.g. 2026-03-02T10:00:00+01:00 or ...Z")
    if at > now:
        raise TouchError(f"the touch time {at.isoformat()} is in the future")
    enquiry = review_repo.get_enquiry(session, enquiry_id)
    if enquiry is None:
        raise TouchError(f"no enquiry {enquiry_id}")
    stopped = sla_service.stop_first_response(session, enquiry_id, by=by, at=at, source=source)
    review_repo.add_decision(
        session,
        {
            "enquiry_id": enquiry.id,
            "created_at": now,
            "actor": by,
            "kind": "first_touch",
            "lane": enquiry.lane,
            "intent": enquiry.intent,
            "queue": enquiry.queue,
            "priority": enquiry.priority,
            "confidence": enquiry.confidence,
            "task": f"touch_{source}",
            "reasons": [
                f"{source} touch at {at.isoformat()}"
                + ("" if stopped else " (the clock was already stopped earlier)")
                + (f": {note}" if note else "")
            ],
            "policy_version": "human",
            "model_version": enquiry.model_version,
        },
    )
    return TouchResult(enquiry_id, stopped, at, by, source)
