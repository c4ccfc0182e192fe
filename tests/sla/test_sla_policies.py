"""SLA policy files: first match wins, shipped defaults, due times, errors that name file and field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.errors import ConfigError
from sla.policies import SlaPolicies, due, load_policies, match_policy

MINIMAL = """
version: "1"
timezone: UTC
calendars:
  office:
    week: {mon: ["09:00-17:00"], tue: ["09:00-17:00"], wed: ["09:00-17:00"], thu: ["09:00-17:00"],
           fri: ["09:00-17:00"]}
    holidays: [2026-12-25]
policies:
  - name: chat_fast
    match: {channel: chat, queue: [sales, support]}
    calendar: office
    first_response_minutes: 15
    escalations:
      - {percent: 100, action: notify_ops_lead, notify: [ops_lead]}
  - name: everything_else
    calendar: office
    first_response_minutes: 120
    resolution_minutes: 480
    escalations:
      - {percent: 200, action: escalate_manager, notify: manager}
      - {percent: 100, action: notify_ops_lead, notify: [ops_lead, slack]}
      - {percent: 50, action: resolution_half, notify: [ops_lead], timer: resolution}
"""


def test_shipped_defaults_cover_the_vocabulary(policies: SlaPolicies) -> None:
    assert policies.policies[-1].match is None
    assert match_policy(policies, priority="urgent", intent="spam").name == "no_sla_spam"
    assert match_policy(policies, priority="urgent", intent="support", segment="enterprise").name == "urgent"
    assert (
        match_policy(policies, priority="normal", intent="pricing", segment="enterprise").name == "enterprise"
    )
    assert (
        match_policy(policies, priority="normal", intent="sales_demo", segment="smb").name
        == "sales_new_business"
    )
    assert match_policy(policies, priority="low", intent="careers").name == "low_touch"
    assert match_policy(policies, priority="normal", intent="support", segment="smb").name == "standard"
    urgent = policies.get("urgent")
    assert urgent is not None and urgent.first_response_minutes == 30
    assert [tier.percent for _, tier in urgent.tiers("first_response")] == [50, 100, 200]
    assert str(policies.calendars["business_hours"].timezone) == "UTC"


def test_shipped_default_time_zone_is_configurable() -> None:
    berlin = load_policies(timezone="Europe/Berlin")
    assert str(berlin.calendars["business_hours"].timezone) == "Europe/Berlin"
    result = due(
        datetime(2026, 3, 27, 16, 0, tzinfo=UTC), priority="normal", intent="support", policies=berlin
    )
    # 17:00 in Berlin on a Friday: 30 minutes that day, 7.5 hours on Monday (after the DST change).
    assert result.policy == "standard"
    assert result.first_response_due is not None
    assert result.first_response_due.isoformat() == "2026-03-30T16:30:00+02:00"


def test_spam_gets_no_clock(policies: SlaPolicies) -> None:
    result = due(datetime(2026, 3, 2, 10, 0, tzinfo=UTC), priority="high", intent="spam", policies=policies)
    assert (result.policy, result.first_response_due, result.escalations) == ("no_sla_spam", None, [])


def test_due_lists_escalations_in_time_order(policy_file: Callable[[str], Path]) -> None:
    policies = load_policies(policy_file(MINIMAL))
    received = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)  # Thursday 16:00, Christmas Friday is a holiday
    result = due(
        received, priority="normal", intent="billing", channel="email", queue="finance", policies=policies
    )
    assert result.policy == "everything_else"
    assert result.first_response_due == datetime(2026, 12, 28, 10, 0, tzinfo=UTC)
    assert result.resolution_due == datetime(2026, 12, 28, 16, 0, tzinfo=UTC)
    assert result.escalations == [
        (datetime(2026, 12, 28, 10, 0, tzinfo=UTC), "notify_ops_lead"),
        (datetime(2026, 12, 28, 12, 0, tzinfo=UTC), "escalate_manager"),
        (datetime(2026, 12, 28, 12, 0, tzinfo=UTC), "resolution_half"),
    ]
    chat = due(
        received, priority="normal", intent="support", channel="chat", queue="support", policies=policies
    )
    assert chat.policy == "chat_fast"
    assert chat.first_response_due == datetime(2026, 12, 24, 16, 15, tzinfo=UTC)
    assert chat.resolution_due is None


@pytest.mark.parametrize(
    ("broken", "field", "line"),
    [
        ("match: {channel: chat, queue: [sales, support]}", "policies.0.match.channel.0", 11),
        ("match: {channel: chat, queue: [sales, supprt]}", "policies.0.match.queue.1", 11),
        ("match: {channel: chat, colour: blue}", "policies.0.match.colour", 11),
    ],
)
def test_errors_name_file_field_and_line(
    policy_file: Callable[[str], Path], broken: str, field: str, line: int
) -> None:
    text = MINIMAL.replace("match: {channel: chat, queue: [sales, support]}", broken)
    if "colour" not in broken and "supprt" not in broken:
        text = text.replace("channel: chat", "channel: fax")
    path = policy_file(text)
    with pytest.raises(ConfigError) as raised:
        load_policies(path)
    message = str(raised.value)
    assert str(path) in message and field in message
    assert f"{path}:{line}" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            (
                "calendar: office\n    first_response_minutes: 15",
                "calendar: moon\n    first_response_minutes: 15",
            ),
            "unknown calendar 'moon'",
        ),
        (("    first_response_minutes: 15\n", "\n"), "first_response_minutes"),
        (("  - name: everything_else\n", "  - name: chat_fast\n"), "listed twice"),
        (('["09:00-17:00"], tue', '["17:00-09:00"], tue'), "calendars.office"),
        (("    match: {channel: chat, queue: [sales, support]}\n", ""), "only the last policy may omit"),
    ],
)
def test_structural_mistakes_are_config_errors(
    policy_file: Callable[[str], Path], change: tuple[str, str], expected: str
) -> None:
    text = MINIMAL.replace(*change)
    assert text != MINIMAL
    with pytest.raises(ConfigError, match=expected):
        load_policies(policy_file(text))


def test_default_policy_must_come_last(policy_file: Callable[[str], Path]) -> None:
    text = MINIMAL + "  - name: after_default\n    match: {priority: low}\n    first_response_minutes: 5\n"
    with pytest.raises(ConfigError, match="only the last policy may omit"):
        load_policies(policy_file(text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing\.yaml"):
        load_policies(tmp_path / "nothing.yaml")
