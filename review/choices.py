"""The values a reviewer chooses from: intents, priorities, queues, lanes and roles.

Kept apart from `review.service` so the CLI can show them in its help without importing the service.
"""

from __future__ import annotations

PRIORITIES = ("urgent", "high", "normal", "low")
INTENTS = ("sales_demo", "pricing", "support", "billing", "partnership", "careers", "press", "spam", "other")
QUEUES = ("sales", "support", "finance", "partnerships", "hr", "marketing", "spam", "general")
LANES = ("automate", "hybrid", "human_only")
ROLES = ("sdr", "ops_lead", "admin")
