"""`triage taxonomy init`: a validated taxonomy and decision-matrix entries for a team's own labels.

Each label becomes an intent whose queue is named after it, at normal priority, acted on by a task of
its own (`team_<label>`) scored Hybrid on the marketing4 matrix, so people see every enquiry until the
ops lead raises the task's scores. `spam` and `other` stay (the lane engine falls back to `other`; the
lane policy names `spam`), and so do the bundled tasks. An out-of-scope label, if named, routes to people
only. Nothing is written until the whole policy directory loads (`config.policy.load_policy`), and an
existing taxonomy is never overwritten without `force`.
"""

from __future__ import annotations

import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from config.policy import load_policy
from models.errors import ConfigError

DEFAULTS = Path(__file__).resolve().parent / "defaults"
WRITTEN = ("taxonomy.yaml", "decision_matrix.yaml")
KEPT_INTENTS = ("spam", "other")  # the lane engine and lanes.yaml rely on these
MAX_LABEL_CHARS = 60  # intents and queues are 80-character columns; the task adds a prefix
TEAM_TASK_PREFIX = "team_"
OOS_TASK = "route_to_people"
# marketing4 totals: 12 is Hybrid (11-15), 8 is Human-only (4-10); see config.policy.score_matrix.
HYBRID_SCORES = {"predictability": 3, "impact_of_error": 3, "data_sensitivity": 3, "context_depth": 3}
HUMAN_ONLY_SCORES = {"predictability": 2, "impact_of_error": 2, "data_sensitivity": 2, "context_depth": 2}
MIN_ROWS_PER_LABEL = 4  # models.retraining: fewer rows than this cannot be calibrated


@dataclass
class TaxonomyPlan:
    """What `init` writes and what a person should look at next."""

    taxonomy: dict[str, Any]
    matrix: dict[str, Any]
    label_counts: dict[str, int]
    oos_label: str | None
    review: list[str] = field(default_factory=list)


def _check_label(label: str) -> None:
    if not label.strip() or label != label.strip():
        raise ConfigError(f"label {label!r} is empty or has spaces around it; clean the data file")
    if len(label) > MAX_LABEL_CHARS:
        raise ConfigError(f"label {label[:40]!r}... is longer than {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(char).startswith("C") for char in label):
        raise ConfigError(f"label {label!r} holds control or invisible characters; clean the data file")


def plan(labels: Sequence[str], *, oos_label: str | None, source: str) -> TaxonomyPlan:
    """The taxonomy and decision matrix for these labels (every row's label, repeats counted)."""
    counts = Counter(labels)
    if not counts:
        raise ConfigError(f"{source} has no labelled rows")
    if oos_label is not None and oos_label not in counts:
        raise ConfigError(
            f"--oos-label {oos_label!r} is not a label of {source} (labels: {', '.join(sorted(counts))})"
        )
    for label in counts:
        _check_label(label)
    bundled_taxonomy = yaml.safe_load((DEFAULTS / "taxonomy.yaml").read_text(encoding="utf-8"))
    bundled_matrix = yaml.safe_load((DEFAULTS / "decision_matrix.yaml").read_text(encoding="utf-8"))
    team = [label for label in sorted(counts) if label != oos_label]

    intents: dict[str, Any] = {}
    tasks: dict[str, Any] = dict(bundled_matrix["tasks"])
    for label in team:
        task = f"{TEAM_TASK_PREFIX}{label}"
        intents[label] = {
            "description": f"{label} (from {source}, {counts[label]} examples)",
            "queue": label,
            "priority": "normal",
            "task": task,
        }
        tasks[task] = {
            "description": f"Route {label} enquiries to the {label} queue.",
            "matrix": "marketing4",
            "scores": dict(HYBRID_SCORES),
            "owner": "Ops lead",
            "review_sla": "every item is seen by its queue's team within its SLA",
            "escalation": "ops lead",
            "rollback": "reassign in the review queue",
        }
    if oos_label is not None:
        intents[oos_label] = {
            "description": f"Out of scope (label {oos_label} in {source}); a person looks at it.",
            "queue": "general",
            "priority": "low",
            "task": OOS_TASK,
        }
        tasks[OOS_TASK] = {
            "description": "Send an enquiry the team's intents do not cover to people.",
            "matrix": "marketing4",
            "scores": dict(HUMAN_ONLY_SCORES),
            "owner": "Ops lead",
            "review_sla": "every item is seen within its SLA",
            "escalation": "ops lead",
            "rollback": "reassign in the review queue",
        }
    for name in KEPT_INTENTS:
        intents.setdefault(name, bundled_taxonomy["intents"][name])

    review: list[str] = []
    rules = []
    for rule in bundled_taxonomy.get("priority_rules", []):
        named = rule.get("intents") or []
        kept = [intent for intent in named if intent in intents]
        if named and not kept:
            review.append(f"priority rule {rule['name']!r} was dropped: it names none of your intents")
            continue
        rules.append({**rule, "intents": kept} if named else rule)
    taxonomy = {"version": 1, "intents": intents, "priority_rules": rules}
    matrix = {"version": bundled_matrix.get("version", 1), "tasks": tasks}

    review += [
        f"every one of your {len(team)} intents starts Hybrid (people confirm each one): raise the scores "
        f"of its task ({TEAM_TASK_PREFIX}<label>) in decision_matrix.yaml to automate it "
        "(`triage policy score 5,4,4,4` shows the lane a set of scores gives)",
        "queues are named after the labels: rename them to your teams' queues in taxonomy.yaml",
        "every priority is normal: set high or urgent where it matters",
    ]
    thin = sorted(label for label, n in counts.items() if n < MIN_ROWS_PER_LABEL)
    if thin:
        review.append(
            f"{len(thin)} label(s) have fewer than {MIN_ROWS_PER_LABEL} examples and cannot be trained yet: "
            + ", ".join(thin)
        )
    kept = [name for name in KEPT_INTENTS if name not in counts]
    if kept:
        review.append(
            f"kept the bundled intent(s) {', '.join(kept)}: the lane engine and lanes.yaml use them"
        )
    if oos_label is None:
        review.append("no --oos-label: enquiries outside your intents are caught by abstention only")
    return TaxonomyPlan(taxonomy, matrix, dict(sorted(counts.items())), oos_label, review)


def _dump(data: dict[str, Any], header: str) -> str:
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write(plan_: TaxonomyPlan, directory: Path, *, force: bool, source: str) -> list[Path]:
    """Validate the plan as a whole policy directory, then write it into `directory`; returns the files
    written (the two policy files, and any other policy file the directory lacked, copied from the
    bundled defaults so the directory is complete)."""
    directory = Path(directory)
    if directory.resolve() == DEFAULTS.resolve():
        raise ConfigError(
            "the bundled default policy is never edited: pass --policy-dir DIR "
            "(and set TRIAGE_POLICY_DIR=DIR)"
        )
    existing = [name for name in WRITTEN if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{directory} already has {', '.join(existing)}; pass --force to overwrite (keep a copy first)"
        )
    header = (
        f"# Written by `triage taxonomy init` from {source}. Review it, then keep it under version control.\n"
    )
    texts = {
        "taxonomy.yaml": _dump(plan_.taxonomy, header),
        "decision_matrix.yaml": _dump(plan_.matrix, header),
    }
    missing = [
        item
        for item in sorted(DEFAULTS.iterdir())
        if item.name not in WRITTEN and not (directory / item.name).exists()
    ]
    with tempfile.TemporaryDirectory() as scratch:
        trial = Path(scratch)
        for item in sorted(DEFAULTS.iterdir()):
            source_item = directory / item.name if (directory / item.name).exists() else item
            if source_item.is_dir():
                shutil.copytree(source_item, trial / item.name)
            else:
                shutil.copyfile(source_item, trial / item.name)
        for name, text in texts.items():
            (trial / name).write_text(text, encoding="utf-8")
        load_policy(trial)  # raises ConfigError naming the file and field; nothing written yet
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for item in missing:
        target = directory / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            shutil.copyfile(item, target)
        written.append(target)
    for name, text in texts.items():
        (directory / name).write_text(text, encoding="utf-8")
        written.append(directory / name)
    return written
