"""Which of a batch's automated enquiries are also spot-checked by people (models.live_precision).

A spot check's review item carries the automated lane: the lead, the auto-reply and the SLA clock were
handled as automated (no CRM task is added); the reviewer only confirms or corrects the label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from config.policy import Policy
from models.lanes import BOT_MODEL_VERSION
from models.live_precision import Candidate, select_spot_checks
from models.records import Decision, Lane


class _New(Protocol):
    enquiry_id: str


def spot_check_items(
    session: Session,
    new: Sequence[_New],
    decisions: Sequence[Decision],
    due: Mapping[str, datetime],
    policy: Policy,
    now: datetime,
) -> list[dict[str, Any]]:
    """Choose and store this batch's spot checks; returns their review item rows."""
    candidates = [
        Candidate(item.enquiry_id, decision.task, decision.model_version, decision.intent)
        for item, decision in zip(new, decisions, strict=True)
        # The honeypot rule is no model's call: nothing to measure.
        if decision.lane is Lane.AUTOMATE and decision.model_version != BOT_MODEL_VERSION
    ]
    chosen = select_spot_checks(session, candidates, policy.lanes.spot_checks, now=now)
    by_id = {item.enquiry_id: decision for item, decision in zip(new, decisions, strict=True)}
    return [
        {
            "enquiry_id": enquiry_id,
            "lane": Lane.AUTOMATE.value,
            "queue": by_id[enquiry_id].queue,
            "intent": by_id[enquiry_id].intent,
            "status": "open",
            "due_at": due.get(enquiry_id),
            "created_at": now,
        }
        for enquiry_id in chosen
    ]
