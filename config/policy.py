"""Policy files: YAML under version control, validated once at load.

A mistake in a policy file stops the run with the file, the field and the line at fault. The policy
version recorded on every audit row is a hash of the files' bytes, so any edit is a new version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.hook_mappings import HookMappings, load_hook_mappings
from config.yaml_files import load_yaml_model
from models.errors import ConfigError
from models.records import Lane

Priority = Literal["urgent", "high", "normal", "low"]
PRIORITY_ORDER: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
Segment = Literal["smb", "mid_market", "enterprise", "unknown"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntentPolicy(_Strict):
    description: str = ""
    queue: str
    priority: Priority
    task: str


class PriorityRule(_Strict):
    name: str
    segments: list[Segment] = Field(default_factory=list)
    intents: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    raise_to: Priority


class Taxonomy(_Strict):
    version: int
    intents: dict[str, IntentPolicy]
    priority_rules: list[PriorityRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_known_intents(self) -> Taxonomy:
        for index, rule in enumerate(self.priority_rules):
            unknown = set(rule.intents) - set(self.intents)
            if unknown:
                raise ValueError(f"priority_rules.{index}.intents names unknown intents {sorted(unknown)}")
        return self


class SpotCheckPolicy(_Strict):
    """The live precision monitor (models.live_precision): a share of automated enquiries also goes to
    people, and a task whose live precision is surely below the model's target pauses on its own."""

    share: float = Field(default=0.02, ge=0, le=1, description="Share of automated enquiries checked.")
    min_per_day: int = Field(default=1, ge=0, description="At least this many a day per task with traffic.")
    paused_lane: Literal["hybrid", "human_only"] = "hybrid"
    min_reviewed: int = Field(
        default=10,
        ge=1,
        description="A task pauses only once it has at least this many reviewed spot checks (and the "
        "Wilson upper bound of its live precision is below the target): one wrong check never does.",
    )


class LanePolicy(_Strict):
    version: int
    arr_review_threshold_usd: float = Field(gt=0)
    abstain_lane: Literal["hybrid", "human_only"] = "human_only"
    paused_lane: Literal["hybrid", "human_only"] = "human_only"
    no_lead_intents: list[str] = Field(default_factory=list)
    arr_per_employee_usd: dict[Literal["smb", "mid_market", "enterprise"], float]
    segment_employee_bounds: dict[Literal["mid_market", "enterprise"], int]
    spot_checks: SpotCheckPolicy = Field(default_factory=SpotCheckPolicy)


MARKETING4 = ("predictability", "impact_of_error", "data_sensitivity", "context_depth")
RISK6 = (
    "outcome_criticality",
    "scope_and_horizon",
    "data_sensitivity",
    "model_reliability",
    "reputational_risk",
    "cost_efficiency_delta",
)
MATRIX_CRITERIA: dict[str, tuple[str, ...]] = {"marketing4": MARKETING4, "risk6": RISK6}


def score_matrix(matrix: str, scores: list[int]) -> tuple[int, str]:
    """Sum a task's scores on a decision matrix and name its lane.

    marketing4 (5 = safest): 16-20 automate, 11-15 hybrid, 4-10 human_only.
    risk6 (5 = riskiest): <= 12 delegate, 13-18 human_in_loop, >= 19 block.
    """
    if matrix not in MATRIX_CRITERIA:
        raise ConfigError(f"unknown matrix {matrix!r}: use one of {', '.join(MATRIX_CRITERIA)}")
    criteria = MATRIX_CRITERIA[matrix]
    if len(scores) != len(criteria):
        raise ConfigError(f"{matrix} needs {len(criteria)} scores ({', '.join(criteria)}), got {len(scores)}")
    for name, value in zip(criteria, scores, strict=True):
        if not 1 <= value <= 5:
            raise ConfigError(f"{matrix}: {name} must be between 1 and 5, got {value}")
    total = sum(scores)
    if matrix == "marketing4":
        return total, "automate" if total >= 16 else "hybrid" if total >= 11 else "human_only"
    return total, "delegate" if total <= 12 else "human_in_loop" if total <= 18 else "block"


# Both matrices map onto the product's three lanes; risk6's "block" means no automation at all.
MATRIX_LANE_TO_LANE = {
    "automate": Lane.AUTOMATE,
    "hybrid": Lane.HYBRID,
    "human_only": Lane.HUMAN_ONLY,
    "delegate": Lane.AUTOMATE,
    "human_in_loop": Lane.HYBRID,
    "block": Lane.HUMAN_ONLY,
}


class MatrixTask(_Strict):
    description: str
    matrix: Literal["marketing4", "risk6"]
    scores: dict[str, int]
    owner: str
    review_sla: str
    escalation: str
    rollback: str
    auto_reply: str | None = Field(
        default=None,
        description="A reply template (reply_templates/NAME.yaml) sent to the enquirer when an enquiry "
        "of this task is automated; only where the template suits the enquiry's intent.",
    )

    @model_validator(mode="after")
    def _scores_fit_matrix(self) -> MatrixTask:
        criteria = MATRIX_CRITERIA[self.matrix]
        missing = [name for name in criteria if name not in self.scores]
        extra = [name for name in self.scores if name not in criteria]
        if missing or extra:
            raise ValueError(
                f"scores for {self.matrix} need exactly {list(criteria)}; missing {missing}, unknown {extra}"
            )
        try:
            score_matrix(self.matrix, [self.scores[name] for name in criteria])
        except ConfigError as error:  # reported by pydantic with the file, field and line
            raise ValueError(str(error)) from error
        return self

    @property
    def total(self) -> int:
        return score_matrix(self.matrix, [self.scores[name] for name in MATRIX_CRITERIA[self.matrix]])[0]

    @property
    def matrix_lane(self) -> str:
        return score_matrix(self.matrix, [self.scores[name] for name in MATRIX_CRITERIA[self.matrix]])[1]

    @property
    def lane(self) -> Lane:
        return MATRIX_LANE_TO_LANE[self.matrix_lane]


class DecisionMatrix(_Strict):
    version: int
    tasks: dict[str, MatrixTask]


class Policy(BaseModel):
    """All policy files, validated together, with the version that audit rows record."""

    model_config = ConfigDict(frozen=True)

    taxonomy: Taxonomy
    lanes: LanePolicy
    matrix: DecisionMatrix
    version: str
    directory: Path
    # Not part of `version`: which field of a tool's web hook is the e-mail decides no lane.
    hook_mappings: HookMappings = Field(default_factory=HookMappings)

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self.taxonomy.intents)


POLICY_FILES = ("taxonomy.yaml", "lanes.yaml", "decision_matrix.yaml")


def load_policy(directory: Path) -> Policy:
    """Load and cross-check the policy files of a directory; raise ConfigError naming file and field."""
    digest = hashlib.sha256()
    for name in POLICY_FILES:
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"{path}: policy file missing (copy it from config/defaults/{name})")
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    taxonomy = load_yaml_model(directory / "taxonomy.yaml", Taxonomy, what="taxonomy")
    lanes = load_yaml_model(directory / "lanes.yaml", LanePolicy, what="lane policy")
    matrix = load_yaml_model(directory / "decision_matrix.yaml", DecisionMatrix, what="decision matrix")
    for intent, policy in taxonomy.intents.items():
        if policy.task not in matrix.tasks:
            raise ConfigError(
                f"{directory / 'taxonomy.yaml'}: intents.{intent}.task names {policy.task!r}, which "
                f"{directory / 'decision_matrix.yaml'} does not define (tasks: {', '.join(matrix.tasks)})"
            )
    for name, task in matrix.tasks.items():
        template_file = directory / "reply_templates" / f"{task.auto_reply}.yaml"
        if task.auto_reply is not None and not template_file.is_file():
            raise ConfigError(
                f"{directory / 'decision_matrix.yaml'}: tasks.{name}.auto_reply names {task.auto_reply!r}, "
                f"which has no file {template_file}"
            )
    for intent in lanes.no_lead_intents:
        if intent not in taxonomy.intents:
            raise ConfigError(f"{directory / 'lanes.yaml'}: no_lead_intents names unknown intent {intent!r}")
    return Policy(
        taxonomy=taxonomy,
        lanes=lanes,
        matrix=matrix,
        version=digest.hexdigest()[:12],
        directory=directory,
        hook_mappings=load_hook_mappings(directory),
    )
