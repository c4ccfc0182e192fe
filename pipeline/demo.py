"""`triage demo`: the bundled sample, dated relative to the run, and a short working day on it.

The sample (app/demo_data, see its README) was written for one week, Monday 16 to Friday 20 November
2026. Imported as it is, it would look weeks overdue on any later day, and a report over the last week
would be empty. So when the demo imports it, each record is moved to the same place in the last five
business days before today (in the default SLA calendar): Monday's mail to the first of those days, and
so on, keeping each record's time of day. The raw bytes stay as they are; the shift is stored with the
raw record, normalising applies it and the audit row says so. Nothing but the bundled sample is ever
shifted: real sources have no way to set it.

After one intake pass the demo runs one SLA watch pass, then two scripted SDRs work a handful of items
through the same review service the web pages use (reply to some items that are overdue and some that
are not, correct one, accept one, claim two), so the report, the queue and /metrics show a team's day.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from connectors.base import CheckResult, Source, SourceBatch
from connectors.files import FileSource
from models.errors import SkippableError
from models.records import Channel, RawRecordIn
from pipeline.intake import IngestSummary, ingest_source
from pipeline.normalise import RawPayload, normalise_payload
from pipeline.runtime import Runtime
from sla.calendar import BusinessCalendar
from store.db import transaction

log = logging.getLogger(__name__)

DEMO_DATA = Path(__file__).resolve().parents[1] / "app" / "demo_data"
DEMO_FILES: tuple[tuple[str, Channel], ...] = (
    ("emails.mbox", Channel.EMAIL),
    ("forms.jsonl", Channel.FORM),
    ("forms.csv", Channel.FORM),
    ("chats.json", Channel.CHAT),
)
SAMPLE_MONDAY = date(2026, 11, 16)  # the sample's week, Monday to Friday (tests/test_starter_data.py)
SAMPLE_BUSINESS_DAYS = 5
# A date further than this from the sample's week is not one of its dates (a mail without a usable Date
# header falls back to the time of import): such a record is not moved.
SAMPLE_REACH = timedelta(days=14)
LATEST_ARRIVAL = timedelta(minutes=1)  # a moved record arrives at least this long before `now`

DEMO_SDRS = ("maya", "leo")
# What owner routing needs of the demo's SDRs (teams, capacity, time zone): added before the intake
# pass, with the accounts of app/demo_data/accounts.csv, so the demo's enquiries get owners.
DEMO_TEAM: dict[str, tuple[str, int, str]] = {
    "maya": ("sales,partnerships", 200, "Europe/London"),
    "leo": ("sales,support", 200, "America/New_York"),
}
DEMO_ACCOUNTS = DEMO_DATA / "accounts.csv"
REPLY_TEXT = (
    "Thanks for getting in touch. I have your message and I am on it: you will hear from me with the "
    "details today. If anything changes in the meantime, just reply to this message."
)


def recent_business_days(now: datetime, calendar: BusinessCalendar, count: int) -> list[date]:
    """The last `count` business days of `calendar` before the local date of `now`, oldest first."""
    days: list[date] = []
    day = calendar.local_date(now)
    for _ in range(366):  # a calendar open at least one day a year (BusinessCalendar checks a week)
        day -= timedelta(days=1)
        if calendar.intervals(day):
            days.append(day)
            if len(days) == count:
                return sorted(days)
    raise ValueError(f"calendar {calendar.name!r} has fewer than {count} business days in a year")


def sample_shift(original: datetime, *, now: datetime, targets: list[date]) -> timedelta:
    """How far to move one sample date: to the same place in `targets` (the recent business days).

    Days before Monday move with Monday and days after Friday with Friday, so the order of a thread is
    kept; nothing lands later than a minute before `now`.
    """
    offset = original.astimezone(UTC).date() - SAMPLE_MONDAY
    if abs(offset) > SAMPLE_REACH:
        return timedelta(0)
    index = min(max(offset.days, 0), SAMPLE_BUSINESS_DAYS - 1)
    delta = targets[index] - (SAMPLE_MONDAY + timedelta(days=index))
    latest = now - LATEST_ARRIVAL
    if original + delta > latest:
        delta -= original + delta - latest
    return delta


class ShiftedSample:
    """A bundled sample file as a source whose records carry the shift that dates them recently."""

    def __init__(self, inner: FileSource, *, now: datetime, calendar: BusinessCalendar) -> None:
        self._inner = inner
        self._now = now
        self._targets = recent_business_days(now, calendar, SAMPLE_BUSINESS_DAYS)

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def channel(self) -> Channel:
        return self._inner.channel

    def check(self) -> CheckResult:
        return self._inner.check()

    def read(self, state: dict[str, Any] | None) -> Iterator[SourceBatch]:
        for batch in self._inner.read(state):
            yield SourceBatch([self._shifted(record) for record in batch.records], batch.state)

    def _shifted(self, record: RawRecordIn) -> RawRecordIn:
        try:  # the record's own date, read as the pipeline will read it
            parsed = normalise_payload(
                RawPayload(record.channel.value, record.payload, record.source, record.received_at),
                max_body_chars=1_000,
            )
        except (SkippableError, ValueError):
            return record  # broken on purpose: quarantined later, its date does not matter
        delta = sample_shift(parsed.received_at, now=self._now, targets=self._targets)
        return record.model_copy(update={"time_shift_seconds": int(delta.total_seconds())})


def import_sample(runtime: Runtime, name: str, channel: Channel, **kwargs: Any) -> IngestSummary:
    """Store one bundled sample file, dated relative to `runtime.clock` (see the module docstring)."""
    calendar = runtime.sla_policies.policies[-1].calendar  # the default policy's business hours
    sample = FileSource(DEMO_DATA / name, channel)
    source: Source = ShiftedSample(sample, now=runtime.clock(), calendar=calendar)
    return ingest_source(runtime.factory, source, clock=runtime.clock, **kwargs)


@dataclass
class WorkedDay:
    """What the scripted SDRs did, for the demo's output and its tests."""

    watch: dict[str, Any] = field(default_factory=dict)
    replied_late: list[int] = field(default_factory=list)
    replied_on_time: list[int] = field(default_factory=list)
    corrected: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    claimed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sla_watch": self.watch,
            "sdrs": list(DEMO_SDRS),
            "replied_late": len(self.replied_late),
            "replied_on_time": len(self.replied_on_time),
            "corrected": len(self.corrected),
            "accepted": len(self.accepted),
            "claimed": len(self.claimed),
        }


def work_the_day(runtime: Runtime) -> WorkedDay:
    """One SLA watch pass, then the scripted SDRs' work. Run once per workspace: a second call finds
    the SDRs already exist and changes nothing."""
    from connectors.notify import build_notifier, notify_settings_from
    from sla.watch import watch_pass

    day = WorkedDay()
    now = runtime.clock()
    notifier = build_notifier(notify_settings_from(runtime.settings))
    day.watch = watch_pass(runtime.factory, runtime.sla_policies, notifier, now=now).as_dict()
    with transaction(runtime.factory) as session:
        _add_sdrs(session, now)
        if _worked_already(session):
            return day  # this workspace's day was worked already
        _work(session, day, now, queue_of={k: v.queue for k, v in runtime.policy.taxonomy.intents.items()})
    return day


def prepare_team(runtime: Runtime) -> None:
    """Before the intake pass: the demo's SDRs (with teams and capacity) and a few accounts of the
    sample's senders in the local CRM, so enquiries are matched and routed. Idempotent."""
    from connectors.crm.accounts import read_accounts_csv
    from store import accounts as account_store

    now = runtime.clock()
    with transaction(runtime.factory) as session:
        _add_sdrs(session, now)
        account_store.import_accounts(session, read_accounts_csv(DEMO_ACCOUNTS), now=now)


def _add_sdrs(session: Session, now: datetime) -> bool:
    """Create the demo's SDRs with passwords nobody knows (`triage users passwd` sets one to log in);
    False when they exist already."""
    from review.auth import hash_password
    from store import review_repo

    if any(review_repo.get_user(session, name) is not None for name in DEMO_SDRS):
        return False
    for name in DEMO_SDRS:
        user = review_repo.add_user(
            session, name=name, role="sdr", password_hash=hash_password(secrets.token_urlsafe(24)), now=now
        )
        user.teams, user.capacity, user.timezone = DEMO_TEAM[name]
    session.flush()
    return True


def _worked_already(session: Session) -> bool:
    """Whether the scripted SDRs' day is in the audit trail already."""
    import sqlalchemy as sa

    from store.tables import DecisionRow

    return (
        session.scalar(sa.select(DecisionRow.id).where(DecisionRow.actor.in_(DEMO_SDRS)).limit(1)) is not None
    )


def _work(session: Session, day: WorkedDay, now: datetime, *, queue_of: dict[str, str]) -> None:
    from review import service

    entries = service.list_queue(session, now=now, limit=500).entries
    overdue = [e for e in entries if e.seconds_left is not None and e.seconds_left < 0]
    waiting = [e for e in entries if e.seconds_left is not None and e.seconds_left >= 0]
    maya, leo = DEMO_SDRS
    minute = timedelta(minutes=1)
    for entry in overdue[:3]:  # late first responses
        service.mark_replied(session, entry.item_id, user=maya, text=REPLY_TEXT, now=now - 5 * minute)
        day.replied_late.append(entry.item_id)
    for entry in waiting[:3]:  # answered in time
        service.mark_replied(session, entry.item_id, user=leo, text=REPLY_TEXT, now=now - 2 * minute)
        day.replied_on_time.append(entry.item_id)
    rest = [e for e in waiting[3:] + overdue[3:] if e.status == "open"]
    for entry in rest[:1]:
        other = "support" if entry.intent != "support" else "billing"
        service.correct(
            session,
            entry.item_id,
            user=maya,
            intent=other,
            priority=entry.priority,
            queue=queue_of[other],
            now=now,
        )
        day.corrected.append(entry.item_id)
    for entry in rest[1:2]:
        service.accept(session, entry.item_id, user=leo, now=now)
        day.accepted.append(entry.item_id)
    for entry in rest[2:4]:
        service.claim(session, entry.item_id, user=leo, now=now)
        day.claimed.append(entry.item_id)
