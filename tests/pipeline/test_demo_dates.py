"""The demo sample is dated relative to the run: any day, weekends and holidays included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from models.records import Channel
from pipeline.demo import (
    SAMPLE_MONDAY,
    ShiftedSample,
    recent_business_days,
    sample_shift,
)
from pipeline.normalise import RawPayload, normalise_payload
from sla.calendar import make_calendar
from tests.builders import email_bytes

OFFICE = make_calendar("office", "UTC", {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")})
# Runs spread over several years from today, so the test never depends on the day it was written.
RUNS = [
    datetime.now(UTC) + timedelta(days=days, hours=hours) for days in range(0, 800, 37) for hours in (3, 14)
]


@pytest.mark.parametrize("now", RUNS, ids=lambda now: now.strftime("%Y-%m-%d-%a-%H"))
def test_the_sample_week_lands_on_the_five_business_days_before_today(now: datetime) -> None:
    targets = recent_business_days(now, OFFICE, 5)
    assert len(targets) == 5 and targets == sorted(targets)
    assert all(day.weekday() < 5 and day < now.date() for day in targets)
    # No business day is skipped between them.
    between = [targets[0] + timedelta(days=n) for n in range((targets[-1] - targets[0]).days + 1)]
    assert [day for day in between if day.weekday() < 5] == targets
    for index in range(5):
        original = datetime.combine(SAMPLE_MONDAY + timedelta(days=index), datetime.min.time(), UTC)
        for hour in (0, 9, 23):
            moved = (
                original
                + timedelta(hours=hour)
                + sample_shift(original + timedelta(hours=hour), now=now, targets=targets)
            )
            assert moved.date() == targets[index] and moved.hour == hour
            assert moved < now


def test_weekend_dates_move_with_their_neighbours_and_never_into_the_future() -> None:
    now = datetime(2031, 7, 7, 0, 20, tzinfo=UTC)  # a Monday just after midnight: Friday is 3 days back
    targets = recent_business_days(now, OFFICE, 5)
    sunday_before = datetime(2026, 11, 15, 22, 0, tzinfo=UTC)
    saturday_after = datetime(2026, 11, 21, 23, 50, tzinfo=UTC)
    assert (sunday_before + sample_shift(sunday_before, now=now, targets=targets)).date() == targets[
        0
    ] - timedelta(days=1)
    late = saturday_after + sample_shift(saturday_after, now=now, targets=targets)
    assert late < now and late.date() == targets[-1] + timedelta(days=1)


def test_holidays_are_skipped_and_dates_far_from_the_sample_are_left_alone() -> None:
    holidays = [date(2030, 12, 24), date(2030, 12, 25), date(2030, 12, 26)]
    office = make_calendar(
        "office", "UTC", {d: ["09:00-17:30"] for d in ("mon", "tue", "wed", "thu", "fri")}, holidays
    )
    now = datetime(2030, 12, 27, 10, 0, tzinfo=UTC)  # a Friday after three days of holiday
    assert recent_business_days(now, office, 5) == [
        date(2030, 12, 17),
        date(2030, 12, 18),
        date(2030, 12, 19),
        date(2030, 12, 20),
        date(2030, 12, 23),
    ]
    import_time = now - timedelta(seconds=3)  # a mail whose Date fell back to the time of import
    assert sample_shift(import_time, now=now, targets=recent_business_days(now, office, 5)) == timedelta(0)


def test_a_shifted_record_keeps_its_bytes_and_is_read_with_its_dates_moved(tmp_path: object) -> None:
    from pathlib import Path

    from connectors.files import FileSource

    folder = Path(str(tmp_path))
    mail = email_bytes(message_id="<a@x>", sent=datetime(2026, 11, 18, 10, 30, tzinfo=UTC))
    (folder / "one.eml").write_bytes(mail)
    now = datetime.now(UTC) + timedelta(days=3)
    source = ShiftedSample(FileSource(folder / "one.eml", Channel.EMAIL), now=now, calendar=OFFICE)
    (record,) = [r for batch in source.read(None) for r in batch.records]
    assert record.payload == mail and record.time_shift_seconds != 0
    plain = normalise_payload(RawPayload("email", mail, "s", now), max_body_chars=1000)
    moved = normalise_payload(
        RawPayload("email", mail, "s", now, record.time_shift_seconds), max_body_chars=1000
    )
    assert plain.received_at == datetime(2026, 11, 18, 10, 30, tzinfo=UTC)
    assert moved.received_at == plain.received_at + timedelta(seconds=record.time_shift_seconds)
    assert moved.received_at.date() == recent_business_days(now, OFFICE, 5)[2]  # Wednesday → third day
