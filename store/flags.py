"""Operational switches. The automation kill switch sends every new enquiry to people while on."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from store.common import utcnow
from store.tables import Flag

AUTOMATION_PAUSED = "automation_paused"


def automation_paused(session: Session) -> tuple[bool, str | None]:
    """Whether the kill switch is on, and the reason given when it was switched on."""
    flag = session.get(Flag, AUTOMATION_PAUSED)
    if flag is None or not flag.value.get("paused"):
        return False, None
    return True, str(flag.value.get("reason") or "no reason given")


def set_automation_paused(session: Session, paused: bool, *, reason: str, by: str) -> None:
    """Switch automation off (paused=True) or back on; who and why are kept with the flag."""
    if paused and not reason.strip():
        raise ValueError("a reason is required to pause automation")
    value = {"paused": paused, "reason": reason.strip()}
    flag = session.get(Flag, AUTOMATION_PAUSED)
    if flag is None:
        session.add(Flag(key=AUTOMATION_PAUSED, value=value, updated_by=by, updated_at=utcnow()))
    else:
        flag.value = value
        flag.updated_by = by
        flag.updated_at = utcnow()


def flag_details(session: Session, key: str) -> Flag | None:
    return session.get(Flag, key)


def get_value(session: Session, key: str) -> dict[str, object] | None:
    """A flag's value, or None when it was never set."""
    flag = session.get(Flag, key)
    return dict(flag.value) if flag is not None else None


def set_value(session: Session, key: str, value: dict[str, object], *, by: str, now: datetime) -> None:
    """Set a flag's value (created on first use)."""
    flag = session.get(Flag, key)
    if flag is None:
        session.add(Flag(key=key, value=value, updated_by=by, updated_at=now))
    else:
        flag.value = value
        flag.updated_by = by
        flag.updated_at = now
