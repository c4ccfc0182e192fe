"""Operational switches. The automation kill switch sends every new enquiry to people while on."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
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


# One flag per task the live precision monitor paused (models.live_precision): "task_paused:<task>".
TASK_PAUSE_PREFIX = "task_paused:"


def _task_key(task: str) -> str:
    key = f"{TASK_PAUSE_PREFIX}{task}"
    if len(key) <= 60:
        return key
    # The key column holds 60 characters: a long task name keeps its start and a digest of the whole.
    return f"{key[:51]}~{hashlib.sha256(task.encode()).hexdigest()[:8]}"


def task_pause(session: Session, task: str) -> dict[str, Any] | None:
    """The pause record of one task (paused or resumed), or None if it was never paused."""
    flag = session.get(Flag, _task_key(task))
    return dict(flag.value) if flag is not None else None


def paused_tasks(session: Session) -> dict[str, str]:
    """Task → reason, for every task whose automation is paused on its own."""
    rows = session.scalars(sa.select(Flag).where(Flag.key.startswith(TASK_PAUSE_PREFIX)))
    return {
        str(flag.value.get("task")): str(flag.value.get("reason") or "no reason given")
        for flag in rows
        if flag.value.get("paused")
    }


def all_task_pauses(session: Session) -> list[dict[str, Any]]:
    """Every task pause record, paused or resumed, with who set it last."""
    rows = session.scalars(sa.select(Flag).where(Flag.key.startswith(TASK_PAUSE_PREFIX)).order_by(Flag.key))
    return [{**flag.value, "updated_by": flag.updated_by} for flag in rows]


def set_task_pause(session: Session, task: str, value: dict[str, Any], *, by: str, at: datetime) -> None:
    """Write a task's pause record (a new dict, so the JSON column is seen as changed)."""
    flag = session.get(Flag, _task_key(task))
    record = {**value, "task": task}
    if flag is None:
        session.add(Flag(key=_task_key(task), value=record, updated_by=by, updated_at=at))
    else:
        flag.value = record
        flag.updated_by = by
        flag.updated_at = at
    session.flush()
