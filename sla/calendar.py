"""Business-hours calendars: when an SLA clock runs.

A calendar is a time zone, a weekly pattern of opening blocks (several a day for split shifts) and a set
of holiday dates. All arithmetic happens on UTC instants built from local wall times one day at a time,
so a day that is 23 or 25 hours long (a daylight-saving change) counts exactly the hours it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from models.errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# A clock that finds no opening within this many days would otherwise loop for ever (all-holiday calendar).
MAX_SEARCH_DAYS = 3 * 366

Block = tuple[int, int]  # minutes after local midnight: [start, end), end may be 1440 (24:00)


def parse_block(text: str) -> Block:
    """Parse 'HH:MM-HH:MM' into minutes after midnight; '24:00' is allowed as an end."""
    try:
        start_text, end_text = (part.strip() for part in text.split("-"))
        start, end = _minutes(start_text), _minutes(end_text)
    except ValueError as error:
        raise ValueError(f"business hours block {text!r} is not 'HH:MM-HH:MM' ({error})") from None
    if not 0 <= start < end <= MINUTES_PER_DAY:
        raise ValueError(f"business hours block {text!r} must start before it ends, within one day")
    return start, end


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    if len(minutes) != 2 or not (0 <= int(minutes) < 60 and 0 <= int(hours) <= 24):
        raise ValueError(f"{text!r} is not a time of day")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class BusinessCalendar:
    """When the clock runs: a time zone, opening blocks per weekday (Monday first) and holiday dates."""

    name: str
    timezone: ZoneInfo
    week: tuple[tuple[Block, ...], ...]
    holidays: frozenset[date] = frozenset()
    # Interval lists per local date, as UTC POSIX seconds; the watch pass asks for the same few days
    # thousands of times, so this cache is what keeps it fast.
    _intervals: dict[int, tuple[tuple[float, float], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise ValueError("a calendar week has 7 days, Monday first")
        for blocks in self.week:
            ordered = sorted(blocks)
            if any(earlier[1] > later[0] for earlier, later in pairwise(ordered)):
                raise ValueError(f"calendar {self.name!r}: business hours blocks overlap: {ordered}")
        if not any(self.week):
            raise ValueError(f"calendar {self.name!r} has no business hours on any weekday")

    def intervals(self, day: date) -> tuple[tuple[float, float], ...]:
        """The open intervals of one local date as UTC POSIX seconds, in order; empty on a holiday."""
        return self.intervals_of(day.toordinal())

    def intervals_of(self, ordinal: int) -> tuple[tuple[float, float], ...]:
        """`intervals` keyed by the date's proleptic ordinal (integer day arithmetic is much cheaper)."""
        cached = self._intervals.get(ordinal)
        if cached is not None:
            return cached
        day = date.fromordinal(ordinal)
        if day in self.holidays:
            result: tuple[tuple[float, float], ...] = ()
        else:
            result = tuple(
                (self._instant(day, start), self._instant(day, end))
                for start, end in sorted(self.week[day.weekday()])
            )
        self._intervals[ordinal] = result
        return result

    def _instant(self, day: date, minute: int) -> float:
        # Build the local wall time, then let zoneinfo pick the offset: on a DST change each block end
        # gets its own offset, which is what makes a 25-hour day count right.
        if minute == MINUTES_PER_DAY:
            day, minute = day + timedelta(days=1), 0
        local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=self.timezone)
        return local.timestamp()

    def local_date(self, instant: datetime) -> date:
        """The calendar's local date of an aware instant."""
        return instant.astimezone(self.timezone).date()

    def is_open(self, instant: datetime) -> bool:
        """Whether the clock runs at this instant."""
        stamp = _aware(instant).timestamp()
        return any(start <= stamp < end for start, end in self.intervals(self.local_date(instant)))


def make_calendar(
    name: str,
    timezone: str,
    week: dict[str, Sequence[str]],
    holidays: Iterable[date] = (),
) -> BusinessCalendar:
    """Build a calendar from plain config values: {'mon': ['09:00-12:00', '13:00-17:30'], ...}."""
    unknown = set(week) - set(WEEKDAYS)
    if unknown:
        raise ValueError(f"unknown weekday(s) {sorted(unknown)}; use {', '.join(WEEKDAYS)}")
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError) as error:
        raise ValueError(f"unknown time zone {timezone!r}") from error
    blocks = tuple(tuple(parse_block(text) for text in week.get(day, ())) for day in WEEKDAYS)
    return BusinessCalendar(name=name, timezone=zone, week=blocks, holidays=frozenset(holidays))


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime given to a business calendar; pass an aware datetime")
    return instant


def add_business_minutes(start: datetime, minutes: float, calendar: BusinessCalendar) -> datetime:
    """The instant after `minutes` of business time from `start` (negative: before), in the calendar's zone.

    Starting out of hours, the clock begins at the next opening. A target that ends exactly at a closing
    time is due at that closing time, not at the next opening. Zero minutes returns `start` unchanged.
    """
    stamp = _aware(start).timestamp()
    remaining = abs(minutes) * 60.0
    if remaining == 0:
        return start.astimezone(calendar.timezone)
    day = calendar.local_date(start).toordinal()
    forward = minutes > 0
    for _ in range(MAX_SEARCH_DAYS):
        if forward:
            for open_at, close_at in calendar.intervals_of(day):
                if close_at <= stamp:
                    continue
                begin = max(open_at, stamp)
                available = close_at - begin
                if remaining <= available:
                    return _from_stamp(begin + remaining, calendar)
                remaining -= available
            day += 1
        else:
            for open_at, close_at in reversed(calendar.intervals_of(day)):
                if open_at >= stamp:
                    continue
                end = min(close_at, stamp)
                available = end - open_at
                if remaining <= available:
                    return _from_stamp(end - remaining, calendar)
                remaining -= available
            day -= 1
    raise ConfigError(f"calendar {calendar.name!r} has no business hours within {MAX_SEARCH_DAYS} days")


def business_minutes_between(start: datetime, end: datetime, calendar: BusinessCalendar) -> float:
    """Business minutes from `start` to `end` (0 if `end` is not after `start`)."""
    begin, finish = _aware(start).timestamp(), _aware(end).timestamp()
    if finish <= begin:
        return 0.0
    total = 0.0
    day, last_day = calendar.local_date(start).toordinal(), calendar.local_date(end).toordinal()
    while day <= last_day:
        for open_at, close_at in calendar.intervals_of(day):
            overlap = min(close_at, finish) - max(open_at, begin)
            if overlap > 0:
                total += overlap
        day += 1
    return total / 60.0


def _from_stamp(stamp: float, calendar: BusinessCalendar) -> datetime:
    # Whole seconds: SLA instants are shown to people and stored; float noise would only confuse.
    return datetime.fromtimestamp(round(stamp), tz=UTC).astimezone(calendar.timezone)


def load_ical_holidays(path: Path | str, *, years: int = 10) -> frozenset[date]:
    """Holiday dates from an iCalendar file (an export of a public-holiday calendar).

    Every VEVENT counts as a closed day from DTSTART up to DTEND (exclusive, as iCalendar defines for
    all-day events). Yearly or other recurrences (RRULE) are expanded for `years` years from DTSTART.
    """
    import icalendar
    from dateutil.rrule import rrulestr

    source = Path(path)
    try:
        parsed = icalendar.Calendar.from_ical(source.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{source}: cannot read holidays from this iCalendar file: {error}") from error
    days: set[date] = set()
    for event in parsed.walk("VEVENT"):
        start_field = event.get("DTSTART")
        if start_field is None:
            continue
        first = _as_date(start_field.dt)
        end_field = event.get("DTEND")
        length = max((_as_date(end_field.dt) - first).days, 1) if end_field is not None else 1
        starts = [first]
        rule = event.get("RRULE")
        if rule is not None:
            text = rule.to_ical().decode()
            anchor = datetime(first.year, first.month, first.day)
            limit = anchor.replace(year=anchor.year + years)
            starts = [
                moment.date() for moment in rrulestr(text, dtstart=anchor).between(anchor, limit, inc=True)
            ]
        for begin in starts:
            days.update(begin + timedelta(days=offset) for offset in range(length))
    return frozenset(days)


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
