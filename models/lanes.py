"""The decision: which lane an enquiry takes, with every reason spelled out for the audit row.

The decision matrix sets how far an intent's task may be automated; each rule after that can only
move the enquiry towards people (automate → hybrid → human_only), never away from them.
"""

from __future__ import annotations

from collections.abc import Mapping

from config.policy import PRIORITY_ORDER, Policy
from models.records import Decision, Enrichment, Lane, Prediction

LANE_SAFETY = {Lane.AUTOMATE: 0, Lane.HYBRID: 1, Lane.HUMAN_ONLY: 2}
BOT_MODEL_VERSION = "rule:honeypot"


def _towards_people(current: Lane, floor: Lane) -> Lane:
    return current if LANE_SAFETY[current] >= LANE_SAFETY[floor] else floor


def priority_for(intent: str, text: str, enrichment: Enrichment, policy: Policy) -> tuple[str, list[str]]:
    """The intent's base priority, raised by the taxonomy's priority rules; returns reasons too."""
    priority = policy.taxonomy.intents[intent].priority
    reasons: list[str] = []
    lowered = text.lower()
    for rule in policy.taxonomy.priority_rules:
        if rule.intents and intent not in rule.intents:
            continue
        if rule.segments and enrichment.segment not in rule.segments:
            continue
        if rule.keywords and not any(keyword.lower() in lowered for keyword in rule.keywords):
            continue
        if PRIORITY_ORDER[rule.raise_to] > PRIORITY_ORDER[priority]:
            priority = rule.raise_to
            reasons.append(f"priority raised to {priority} by rule '{rule.name}'")
    return priority, reasons


def decide(
    *,
    prediction: Prediction,
    enrichment: Enrichment,
    text: str,
    policy: Policy,
    paused_reason: str | None = None,
    is_bot: bool = False,
    paused_tasks: Mapping[str, str] | None = None,
) -> Decision:
    """Choose the lane for one classified enquiry. `paused_tasks` (task → reason) are the tasks the
    live precision monitor paused (models.live_precision): their enquiries go to people."""
    intent = prediction.intent if prediction.intent in policy.taxonomy.intents else "other"
    reasons: list[str] = []
    if is_bot:
        intent = "spam"
        reasons.append("honeypot field filled: posted by a bot")
    intent_policy = policy.taxonomy.intents[intent]
    task = policy.matrix.tasks[intent_policy.task]
    lane = task.lane
    reasons.append(f"task {intent_policy.task} scores {task.total} on {task.matrix}: {task.matrix_lane}")

    if not is_bot:
        if prediction.intent not in policy.taxonomy.intents:
            lane = _towards_people(lane, Lane.HUMAN_ONLY)
            reasons.append(f"model intent {prediction.intent!r} is not in the taxonomy")
        if prediction.abstained:
            lane = _towards_people(lane, Lane(policy.lanes.abstain_lane))
            reasons.append(
                f"model abstained: confidence {prediction.confidence:.2f}"
                f" < threshold {prediction.threshold:.2f}"
            )
        arr = enrichment.arr_estimate
        if arr is not None and arr >= policy.lanes.arr_review_threshold_usd:
            lane = _towards_people(lane, Lane.HYBRID)
            what = "the CRM account's ARR" if enrichment.arr_source == "crm" else "estimated ARR"
            reasons.append(f"{what} {arr:,.0f} USD at or above {policy.lanes.arr_review_threshold_usd:,.0f}")
    if paused_tasks and intent_policy.task in paused_tasks:
        lane = _towards_people(lane, Lane(policy.lanes.spot_checks.paused_lane))
        reasons.append(f"automation of task {intent_policy.task} paused: {paused_tasks[intent_policy.task]}")
    if paused_reason is not None:
        lane = _towards_people(lane, Lane(policy.lanes.paused_lane))
        reasons.append(f"automation paused: {paused_reason}")

    priority, priority_reasons = priority_for(intent, text, enrichment, policy)
    return Decision(
        lane=lane,
        intent=intent,
        queue=intent_policy.queue,
        priority=priority,
        reasons=(*reasons, *priority_reasons),
        task=intent_policy.task,
        policy_version=policy.version,
        model_version=BOT_MODEL_VERSION if is_bot else prediction.model_version,
        confidence=1.0 if is_bot else prediction.confidence,
    )
