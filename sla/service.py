"""What the pipeline and the review app call to start, stop, pause and resume SLA clocks.

Every function works inside the caller's session/transaction and is idempotent: starting timers twice,
or a second person touching an enquiry, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from sla.calendar import add_business_minutes, business_minutes_between
from sla.policies import TIMER_KINDS, Policy, SlaPolicies, match_policy, tier_time
from store import sla_repo
from store.common import Clock, utcnow


@dataclass(frozen=True, slots=True)
class TimerStart:
    """What the pipeline knows about a stored enquiry that decides its SLA."""

    enquiry_id: str
    received_at: datetime
    priority: str
    intent: str
    channel: str
    queue: str
    segment: str = "unknown"


def first_check(policy: Policy, kind: str, due_at: datetime, target: int) -> datetime:
    """The earliest instant the watch pass must look at a running timer: its first tier or its due time."""
    instants = [due_at]
    instants += [
        tier_time(due_at, target, tier.percent, policy.calendar)
        for _index, tier in policy.tiers(kind)  # type: ignore[arg-type]
    ]
    return min(instants)


def start_timers(
    session: Session, items: Sequence[TimerStart], policies: SlaPolicies, *, now: datetime
) -> dict[str, datetime]:
    """Create the timers of newly stored enquiries; returns enquiry_id → first-response due time.

    The clock starts at `received_at` (what the customer experiences; never later than `now`).
    Enquiries whose policy has no SLA (spam) get no timer and are absent from the result. Running this
    again for the same enquiries inserts nothing and returns the stored due times.
    """
    rows: list[dict[str, Any]] = []
    for item in items:
        policy = match_policy(
            policies,
            priority=item.priority,
            intent=item.intent,
            channel=item.channel,
            queue=item.queue,
            segment=item.segment,
        )
        started_at = min(item.received_at, now)
        for kind in TIMER_KINDS:
            target = policy.target_minutes(kind)
            if target is None:
                continue
            due_at = add_business_minutes(started_at, target, policy.calendar)
            rows.append(
                {
                    "enquiry_id": item.enquiry_id,
                    "kind": kind,
                    "policy": policy.name,
                    "target_minutes": target,
                    "started_at": started_at,
                    "due_at": due_at,
                    "status": "running",
                    "next_check_at": first_check(policy, kind, due_at, target),
                }
            )
    if sla_repo.insert_timers(session, rows) == len(rows):  # all new: what was computed is what is stored
        return {row["enquiry_id"]: row["due_at"] for row in rows if row["kind"] == "first_response"}
    timed = sorted({row["enquiry_id"] for row in rows})
    return sla_repo.due_times(session, timed, kind="first_response")


def timer_starter(
    policies: SlaPolicies, *, clock: Clock = utcnow
) -> Callable[[Session, Sequence[TimerStart]], dict[str, datetime]]:
    """`start_timers` bound to these policies, stamped by `clock` at each call (the pipeline's hook)."""

    def start(session: Session, items: Sequence[TimerStart]) -> dict[str, datetime]:
        return start_timers(session, items, policies, now=clock())

    return start


TOUCH_SOURCES = ("pages", "mailbox", "crm", "automated")


def stop_first_response(
    session: Session, enquiry_id: str, *, by: str, at: datetime, source: str = "pages"
) -> bool:
    """A message reached the customer: stop the first-response clock at `at`, noting where from.

    Only a message to the customer is a first touch (a reply sent from our pages, one seen in the
    mailbox, a CRM touch, an automated reply the policy counts); claims and corrections are not.
    The earliest touch wins: a touch earlier than the recorded stop replaces it. Returns True if this
    call stopped or re-stamped the clock; a later touch, or an enquiry without a timer, returns False.
    """
    if source not in TOUCH_SOURCES:
        raise ValueError(f"touch source must be one of {', '.join(TOUCH_SOURCES)}; got {source!r}")
    return sla_repo.stop_timer(session, enquiry_id, kind="first_response", by=by, at=at, source=source)


def stop_resolution(session: Session, enquiry_id: str, *, by: str, at: datetime) -> bool:
    """The enquiry was resolved (its review item closed): stop the resolution clock. First call wins."""
    return sla_repo.stop_timer(session, enquiry_id, kind="resolution", by=by, at=at)


def pause(
    session: Session, enquiry_id: str, *, by: str, at: datetime, reason: str, policies: SlaPolicies
) -> int:
    """Stop the enquiry's running clocks while waiting on the customer. Returns timers paused.

    A paused timer keeps its old due time until it resumes; the business minutes left are computed from
    `paused_at` to that due time, so nothing needs storing besides the pause instant.
    """
    timers = sla_repo.open_timers_of(session, enquiry_id, status="running")
    events: list[dict[str, Any]] = []
    for timer in timers:
        if timer.due_at <= at:
            continue  # already past due: the watch pass marks it breached; a pause cannot undo that
        timer.status = "paused"
        timer.paused_at = at
        timer.next_check_at = None
        policy = policies.get(timer.policy)
        left = business_minutes_between(at, timer.due_at, policy.calendar) if policy else None
        events.append(
            _event(timer.id, f"pause:{at.isoformat()}", "pause", at, by=by, reason=reason, left=left)
        )
    session.flush()
    sla_repo.add_events(session, events)
    return len(events)


def resume(session: Session, enquiry_id: str, *, by: str, at: datetime, policies: SlaPolicies) -> int:
    """Restart paused clocks (the customer answered): due time moves by the business time spent paused.

    Returns timers resumed. Escalation tiers that already fired stay fired (their event keys exist).
    """
    timers = sla_repo.open_timers_of(session, enquiry_id, status="paused")
    events: list[dict[str, Any]] = []
    for timer in timers:
        policy = policies.get(timer.policy)
        paused_at = timer.paused_at or at
        if policy is not None:
            left = business_minutes_between(paused_at, timer.due_at, policy.calendar)
            timer.due_at = add_business_minutes(at, left, policy.calendar) if left > 0 else at
            timer.next_check_at = first_check(policy, timer.kind, timer.due_at, timer.target_minutes)
        else:
            timer.next_check_at = at
        timer.status = "running"
        timer.paused_at = None
        events.append(
            _event(timer.id, f"resume:{at.isoformat()}", "resume", at, by=by, due_at=timer.due_at.isoformat())
        )
    session.flush()
    sla_repo.add_events(session, events)
    return len(timers)


def _event(timer_id: int, key: str, action: str, at: datetime, **detail: Any) -> dict[str, Any]:
    # Clock changes are history, not notifications: sent_at is set so the outbox never picks them up.
    return {
        "timer_id": timer_id,
        "event_key": key,
        "action": action,
        "detail": detail,
        "created_at": at,
        "sent_at": at,
    }
