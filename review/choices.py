"""The values a reviewer chooses from: intents, priorities, queues, lanes and roles.

Kept apart from `review.service` so the CLI can show them in its help without importing the service.
`INTENTS` is the bundled taxonomy; a team that trained and promoted its own intents may also correct to
those (`review.service.allowed_intents`).
"""

from __future__ import annotations

PRIORITIES = ("urgent", "high", "normal", "low")
INTENTS = ("sales_demo", "pricing", "support", "billing", "partnership", "careers", "press", "spam", "other")
QUEUES = ("sales", "support", "finance", "partnerships", "hr", "marketing", "spam", "general")
LANES = ("automate", "hybrid", "human_only")
ROLES = ("sdr", "ops_lead", "admin")


def intents_with(model_labels: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The bundled taxonomy's intents, then the active model's own intents (a team's labels) not among
    them, in the model's order: what a reviewer may correct an item to."""
    extra = [label for label in dict.fromkeys(model_labels) if label not in INTENTS]
    return (*INTENTS, *extra)
