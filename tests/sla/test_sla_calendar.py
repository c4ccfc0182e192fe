"""Business-hours arithmetic: weekends, holidays, split shifts, out-of-hours arrivals and DST in two zones."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from models.errors import ConfigError
from sla.calendar import (
    add_business_minutes,
    business_minutes_between,
    load_ical_holidays,
    make_calendar,
    parse_block,
)

WEEKDAYS_0900_1730 = {day: ["09:00-17:30"] for day in ("mon", "tue", "wed", "thu", "fri")}
ALWAYS = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_weekend_is_skipped() -> None:
    calendar = make_calendar("office", "UTC", WEEKDAYS_0900_1730)
    friday_late = utc(2026, 3, 6, 17, 0)
    assert add_business_minutes(friday_late, 60, calendar) == utc(2026, 3, 9, 9, 30)
    assert business_minutes_between(friday_late, utc(2026, 3, 9, 9, 30), calendar) == 60


def test_arrival_out_of_hours_starts_at_next_opening() -> None:
    calendar = make_calendar("office", "UTC", WEEKDAYS_0900_1730)
    assert add_business_minutes(utc(2026, 3, 7, 3, 0), 30, calendar) == utc(2026, 3, 9, 9, 30)  # Saturday
    assert add_business_minutes(utc(2026, 3, 10, 6, 15), 30, calendar) == utc(2026, 3, 10, 9, 30)  # early
    assert add_business_minutes(utc(2026, 3, 10, 22, 0), 30, calendar) == utc(2026, 3, 11, 9, 30)  # late


def test_target_ending_at_closing_time_is_due_at_closing_time() -> None:
    calendar = make_calendar("office", "UTC", WEEKDAYS_0900_1730)
    assert add_business_minutes(utc(2026, 3, 10, 9, 0), 510, calendar) == utc(2026, 3, 10, 17, 30)
    assert add_business_minutes(utc(2026, 3, 10, 9, 0), 511, calendar) == utc(2026, 3, 11, 9, 1)


def test_listed_holidays_are_closed() -> None:
    calendar = make_calendar(
        "office", "UTC", WEEKDAYS_0900_1730, holidays=[date(2026, 3, 9), date(2026, 3, 10)]
    )
    assert add_business_minutes(utc(2026, 3, 6, 17, 0), 60, calendar) == utc(2026, 3, 11, 9, 30)
    assert business_minutes_between(utc(2026, 3, 9, 0, 0), utc(2026, 3, 11, 0, 0), calendar) == 0


def test_split_shift_skips_the_lunch_break() -> None:
    week = {day: ["09:00-12:00", "13:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
    calendar = make_calendar("split", "UTC", week)
    assert add_business_minutes(utc(2026, 3, 10, 11, 30), 60, calendar) == utc(2026, 3, 10, 13, 30)
    assert add_business_minutes(utc(2026, 3, 10, 12, 30), 10, calendar) == utc(2026, 3, 10, 13, 10)
    assert business_minutes_between(utc(2026, 3, 10, 8, 0), utc(2026, 3, 10, 18, 0), calendar) == 420


def test_negative_minutes_count_backwards() -> None:
    calendar = make_calendar("office", "UTC", WEEKDAYS_0900_1730)
    assert add_business_minutes(utc(2026, 3, 9, 9, 30), -60, calendar) == utc(2026, 3, 6, 17, 0)


def test_berlin_business_day_after_spring_forward() -> None:
    # Clocks go from 02:00 to 03:00 on Sunday 29 March 2026: Monday opens at 07:00 UTC, not 08:00.
    calendar = make_calendar("berlin", "Europe/Berlin", WEEKDAYS_0900_1730)
    friday = datetime(2026, 3, 27, 17, 0, tzinfo=BERLIN)
    due = add_business_minutes(friday, 60, calendar)
    assert due == datetime(2026, 3, 30, 9, 30, tzinfo=BERLIN)
    assert due.utcoffset() == timedelta(hours=2)
    assert due.astimezone(UTC) == utc(2026, 3, 30, 7, 30)


def test_berlin_short_and_long_days_count_real_time() -> None:
    calendar = make_calendar("always", "Europe/Berlin", ALWAYS)
    # Sunday 29 March 2026 has 23 hours, Sunday 25 October 2026 has 25.
    start = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    assert add_business_minutes(start, 24 * 60, calendar) == datetime(2026, 3, 29, 13, 0, tzinfo=BERLIN)
    day = business_minutes_between(
        datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN), datetime(2026, 10, 26, 0, 0, tzinfo=BERLIN), calendar
    )
    assert day == 25 * 60
    night_shift = make_calendar("night", "Europe/Berlin", {"sun": ["00:00-06:00"]})
    assert business_minutes_between(utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 0, 0), night_shift) == 5 * 60


def test_new_york_spring_forward_and_fall_back() -> None:
    office = make_calendar("nyc", "America/New_York", WEEKDAYS_0900_1730)
    # DST starts Sunday 8 March 2026: Friday's 17:00 is 22:00 UTC, Monday's 09:30 is 13:30 UTC.
    due = add_business_minutes(datetime(2026, 3, 6, 17, 0, tzinfo=NEW_YORK), 60, office)
    assert due.astimezone(UTC) == utc(2026, 3, 9, 13, 30)
    # DST ends Sunday 1 November 2026.
    due = add_business_minutes(datetime(2026, 10, 30, 17, 0, tzinfo=NEW_YORK), 60, office)
    assert due.astimezone(UTC) == utc(2026, 11, 2, 14, 30)
    always = make_calendar("always", "America/New_York", ALWAYS)
    start = datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK)
    assert add_business_minutes(start, 24 * 60, always) == datetime(2026, 11, 1, 11, 0, tzinfo=NEW_YORK)


def test_adding_then_measuring_round_trips() -> None:
    calendar = make_calendar(
        "split", "America/New_York", {"mon": ["08:00-12:00", "13:00-18:00"], "wed": ["10:00-16:00"]}
    )
    generator = random.Random(7)
    for _ in range(300):
        start = utc(2026, 1, 1) + timedelta(minutes=generator.randrange(0, 365 * 24 * 60))
        minutes = generator.randrange(1, 5_000)
        due = add_business_minutes(start, minutes, calendar)
        assert business_minutes_between(start, due, calendar) == pytest.approx(minutes)
        assert add_business_minutes(due, -minutes, calendar) >= start


def test_ical_holidays_single_multi_day_and_yearly(tmp_path: Path) -> None:
    ics = tmp_path / "holidays.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:Good Friday\r\nDTSTART;VALUE=DATE:20260403\r\n"
        "DTEND;VALUE=DATE:20260404\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:2\r\nSUMMARY:Company retreat\r\nDTSTART;VALUE=DATE:20260615\r\n"
        "DTEND;VALUE=DATE:20260617\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:3\r\nSUMMARY:Christmas\r\nDTSTART;VALUE=DATE:20251225\r\n"
        "RRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n",
        encoding="utf-8",
    )
    days = load_ical_holidays(ics)
    assert {
        date(2026, 4, 3),
        date(2026, 6, 15),
        date(2026, 6, 16),
        date(2025, 12, 25),
        date(2026, 12, 25),
    } <= days
    assert date(2026, 4, 4) not in days and date(2026, 6, 17) not in days
    calendar = make_calendar("office", "UTC", WEEKDAYS_0900_1730, holidays=days)
    # Thursday 2 April 17:00 + 60 minutes skips Good Friday and the weekend.
    assert add_business_minutes(utc(2026, 4, 2, 17, 0), 60, calendar) == utc(2026, 4, 6, 9, 30)


def test_bad_blocks_and_empty_calendars_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_block("9-5")
    with pytest.raises(ValueError, match="start before"):
        parse_block("17:00-09:00")
    with pytest.raises(ValueError, match="overlap"):
        make_calendar("x", "UTC", {"mon": ["09:00-12:00", "11:00-13:00"]})
    with pytest.raises(ValueError, match="time zone"):
        make_calendar("x", "Mars/Olympus", WEEKDAYS_0900_1730)
    every_day = {date(2026, 1, 1) + timedelta(days=offset) for offset in range(3 * 366 + 10)}
    closed = make_calendar("closed", "UTC", WEEKDAYS_0900_1730, holidays=every_day)
    with pytest.raises(ConfigError, match="no business hours"):
        add_business_minutes(utc(2026, 1, 1), 10, closed)
    broken = tmp_path / "broken.ics"
    broken.write_text("not a calendar", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.ics"):
        load_ical_holidays(broken)
