"""The routing policy (`routing.yaml`): territory rules that pick a team, each team's strategy and hours,
and the pool a full or away team falls back to. Validated at load like the other policy files: a mistake
names the file, the field and the line."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.yaml_files import load_yaml_model

ROUTING_FILE = "routing.yaml"
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkingHours(_Strict):
    """When members work, in each member's own time zone (`triage users add --timezone`)."""

    days: list[Day] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"], min_length=1)
    start: time = time(9, 0)
    end: time = time(17, 30)

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHours:
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


class Team(_Strict):
    strategy: Literal["round_robin", "least_loaded"] = "least_loaded"
    # None: members take items at any hour (only capacity and the away flag count).
    working_hours: WorkingHours | None = None


class Pool(_Strict):
    """Who takes what a full or away team cannot: named users; none named means every routable user."""

    members: list[str] = Field(default_factory=list)
    working_hours: WorkingHours | None = None


class Rule(_Strict):
    """A territory rule: every condition given must hold (each a list of allowed values); first match wins."""

    name: str
    team: str
    queue: list[str] = Field(default_factory=list)
    segment: list[str] = Field(default_factory=list)
    country: list[str] = Field(default_factory=list)
    language: list[str] = Field(default_factory=list)
    intent: list[str] = Field(default_factory=list)

    @field_validator("country", "language")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [value.lower() for value in values]


class RoutingPolicy(_Strict):
    version: int
    account_owner_first: bool = Field(
        default=True, description="An account's owner gets its enquiries while active, here and not full."
    )
    default_team: str
    fallback_pool: str
    teams: dict[str, Team]
    pools: dict[str, Pool] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_known(self) -> RoutingPolicy:
        if self.default_team not in self.teams:
            raise ValueError(f"default_team {self.default_team!r} is not one of teams: {sorted(self.teams)}")
        if self.fallback_pool not in self.pools:
            raise ValueError(
                f"fallback_pool {self.fallback_pool!r} is not one of pools: {sorted(self.pools)}"
            )
        for index, rule in enumerate(self.rules):
            if rule.team not in self.teams:
                raise ValueError(f"rules.{index} ({rule.name}) names team {rule.team!r}, not one of teams")
        return self


def default_routing_path() -> Path:
    return Path(__file__).resolve().parent / "defaults" / ROUTING_FILE


def load_routing(directory: Path) -> RoutingPolicy:
    """`routing.yaml` of the policy directory; the bundled default when the directory has none."""
    path = directory / ROUTING_FILE
    if not path.is_file():
        path = default_routing_path()
    return load_yaml_model(path, RoutingPolicy, what="routing policy")
