"""First touches made in Salesforce: poll for leads that left the open status and completed Tasks.

One pass (`poll_crm_touches`, run by `triage crm poll-touches` and the `crm-touches` flow) reads two
streams from the CRM, each ordered by (LastModifiedDate, Id) after its persisted high-water mark
(`source_checkpoints` row `salesforce:touches`) and before `now - touch_poll_lag_seconds`:

- leads of ours (the external-id field set) owned by the team whose Status is none of the open
  statuses: touched at their LastModifiedDate;
- Tasks with the completed status: their lead (WhoId) was touched at the Task's CompletedDateTime.

A lead is linked to its enquiry by the CRM id stored when the lead was written (`crm_outbox.crm_id`),
else by the enquiry id the lead carries. Each page is one transaction with its mark, so a pass that
dies part-way resumes where it stopped. A touch stops the first-response clock through
`sla.touches.record_touch` (source `crm`, audit row) only when it is the earliest touch: a clock already
stopped at or before it is left alone and no audit row is written, so a second pass does nothing.

Limitation: Salesforce gives the lead's LastModifiedDate, not when its Status changed; a lead edited
again before the next pass is stamped at that later edit (at most one poll interval late). A completed
Task carries its own completion time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from config.settings import SalesforceSettings
from connectors.crm.base import CrmTouch, TouchFeed
from sla.touches import record_touch
from store import outbox, review_repo, sla_repo
from store import raw as raw_store
from store.common import Clock, utcnow
from store.db import transaction

log = logging.getLogger(__name__)

CHECKPOINT_SOURCE = "salesforce:touches"
STREAMS = ("leads", "tasks")


@dataclass
class TouchPollSummary:
    """What one pass read and stopped."""

    leads_seen: int = 0
    tasks_seen: int = 0
    clocks_stopped: int = 0
    not_ours: int = 0  # records that name no enquiry with a clock here
    pages: int = 0
    until: datetime | None = None
    stopped: list[str] = field(default_factory=list)  # enquiry ids whose clock this pass stopped

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads_seen": self.leads_seen,
            "tasks_seen": self.tasks_seen,
            "clocks_stopped": self.clocks_stopped,
            "not_ours": self.not_ours,
            "pages": self.pages,
            "until": self.until.isoformat() if self.until else None,
            "stopped": list(self.stopped),
        }


def _mark(value: Any, default: datetime) -> tuple[datetime, str]:
    if isinstance(value, dict) and value.get("at"):
        return datetime.fromisoformat(str(value["at"])).astimezone(UTC), str(value.get("id") or "")
    return default, ""


def _mark_state(mark: tuple[datetime, str]) -> dict[str, str]:
    return {"at": mark[0].isoformat(), "id": mark[1]}


def poll_crm_touches(
    factory: sessionmaker[Session],
    feed: TouchFeed,
    settings: SalesforceSettings,
    *,
    clock: Clock = utcnow,
) -> TouchPollSummary:
    """One pass over both streams; see the module docstring."""
    now = clock().replace(microsecond=0)
    until = now - timedelta(seconds=settings.touch_poll_lag_seconds)
    summary = TouchPollSummary(until=until)
    with factory() as session:
        state = raw_store.get_checkpoint(session, CHECKPOINT_SOURCE) or {}
        owners = sorted(set(settings.team_owner_ids) | set(review_repo.team_crm_user_ids(session)))
        oldest = sla_repo.oldest_open_first_response(session)
    # A first pass starts at the oldest clock still open: nothing earlier can stop one.
    start = min(oldest, until) if oldest is not None else until
    limit = settings.touch_query_limit
    for stream in STREAMS:
        mark = _mark(state.get(stream), start)
        if mark[0] >= until:
            continue
        while True:
            pages: Iterator[list[CrmTouch]]
            if stream == "leads":
                pages = feed.lead_touches(
                    after=mark,
                    until=until,
                    open_statuses=settings.open_statuses,
                    owner_ids=owners,
                    limit=limit,
                )
            else:
                pages = feed.task_touches(
                    after=mark, until=until, completed_status=settings.completed_task_status, limit=limit
                )
            read = 0
            for page in pages:
                read += len(page)
                summary.pages += 1
                if not page:
                    continue
                with transaction(factory) as session:
                    apply_touches(session, page, now=now, summary=summary)
                    mark = page[-1].cursor
                    state[stream] = _mark_state(mark)
                    raw_store.set_checkpoint(session, CHECKPOINT_SOURCE, dict(state), now=now)
            if stream == "leads":
                summary.leads_seen += read
            else:
                summary.tasks_seen += read
            if read < limit:
                break  # the window is read to its end; otherwise query again after the new mark
        state[stream] = _mark_state((until, ""))
        with transaction(factory) as session:
            raw_store.set_checkpoint(session, CHECKPOINT_SOURCE, dict(state), now=now)
    log.info(
        "CRM touches: %d leads and %d tasks read, %d clocks stopped",
        summary.leads_seen,
        summary.tasks_seen,
        summary.clocks_stopped,
    )
    return summary


def apply_touches(
    session: Session, touches: Sequence[CrmTouch], *, now: datetime, summary: TouchPollSummary
) -> int:
    """Stop the clocks these touches are the earliest touch of; returns how many stopped."""
    by_crm_id = outbox.enquiries_by_crm_id(session, [touch.lead_id for touch in touches])
    earliest: dict[str, CrmTouch] = {}
    for touch in touches:
        enquiry_id = by_crm_id.get(touch.lead_id) or touch.external_id
        if enquiry_id is None:
            summary.not_ours += 1
            continue
        if enquiry_id not in earliest or touch.at < earliest[enquiry_id].at:
            earliest[enquiry_id] = touch
    stops = sla_repo.first_response_stops(session, list(earliest))
    names = review_repo.user_names_by_crm_id(session, [touch.by or "" for touch in earliest.values()])
    stopped = 0
    for enquiry_id, touch in sorted(earliest.items()):
        if enquiry_id not in stops:
            summary.not_ours += 1
            continue
        at = min(touch.at, now)
        already = stops[enquiry_id]
        if already is not None and already <= at:
            continue  # an earlier (or this very) touch stopped it: at most once, earliest wins
        by = names.get(touch.by or "") or (f"salesforce:{touch.by}" if touch.by else "salesforce")
        result = record_touch(session, enquiry_id, by=by, at=at, source="crm", now=now, note=touch.detail)
        if result.stopped:
            stopped += 1
            summary.stopped.append(enquiry_id)
    summary.clocks_stopped += stopped
    return stopped
