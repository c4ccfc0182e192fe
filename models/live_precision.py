"""The live precision monitor: the automated lane audits itself on spot checks (issue 13).

A share of automated enquiries (`lanes.yaml` `spot_checks.share`, default 2 %, chosen by a keyed hash of
the enquiry id so a re-run picks the same ones) plus at least `min_per_day` a day for each task with
traffic also goes to the review queue. The customer's handling is unchanged (lead, auto-reply, SLA as
automated); the reviewer only confirms or corrects, and that label scores the automated lane.

Each task's live automated precision is the share of its reviewed spot checks whose label equals what
the lane acted on, for the active model, since the task was last resumed, with a 95 % Wilson interval.
When the interval's upper bound falls below the active model's target precision, and the task has at
least `spot_checks.min_reviewed` reviewed spot checks (default 10: one wrong check of one has an upper
bound of 0.79, which alone would pause it), the task pauses on its
own: its enquiries go to people (`spot_checks.paused_lane`, Hybrid) until a person resumes it. The
pause writes an audit row on the spot check that tipped it and a notice for the ops lead, delivered by
the SLA watch pass (`deliver_pause_notices`). The shadow model is scored on the same spot checks.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from config.policy import SpotCheckPolicy
from models.errors import ConfigError, TriageError
from store import flags, model_registry, review_repo
from store import spot_checks as repo
from store.db import transaction
from store.tables import Enquiry

if TYPE_CHECKING:
    from connectors.notify import Notifier

log = logging.getLogger(__name__)

Z_95 = 1.959963984540054
DEFAULT_TARGET_PRECISION = 0.95
MONITOR_ACTOR = "live-precision-monitor"
# Only a person resumes a paused task.
MACHINE_ACTORS = frozenset(
    {"system", "retrain", "prefect", "automation", "scheduler", "bot", "flow", MONITOR_ACTOR}
)
NOTICE_ROLES = ("ops_lead", "slack")
# The pause rule's minimum sample: the pipeline stores the policy's value in this flag when it selects
# spot checks, because reviews (review.service) do not load the policy.
PAUSE_RULE_FLAG = "live_precision_pause_rule"
DEFAULT_MIN_REVIEWED = 10
_SELECTION_KEY = b"triage-spot-check\0"


def wilson_interval(correct: int, n: int, *, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion (95 % by default); None without trials."""
    if n <= 0:
        return None
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def selection_score(enquiry_id: str) -> float:
    """A deterministic number in [0, 1) per enquiry: an enquiry is a spot check when it is below the
    share. Keyed, so the choice does not follow any property of the enquiry a sender controls."""
    digest = hashlib.sha256(_SELECTION_KEY + enquiry_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Candidate:
    """An automated enquiry of this batch."""

    enquiry_id: str
    task: str
    model_version: str
    intent: str


def choose(
    candidates: Sequence[Candidate], *, share: float, min_per_day: int, checked_today: dict[str, int]
) -> dict[str, str]:
    """Pure selection: enquiry id → reason (`share` or `daily_minimum`).

    Every candidate under the share is chosen; then each task still short of `min_per_day` spot checks
    today takes its lowest-scoring remaining candidates.
    """
    chosen: dict[str, str] = {}
    by_task: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        if selection_score(candidate.enquiry_id) < share:
            chosen[candidate.enquiry_id] = "share"
        by_task[candidate.task].append(candidate)
    for task, items in by_task.items():
        have = checked_today.get(task, 0) + sum(item.enquiry_id in chosen for item in items)
        rest = sorted(
            (item for item in items if item.enquiry_id not in chosen),
            key=lambda item: selection_score(item.enquiry_id),
        )
        for item in rest[: max(0, min_per_day - have)]:
            chosen[item.enquiry_id] = "daily_minimum"
    return chosen


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of `now`'s day: the per-day minimum counts UTC days."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def select_spot_checks(
    session: Session, candidates: Sequence[Candidate], policy: SpotCheckPolicy, *, now: datetime
) -> dict[str, str]:
    """Choose this batch's spot checks and store them; returns enquiry id → reason."""
    if not candidates or (policy.share <= 0 and policy.min_per_day <= 0):
        return {}
    checked_today = (
        repo.counts_since(session, {c.task for c in candidates}, start_of_day(now))
        if policy.min_per_day > 0
        else {}
    )
    chosen = choose(
        candidates, share=policy.share, min_per_day=policy.min_per_day, checked_today=checked_today
    )
    record_pause_rule(session, policy, now=now)
    repo.add_spot_checks(
        session,
        [
            {
                "enquiry_id": c.enquiry_id,
                "task": c.task,
                "model_version": c.model_version,
                "intent": c.intent,
                "reason": chosen[c.enquiry_id],
                "selected_at": now,
            }
            for c in candidates
            if c.enquiry_id in chosen
        ],
    )
    return chosen


def record_pause_rule(session: Session, policy: SpotCheckPolicy, *, now: datetime) -> None:
    """Store the policy's minimum sample for pausing, when it changed (reviews read it from there)."""
    if (flags.get_value(session, PAUSE_RULE_FLAG) or {}).get("min_reviewed") != policy.min_reviewed:
        flags.set_value(session, PAUSE_RULE_FLAG, {"min_reviewed": policy.min_reviewed}, by="policy", now=now)


def min_reviewed(session: Session) -> int:
    """How many reviewed spot checks a task needs before it may pause (the policy's last stored value)."""
    value = (flags.get_value(session, PAUSE_RULE_FLAG) or {}).get("min_reviewed")
    return int(value) if isinstance(value, int) and value >= 1 else DEFAULT_MIN_REVIEWED


def should_pause(figures: TaskPrecision, *, minimum: int) -> bool:
    """The pause rule: enough reviewed spot checks, and the upper bound of the live precision below the
    target."""
    return (
        not figures.paused
        and figures.reviewed >= minimum
        and figures.high is not None
        and figures.high < figures.target
    )


@dataclass(frozen=True)
class TaskPrecision:
    """One task's live automated precision on its reviewed spot checks."""

    task: str
    model_version: str | None
    reviewed: int
    correct: int
    precision: float | None
    low: float | None
    high: float | None
    target: float
    paused: bool
    reason: str | None
    since: str | None  # when a person last resumed the task: the window starts there

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def active_target(session: Session) -> tuple[str | None, float]:
    """The active model's version and the target precision it was trained for."""
    row = model_registry.version_with_status(session, "active")
    if row is None:
        return None, DEFAULT_TARGET_PRECISION
    target = (row.provenance or {}).get("params", {}).get("target_precision")
    return row.version, float(target) if target is not None else DEFAULT_TARGET_PRECISION


def _resumed_since(record: dict[str, Any]) -> datetime | None:
    value = record.get("resumed_at")
    return datetime.fromisoformat(value) if value else None


def task_precisions(session: Session) -> list[TaskPrecision]:
    """Every task with reviewed spot checks of the active model, or a pause record, by name."""
    version, target = active_target(session)
    pauses = {str(record["task"]): record for record in flags.all_task_pauses(session)}
    since = {task: at for task, record in pauses.items() if (at := _resumed_since(record)) is not None}
    tallies = repo.tallies(session, model_version=version, since_by_task=since) if version else {}
    out = []
    for task in sorted(set(tallies) | set(pauses)):
        tally = tallies.get(task)
        n, k = (tally.reviewed, tally.correct) if tally else (0, 0)
        interval = wilson_interval(k, n)
        record = pauses.get(task, {})
        out.append(
            TaskPrecision(
                task=task,
                model_version=version,
                reviewed=n,
                correct=k,
                precision=round(k / n, 6) if n else None,
                low=round(interval[0], 6) if interval else None,
                high=round(interval[1], 6) if interval else None,
                target=target,
                paused=bool(record.get("paused")),
                reason=record.get("reason") if record.get("paused") else None,
                since=record.get("resumed_at"),
            )
        )
    return out


def _audit(
    session: Session, enquiry_id: str | None, *, actor: str, kind: str, reasons: list[str], now: datetime
) -> None:
    enquiry = session.get(Enquiry, enquiry_id) if enquiry_id else None
    if enquiry is None:
        return
    review_repo.add_decision(
        session,
        {
            "enquiry_id": enquiry.id,
            "created_at": now,
            "actor": actor,
            "kind": kind,
            "lane": enquiry.lane,
            "intent": enquiry.intent,
            "queue": enquiry.queue,
            "priority": enquiry.priority,
            "confidence": enquiry.confidence,
            "task": kind,
            "reasons": reasons,
            "policy_version": "live_precision",
            "model_version": enquiry.model_version,
        },
    )


def evaluate_task(
    session: Session,
    task: str,
    *,
    now: datetime,
    trigger_enquiry: str | None = None,
    minimum: int | None = None,
) -> TaskPrecision | None:
    """Pause `task` when it has at least `minimum` reviewed spot checks (default: the policy's
    `min_reviewed`, `min_reviewed(session)`) and its live precision's upper bound is below the target;
    returns its figures."""
    figures = next((tp for tp in task_precisions(session) if tp.task == task), None)
    needed = min_reviewed(session) if minimum is None else minimum
    if figures is None or not should_pause(figures, minimum=needed):
        return figures
    reason = (
        f"live automated precision {figures.precision:.3f} on {figures.reviewed} spot checks of model "
        f"{figures.model_version} (95% Wilson interval {figures.low:.3f}-{figures.high:.3f}) is below the "
        f"target {figures.target:.3f}"
    )
    flags.set_task_pause(
        session,
        task,
        {
            "paused": True,
            "reason": reason,
            "paused_at": now.isoformat(),
            "model_version": figures.model_version,
            "reviewed": figures.reviewed,
            "correct": figures.correct,
            "enquiry_id": trigger_enquiry,
            "notify_pending": True,
        },
        by=MONITOR_ACTOR,
        at=now,
    )
    _audit(
        session,
        trigger_enquiry,
        actor=MONITOR_ACTOR,
        kind="task_pause",
        reasons=[f"automation of task {task} paused: {reason}"],
        now=now,
    )
    log.warning("automation of task %s paused: %s", task, reason)
    return next(tp for tp in task_precisions(session) if tp.task == task)


def after_review(
    session: Session, enquiry_id: str, *, intent: str, by: str, now: datetime
) -> TaskPrecision | None:
    """A person accepted or corrected `enquiry_id`: if it is a spot check, store the label and check its
    task (which may pause). None when the enquiry is not a spot check."""
    row = repo.record_review(session, enquiry_id, intent=intent, by=by, at=now)
    if row is None:
        return None
    return evaluate_task(session, row.task, now=now, trigger_enquiry=enquiry_id)


def resume_task(session: Session, task: str, *, by: str, now: datetime) -> dict[str, Any]:
    """A person lets `task` automate again; its live precision counts afresh from now."""
    who = (by or "").strip()
    if not who or who.lower() in MACHINE_ACTORS:
        raise ConfigError(
            "resuming a paused task needs a person's name (--by NAME): only a person resumes it"
        )
    record = flags.task_pause(session, task)
    if record is None or not record.get("paused"):
        paused = sorted(flags.paused_tasks(session))
        raise ConfigError(
            f"task {task!r} is not paused; paused tasks: {', '.join(paused) if paused else 'none'}"
        )
    updated = {
        **record,
        "paused": False,
        "resumed_at": now.isoformat(),
        "resumed_by": who,
        "notify_pending": False,
    }
    flags.set_task_pause(session, task, updated, by=who, at=now)
    _audit(
        session,
        record.get("enquiry_id"),
        actor=who,
        kind="task_resume",
        reasons=[f"automation of task {task} resumed by {who} (paused because: {record.get('reason')})"],
        now=now,
    )
    return updated


def shadow_precision(session: Session) -> dict[str, Any] | None:
    """The shadow model scored on the reviewed spot checks it also scored: its automated precision
    (where it would not have abstained) overall and per task, with Wilson intervals. None without a
    shadow model."""
    row = model_registry.version_with_status(session, "shadow")
    if row is None:
        return None
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for task, intent, abstained, truth in repo.shadow_outcomes(session, row.version):
        counts = per_task[task]
        counts[0] += 1
        if not abstained:
            counts[1] += 1
            counts[2] += int(intent == truth)

    def figures(scored: int, automated: int, right: int) -> dict[str, Any]:
        interval = wilson_interval(right, automated)
        return {
            "spot_checks_scored": scored,
            "automated": automated,
            "correct": right,
            "precision": round(right / automated, 6) if automated else None,
            "low": round(interval[0], 6) if interval else None,
            "high": round(interval[1], 6) if interval else None,
        }

    totals = [sum(c[i] for c in per_task.values()) for i in range(3)]
    return {
        "version": row.version,
        **figures(*totals),
        "tasks": {task: figures(*counts) for task, counts in sorted(per_task.items())},
    }


def monitor_report(session: Session) -> dict[str, Any]:
    """What the ops page, /metrics and `triage status --json` show: each task's live precision, the
    spot checks selected and reviewed, and the shadow model's precision on them."""
    selected = repo.selected_counts(session)
    return {
        "tasks": [tp.as_dict() for tp in task_precisions(session)],
        "spot_checks": {task: {"selected": s, "reviewed": r} for task, (s, r) in sorted(selected.items())},
        "shadow": shadow_precision(session),
        "min_reviewed": min_reviewed(session),
    }


def deliver_pause_notices(factory: sessionmaker[Session], notifier: Notifier, *, now: datetime) -> int:
    """Tell the ops lead (and the Slack webhook) of tasks paused since the last pass; returns messages
    sent. A notice whose send fails stays pending for the next pass."""
    from connectors.notify import Notification

    sent = 0
    available = notifier.roles()
    with transaction(factory) as session:
        for record in flags.all_task_pauses(session):
            if not (record.get("paused") and record.get("notify_pending")):
                continue
            task = str(record["task"])
            roles = [role for role in NOTICE_ROLES if role in available]
            failed = False
            for role in roles:
                try:
                    notifier.send(
                        Notification(
                            role=role,
                            subject=f"Automation paused: task {task}",
                            text=(
                                f"{record.get('reason')}.\n\nIts enquiries now go to people. Review the spot "
                                f"checks, then resume it: triage automation resume-task {task} --by NAME "
                                "(or the Resume button on the ops page)."
                            ),
                        )
                    )
                    sent += 1
                except TriageError as error:
                    log.warning("task pause notice to %s failed, will retry next pass: %s", role, error)
                    failed = True
            if not roles:
                log.warning("task %s paused, but no ops_lead or slack destination is configured", task)
            if not failed:
                value = {key: value for key, value in record.items() if key != "updated_by"}
                flags.set_task_pause(
                    session,
                    task,
                    {**value, "notify_pending": False, "notified_at": now.isoformat()},
                    by=MONITOR_ACTOR,
                    at=now,
                )
    return sent
