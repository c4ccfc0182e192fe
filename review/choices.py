"""The values a reviewer chooses from: intents, priorities, queues, lanes and roles.

Kept apart from `review.service` so the CLI can show them in its help without importing the service.
`INTENTS` is the bundled taxonomy; the policy directory's taxonomy (`taxonomy_choices`) and the intents a
team trained and promoted may be corrected to as well (`review.service.allowed_intents`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

PRIORITIES = ("urgent", "high", "normal", "low")
INTENTS = ("sales_demo", "pricing", "support", "billing", "partnership", "careers", "press", "spam", "other")
QUEUES = ("sales", "support", "finance", "partnerships", "hr", "marketing", "spam", "general")
LANES = ("automate", "hybrid", "human_only")
ROLES = ("sdr", "ops_lead", "admin")


@dataclass(frozen=True)
class TaxonomyChoices:
    """The intents and queues of the policy directory's taxonomy (a team's own, after `triage
    taxonomy init`), with the bundled queues kept valid."""

    intents: tuple[str, ...]
    queues: tuple[str, ...]


BUNDLED = TaxonomyChoices(INTENTS, QUEUES)
_cache: dict[tuple[str, int], TaxonomyChoices] = {}
_cache_lock = threading.Lock()


def taxonomy_choices(policy_dir: Path) -> TaxonomyChoices:
    """The taxonomy of `policy_dir` as choices, read again only when taxonomy.yaml changes."""
    from config.policy import Taxonomy
    from config.yaml_files import load_yaml_model

    path = Path(policy_dir) / "taxonomy.yaml"
    key = (str(path), path.stat().st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    taxonomy = load_yaml_model(path, Taxonomy, what="taxonomy")
    queues = dict.fromkeys((*(policy.queue for policy in taxonomy.intents.values()), *QUEUES))
    choices = TaxonomyChoices(tuple(taxonomy.intents), tuple(queues))
    with _cache_lock:
        _cache[key] = choices
    return choices


def intents_with(
    model_labels: tuple[str, ...] | list[str], taxonomy: TaxonomyChoices = BUNDLED
) -> tuple[str, ...]:
    """The taxonomy's intents, then the active model's own intents (a team's labels) not among them, in
    the model's order: what a reviewer may correct an item to."""
    extra = [label for label in dict.fromkeys(model_labels) if label not in taxonomy.intents]
    return (*taxonomy.intents, *extra)
