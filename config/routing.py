"""The routing policy (`routing.yaml`): territory rules that pick a team, each team's strategy and hours,
and the pool a full or away team falls back to. Validated at load like the other policy files: a mistake
names the file, the field and the line."""

from __future__ import annotations

import re
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
    """When members work, in each member's own time zone (`triage users add --timezone`): a team's or
    pool's hours in routing.yaml, or one window of a member's own (`parse_hours`)."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS[:5]), min_length=1)  # Mon-Fri
    start: time = time(9, 0)
    end: time = time(17, 30)

    @model_validator(mode="after")
    def _start_before_end(self) -> WorkingHours:
        if self.start >= self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


_DAY_NAMES = {day: day for day in DAYS} | {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun", "tues": "tue", "wednes": "wed", "thur": "thu", "thurs": "thu",
}  # fmt: skip
_WINDOW = re.compile(
    r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
HOURS_EXAMPLE = '"Mon-Fri 09:00-17:00" (several windows with ";": "Mon-Thu 08:00-16:00; Fri 08:00-12:00")'


class HoursError(ValueError):
    """A per-member working-hours text that cannot be read; the message says what to write instead."""


def _day(text: str, spec: str) -> int:
    day = _DAY_NAMES.get(text.strip().lower())
    if day is None:
        raise HoursError(f"{spec!r}: {text.strip()!r} is not a day; use Mon, Tue, Wed, Thu, Fri, Sat or Sun")
    return DAYS.index(day)


def _clock(text: str, spec: str) -> time:
    hour, minute = (int(part) for part in text.split(":"))
    if (hour, minute) == (24, 0):
        # "until midnight": the last instant of the day, since a window ends before its end.
        return time(23, 59, 59, 999999)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise HoursError(f"{spec!r}: {text!r} is not a time of day (00:00 to 24:00)")
    return time(hour, minute)


def parse_hours(text: str) -> tuple[WorkingHours, ...]:
    """A member's working hours as people write them, e.g. `Mon-Fri 09:00-17:00`, in their own zone.

    Windows are separated by ";"; days are ranges (`Mon-Fri`, wrapping like `Sat-Mon` is allowed) or
    lists (`Mon,Wed,Fri`). A window may not cross midnight: a night shift is two windows
    (`Mon-Fri 22:00-24:00; Tue-Sat 00:00-06:00`). Raises HoursError naming what is wrong.
    """
    windows: list[WorkingHours] = []
    parts = [part for part in text.split(";") if part.strip()]
    if not parts:
        raise HoursError(f"no working hours in {text!r}; write e.g. {HOURS_EXAMPLE}")
    for part in parts:
        match = _WINDOW.match(part)
        if match is None:
            raise HoursError(f"{part.strip()!r} is not DAYS HH:MM-HH:MM; write e.g. {HOURS_EXAMPLE}")
        days: list[Day] = []
        for piece in match["days"].split(","):
            if not piece.strip():
                continue
            if "-" in piece:
                first, _, last = piece.partition("-")
                begin, until = _day(first, part.strip()), _day(last, part.strip())
                span = [(begin + step) % 7 for step in range((until - begin) % 7 + 1)]
            else:
                span = [_day(piece, part.strip())]
            days.extend(DAYS[index] for index in span if DAYS[index] not in days)
        start, end = _clock(match["start"], part.strip()), _clock(match["end"], part.strip())
        if start >= end:
            raise HoursError(
                f"{part.strip()!r}: {match['start']} is not before {match['end']}; a window cannot cross "
                "midnight, split it in two (e.g. Mon-Fri 22:00-24:00; Tue-Sat 00:00-06:00)"
            )
        windows.append(WorkingHours(days=days, start=start, end=end))
    return tuple(windows)


def format_hours(windows: tuple[WorkingHours, ...]) -> str:
    """The canonical text of parsed hours (what is stored and listed): `Mon-Fri 09:00-17:00`."""

    def days(hours: WorkingHours) -> str:
        indexes = sorted(DAYS.index(day) for day in hours.days)
        runs: list[list[int]] = []
        for index in indexes:
            if runs and index == runs[-1][-1] + 1:
                runs[-1].append(index)
            else:
                runs.append([index])
        return ",".join(
            DAYS[run[0]].title() if len(run) == 1 else f"{DAYS[run[0]].title()}-{DAYS[run[-1]].title()}"
            for run in runs
        )

    def clock(value: time) -> str:
        return "24:00" if value == time(23, 59, 59, 999999) else value.strftime("%H:%M")

    return "; ".join(f"{days(w)} {clock(w.start)}-{clock(w.end)}" for w in windows)


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
