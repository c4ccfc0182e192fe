"""SLA policies from YAML: which targets and escalation tiers an enquiry gets, in which business hours.

The file format is documented in config/defaults/sla.yaml. Loading validates everything once; a mistake
raises `ConfigError` naming the file, the field and its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from config.yaml_files import load_yaml_model
from models.errors import ConfigError
from sla.calendar import BusinessCalendar, add_business_minutes, load_ical_holidays, make_calendar

DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "config" / "defaults" / "sla.yaml"

Priority = Literal["urgent", "high", "normal", "low"]
Intent = Literal[
    "sales_demo", "pricing", "support", "billing", "partnership", "careers", "press", "spam", "other"
]
Queue = Literal["sales", "support", "finance", "partnerships", "hr", "marketing", "spam", "general"]
ChannelName = Literal["email", "form", "chat"]
Segment = Literal["smb", "mid_market", "enterprise", "unknown"]
Role = Literal["ops_lead", "manager", "slack"]
TimerKind = Literal["first_response", "resolution"]
TIMER_KINDS: tuple[TimerKind, ...] = ("first_response", "resolution")

DEFAULT_WEEK = {day: ["09:00-17:30"] for day in ("mon", "tue", "wed", "thu", "fri")}


class SlaSettings(BaseModel):
    """SLA settings from the environment (`TRIAGE_SLA__TIMEZONE=Europe/Berlin`)."""

    timezone: str | None = Field(
        default=None,
        description="IANA zone for calendars that name none; the policy file's `timezone` if unset.",
    )
    policy_file: Path | None = Field(
        default=None, description="An sla.yaml instead of <policy_dir>/sla.yaml."
    )
    automated_reply_counts_as_first_response: bool = Field(
        default=False,
        description="Whether an automated acknowledgement stops the human first-response clock. By "
        "default it counts for the acknowledgement target only, reported apart.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as error:
                raise ValueError(
                    f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
                ) from error
        return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listify(value: Any) -> Any:
    # `priority: urgent` and `priority: [urgent, high]` both read naturally in YAML.
    return [value] if isinstance(value, str) else value


class MatchSpec(_Strict):
    """What an enquiry must look like for a policy to apply; a missing field matches anything."""

    priority: tuple[Priority, ...] | None = None
    intent: tuple[Intent, ...] | None = None
    queue: tuple[Queue, ...] | None = None
    channel: tuple[ChannelName, ...] | None = None
    segment: tuple[Segment, ...] | None = None

    _listify = field_validator("priority", "intent", "queue", "channel", "segment", mode="before")(_listify)

    def fits(self, values: dict[str, str]) -> bool:
        """Whether every listed field contains the enquiry's value."""
        for name in ("priority", "intent", "queue", "channel", "segment"):
            allowed: tuple[str, ...] | None = getattr(self, name)
            if allowed is not None and values.get(name) not in allowed:
                return False
        return True


class EscalationTier(_Strict):
    """Fire once when a timer has used `percent` of its target: record `action` and notify `notify`."""

    percent: int = Field(gt=0, le=10_000)
    action: str = Field(min_length=1, max_length=60, pattern=r"^[a-z][a-z0-9_]*$")
    notify: tuple[Role, ...] = ()
    timer: TimerKind = "first_response"

    _listify = field_validator("notify", mode="before")(_listify)


class CalendarSpec(_Strict):
    """A business calendar as written in YAML."""

    timezone: str | None = None
    week: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {k: tuple(v) for k, v in DEFAULT_WEEK.items()}
    )
    holidays: tuple[date, ...] = ()
    holidays_ical: str | None = None


class PolicySpec(_Strict):
    """One policy as written in YAML."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")
    match: MatchSpec | None = None
    sla: bool = True
    calendar: str = "business_hours"
    first_response_minutes: int | None = Field(default=None, gt=0)
    resolution_minutes: int | None = Field(default=None, gt=0)
    escalations: tuple[EscalationTier, ...] = ()

    @model_validator(mode="after")
    def _targets_when_timed(self) -> PolicySpec:
        if self.sla and self.first_response_minutes is None:
            raise ValueError("a policy with an SLA needs first_response_minutes (or say sla: false)")
        if any(tier.timer == "resolution" for tier in self.escalations) and self.resolution_minutes is None:
            raise ValueError("an escalation on the resolution timer needs resolution_minutes")
        return self


class SlaFile(_Strict):
    """The whole sla.yaml."""

    version: str = Field(min_length=1)
    timezone: str = "UTC"
    calendars: dict[str, CalendarSpec] = Field(default_factory=dict)
    policies: tuple[PolicySpec, ...] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy with its calendar resolved."""

    name: str
    match: MatchSpec | None
    has_sla: bool
    calendar: BusinessCalendar
    first_response_minutes: int | None
    resolution_minutes: int | None
    escalations: tuple[EscalationTier, ...]

    def target_minutes(self, kind: TimerKind) -> int | None:
        """The target of one timer kind, or None when this policy does not run that timer."""
        if not self.has_sla:
            return None
        return self.first_response_minutes if kind == "first_response" else self.resolution_minutes

    def tiers(self, kind: TimerKind) -> list[tuple[int, EscalationTier]]:
        """Escalation tiers of one timer kind with their index in the policy (the event key), by percent."""
        return sorted(
            ((index, tier) for index, tier in enumerate(self.escalations) if tier.timer == kind),
            key=lambda pair: pair[1].percent,
        )


@dataclass(frozen=True, slots=True)
class SlaPolicies:
    """Every policy in match order, plus the calendars by name."""

    version: str
    source: str
    policies: tuple[Policy, ...]
    calendars: dict[str, BusinessCalendar]
    by_name: dict[str, Policy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The watch pass looks a policy up per timer; a dict keeps that cheap at 100,000 timers.
        object.__setattr__(self, "by_name", {policy.name: policy for policy in self.policies})

    def get(self, name: str) -> Policy | None:
        """The policy of this name (timers store the name), or None if it was removed from the file."""
        return self.by_name.get(name)


@dataclass(frozen=True, slots=True)
class DueResult:
    """When an enquiry's clocks fall due and when each escalation tier fires."""

    policy: str
    first_response_due: datetime | None
    resolution_due: datetime | None
    escalations: list[tuple[datetime, str]]


def load_policies(path: Path | str | None = None, *, timezone: str | None = None) -> SlaPolicies:
    """Load and validate sla.yaml (the shipped default when `path` is None).

    `timezone` (from settings) replaces the file's default zone for calendars that do not name their own.
    """
    source = Path(path) if path is not None else DEFAULT_POLICY_FILE
    spec = load_yaml_model(source, SlaFile, what="SLA policy file")
    return _resolve(spec, source, timezone or spec.timezone)


def _resolve(spec: SlaFile, source: Path, default_zone: str) -> SlaPolicies:
    calendar_specs = dict(spec.calendars)
    calendar_specs.setdefault("business_hours", CalendarSpec())
    calendars: dict[str, BusinessCalendar] = {}
    for name, calendar_spec in calendar_specs.items():
        holidays = set(calendar_spec.holidays)
        if calendar_spec.holidays_ical:
            ical_path = source.parent / calendar_spec.holidays_ical
            holidays |= load_ical_holidays(ical_path)
        try:
            calendars[name] = make_calendar(
                name, calendar_spec.timezone or default_zone, dict(calendar_spec.week), holidays
            )
        except ValueError as error:
            raise ConfigError(f"{source}: field 'calendars.{name}': {error}") from error
    policies: list[Policy] = []
    names: set[str] = set()
    for index, policy_spec in enumerate(spec.policies):
        field = f"policies.{index}"
        if policy_spec.name in names:
            raise ConfigError(f"{source}: field '{field}.name': policy {policy_spec.name!r} is listed twice")
        names.add(policy_spec.name)
        if policy_spec.calendar not in calendars:
            raise ConfigError(
                f"{source}: field '{field}.calendar': unknown calendar {policy_spec.calendar!r}; "
                f"defined: {', '.join(sorted(calendars))}"
            )
        if policy_spec.match is None and index != len(spec.policies) - 1:
            raise ConfigError(f"{source}: field '{field}.match': only the last policy may omit `match`")
        policies.append(
            Policy(
                name=policy_spec.name,
                match=policy_spec.match,
                has_sla=policy_spec.sla,
                calendar=calendars[policy_spec.calendar],
                first_response_minutes=policy_spec.first_response_minutes,
                resolution_minutes=policy_spec.resolution_minutes,
                escalations=policy_spec.escalations,
            )
        )
    if policies[-1].match is not None:
        raise ConfigError(f"{source}: field 'policies': the last policy must be a default without `match`")
    return SlaPolicies(spec.version, str(source), tuple(policies), calendars)


def match_policy(
    policies: SlaPolicies,
    *,
    priority: str,
    intent: str | None = None,
    channel: str | None = None,
    queue: str | None = None,
    segment: str | None = None,
) -> Policy:
    """The first policy whose match fits (the last one is the default, so there always is one)."""
    values = {
        "priority": priority,
        "intent": intent or "",
        "channel": channel or "",
        "queue": queue or "",
        "segment": segment or "",
    }
    for policy in policies.policies:
        if policy.match is None or policy.match.fits(values):
            return policy
    return policies.policies[-1]


def tier_time(due_at: datetime, target_minutes: int, percent: int, calendar: BusinessCalendar) -> datetime:
    """When a tier at `percent` of the target fires, for a running timer due at `due_at`.

    Counting from the due time rather than the start keeps pauses right: time spent paused lies before
    every tier that has not fired yet, so the business minutes between such a tier and the due time
    never include a pause.
    """
    offset = target_minutes * (percent - 100) / 100.0
    return add_business_minutes(due_at, offset, calendar)


def due(
    received_at: datetime,
    *,
    priority: str,
    intent: str | None = None,
    channel: str | None = None,
    queue: str | None = None,
    segment: str | None = None,
    policies: SlaPolicies,
) -> DueResult:
    """The clocks an enquiry received at `received_at` would get: due times and escalation instants."""
    policy = match_policy(
        policies, priority=priority, intent=intent, channel=channel, queue=queue, segment=segment
    )
    if not policy.has_sla or policy.first_response_minutes is None:
        return DueResult(policy.name, None, None, [])
    calendar = policy.calendar
    first_due = add_business_minutes(received_at, policy.first_response_minutes, calendar)
    resolution_due = (
        add_business_minutes(received_at, policy.resolution_minutes, calendar)
        if policy.resolution_minutes
        else None
    )
    escalations: list[tuple[datetime, str]] = []
    for kind, due_at in (("first_response", first_due), ("resolution", resolution_due)):
        target = policy.target_minutes(kind)  # type: ignore[arg-type]
        if due_at is None or target is None:
            continue
        for _index, tier in policy.tiers(kind):  # type: ignore[arg-type]
            escalations.append((tier_time(due_at, target, tier.percent, calendar), tier.action))
    escalations.sort(key=lambda pair: pair[0])
    return DueResult(policy.name, first_due, resolution_due, escalations)
