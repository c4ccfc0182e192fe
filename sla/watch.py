"""One pass of the SLA watch: mark breaches, fire escalation tiers once, deliver what was fired.

Run it every minute (flows/sla_watch.py) or by hand (`triage sla watch`). It is safe to run twice or late:
- a tier fires by inserting its event under a unique (timer, "escalation:<index>") key, so it fires
  once however many passes see it, and a pass after downtime fires each crossed tier once;
- delivery is an outbox: events are committed first, then sent, then marked sent; a role whose send
  failed stays in the events' `detail["roles"]` and is retried by the next pass, while the roles that
  got the message are removed so they are not told twice. A crash between sending and marking can
  repeat one message (at-least-once), never lose one;
- each pass touches only timers whose `next_check_at` has come (an index), so 100,000 open timers
  cost nothing until one of them reaches a threshold, and at most `max_timers` of those per pass;
- on PostgreSQL a transaction-level advisory lock lets one worker's pass run at a time (another
  worker's pass skips); on SQLite run one watch process (the deployment allows one run at a time).
Several escalations for one role in one pass go out as one digest message, so catching up after a
night of downtime sends a handful of messages, not thousands.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from connectors.notify import Notification, Notifier
from models import live_precision
from models.errors import TriageError
from sla.policies import EscalationTier, SlaPolicies, tier_time
from store import sla_repo
from store.db import transaction

log = logging.getLogger(__name__)

DIGEST_LINES = 200


@dataclass(slots=True)
class WatchSummary:
    """What one pass did."""

    breached: int = 0
    checked: int = 0
    escalations_fired: int = 0
    messages_sent: int = 0
    events_delivered: int = 0
    failures: list[str] = field(default_factory=list)
    skipped_roles: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON output and the flow-run record."""
        return {
            "breached": self.breached,
            "checked": self.checked,
            "escalations_fired": self.escalations_fired,
            "messages_sent": self.messages_sent,
            "events_delivered": self.events_delivered,
            "failures": list(self.failures),
            "skipped_roles": list(self.skipped_roles),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class TierFiring:
    """One escalation tier reached by some timers in this pass."""

    event_key: str
    action: str
    percent: int
    roles: tuple[str, ...]
    timer_ids: list[int] = field(default_factory=list)


def watch_pass(
    factory: sessionmaker[Session],
    policies: SlaPolicies,
    notifier: Notifier,
    *,
    now: datetime,
    max_timers: int = 10_000,
) -> WatchSummary:
    """Mark breaches, fire due escalation tiers exactly once, and deliver undelivered escalations.

    At most `max_timers` timers are examined per pass, earliest threshold first; after a long outage
    the rest are caught up by the next passes, each tier still firing once.
    """
    started = time.perf_counter()
    summary = WatchSummary()
    with transaction(factory) as session:
        if not sla_repo.try_watch_lock(session):
            log.info("another SLA watch pass holds the lock; skipping this one")
            summary.failures.append("skipped: another watch pass is running")
            return summary
        summary.breached = sla_repo.mark_breaches(session, now=now)
        timers = sla_repo.timers_to_check(session, now=now, limit=max_timers)
        firings, next_checks = plan_escalations(timers, policies, now=now)
        for firing in firings:
            summary.escalations_fired += sla_repo.fire_escalations(
                session,
                event_key=firing.event_key,
                action=firing.action,
                detail={"percent": firing.percent, "roles": list(firing.roles)},
                timer_ids=firing.timer_ids,
                now=now,
                delivered=not firing.roles,
            )
        sla_repo.set_next_checks(session, next_checks)
        summary.checked = len(timers)
    deliver(factory, notifier, now=now, summary=summary)
    # Tasks the live precision monitor paused since the last pass: the ops lead hears of them here.
    summary.messages_sent += live_precision.deliver_pause_notices(factory, notifier, now=now)
    summary.seconds = time.perf_counter() - started
    return summary


def plan_escalations(
    timers: Sequence[sla_repo.TimerToCheck], policies: SlaPolicies, *, now: datetime
) -> tuple[list[TierFiring], list[tuple[int, datetime | None]]]:
    """Pure decision: which tiers the timers have reached by `now`, and each timer's next check instant.

    A tier reached in an earlier pass is listed again and skipped by the unique event key, so this needs
    no memory of what already fired.
    """
    firings: dict[tuple[str, str, int, tuple[str, ...]], TierFiring] = {}
    next_checks: list[tuple[int, datetime | None]] = []
    tiers_of: dict[tuple[str, str], list[tuple[int, EscalationTier]]] = {}
    memo: dict[tuple[str, datetime, int, int], datetime] = {}
    for timer in timers:
        policy = policies.get(timer.policy)
        if policy is None:
            log.warning("timer %s names policy %r, which is no longer configured", timer.id, timer.policy)
            next_checks.append((timer.id, None))
            continue
        upcoming: list[datetime] = []
        if timer.status == "running" and timer.due_at > now:
            upcoming.append(timer.due_at)
        tiers = tiers_of.get((timer.policy, timer.kind))
        if tiers is None:
            tiers = tiers_of[(timer.policy, timer.kind)] = policy.tiers(timer.kind)  # type: ignore[arg-type]
        for index, tier in tiers:
            if tier.percent == 100:
                fires_at = timer.due_at
            else:
                # Enquiries that arrive out of hours share due times (the next opening + target), so a
                # pass after a night or a weekend computes each threshold once.
                memo_key = (policy.calendar.name, timer.due_at, timer.target_minutes, tier.percent)
                fires_at = memo.get(memo_key) or memo.setdefault(
                    memo_key, tier_time(timer.due_at, timer.target_minutes, tier.percent, policy.calendar)
                )
            if fires_at > now:
                upcoming.append(fires_at)
                continue
            key = (f"{sla_repo.ESCALATION_PREFIX}{index}", tier.action, tier.percent, tier.notify)
            firing = firings.get(key)
            if firing is None:
                firing = firings[key] = TierFiring(*key)
            firing.timer_ids.append(timer.id)
        next_checks.append((timer.id, min(upcoming) if upcoming else None))
    return list(firings.values()), next_checks


def deliver(
    factory: sessionmaker[Session],
    notifier: Notifier,
    *,
    now: datetime,
    summary: WatchSummary | None = None,
) -> WatchSummary:
    """Send undelivered escalations, one digest per role, and mark them once all their roles have them.

    A role whose send fails is kept in the events' remaining roles and retried by the next pass; the
    roles that got the message are removed, so they are not told twice.
    """
    summary = summary if summary is not None else WatchSummary()
    available = notifier.roles()
    with transaction(factory) as session:
        if not sla_repo.try_watch_lock(session):
            return summary
        groups = sla_repo.pending_groups(session)
        by_role: dict[str, list[sla_repo.PendingGroup]] = defaultdict(list)
        unreachable: set[str] = set()
        for group in groups:
            for role in group.roles:
                if role in available:
                    by_role[role].append(group)
                else:
                    unreachable.add(role)
        if unreachable:
            log.warning("no destination configured for role(s) %s: skipping them", sorted(unreachable))
            summary.skipped_roles = sorted(unreachable)
        delivered_roles: set[str] = set()
        for role, role_groups in sorted(by_role.items()):
            shown: list[int] = []
            for group in role_groups:
                if len(shown) < DIGEST_LINES:
                    shown += sla_repo.group_event_ids(session, group, limit=DIGEST_LINES - len(shown))
            lines = sla_repo.notice_lines(session, shown)
            counts: dict[str, int] = defaultdict(int)
            for group in role_groups:
                counts[group.action] += group.count
            try:
                notifier.send(digest(role, [lines[i] for i in shown if i in lines], counts, now=now))
            except TriageError as error:
                log.warning("escalation delivery to %s failed, will retry next pass: %s", role, error)
                summary.failures.append(f"{role}: {error}")
                continue
            delivered_roles.add(role)
            summary.messages_sent += 1
        for group in groups:
            left = [role for role in group.roles if role not in delivered_roles and role not in unreachable]
            if not left:
                summary.events_delivered += sla_repo.mark_group_sent(session, group, at=now)
            elif len(left) < len(group.roles):
                sla_repo.set_group_roles(session, group, left)
    return summary


def digest(
    role: str, lines: Sequence[sla_repo.NoticeLine], counts: dict[str, int], *, now: datetime
) -> Notification:
    """One message for one role: how many escalations of each kind, and the oldest ones by name."""
    total = sum(counts.values())
    summary = ", ".join(f"{count} × {action}" for action, count in sorted(counts.items()))
    if total == 1 and lines:
        subject = f"SLA {lines[0].action}: enquiry {lines[0].enquiry_id} ({lines[0].policy})"
    else:
        subject = f"SLA escalations: {summary}"
    text = [f"SLA escalations as of {now.isoformat()} ({summary}):", ""]
    for line in lines:
        text.append(
            f"- [{line.action}] enquiry {line.enquiry_id} · {line.queue}/{line.intent} · "
            f"policy {line.policy} · {line.kind} {line.percent}% of {line.target_minutes} business minutes · "
            f"due {line.due_at.isoformat()} · “{_clip(line.subject, 80)}”"
        )
    if total > len(lines):
        text.append(f"… and {total - len(lines)} more (see `triage sla timers`).")
    return Notification(role=role, subject=subject, text="\n".join(text))


def _clip(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
