"""Repository functions for spot checks (`spot_checks`): automated enquiries also reviewed by people.

The live precision monitor's rules live in `models.live_precision`; this module only reads and writes
rows. Callers own the transaction: nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import insert_ignore
from store.tables import ShadowPrediction, SpotCheck


def add_spot_checks(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert spot checks; an enquiry already checked keeps its row (a re-run adds nothing)."""
    return insert_ignore(session, SpotCheck, rows, conflict=["enquiry_id"])


def counts_since(session: Session, tasks: Iterable[str], since: datetime) -> dict[str, int]:
    """How many spot checks each of `tasks` has had selected at or after `since` (index-backed)."""
    wanted = sorted(set(tasks))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(SpotCheck.task, sa.func.count())
        .where(SpotCheck.task.in_(wanted), SpotCheck.selected_at >= since)
        .group_by(SpotCheck.task)
    )
    return {str(task): int(count) for task, count in rows}


def get_for_enquiry(session: Session, enquiry_id: str) -> SpotCheck | None:
    """The spot check of one enquiry, if it is one."""
    return session.scalars(sa.select(SpotCheck).where(SpotCheck.enquiry_id == enquiry_id)).first()


def record_review(
    session: Session, enquiry_id: str, *, intent: str, by: str, at: datetime
) -> SpotCheck | None:
    """Store a reviewer's label on the enquiry's spot check (the latest review wins); None if the
    enquiry is not a spot check."""
    row = get_for_enquiry(session, enquiry_id)
    if row is None:
        return None
    row.reviewed_intent = intent
    row.reviewed_by = by
    row.reviewed_at = at
    row.correct = intent == row.intent
    session.flush()
    return row


@dataclass(frozen=True)
class Tally:
    """Reviewed spot checks of one task: how many, and how many the automated lane got right."""

    task: str
    reviewed: int
    correct: int


def tallies(
    session: Session, *, model_version: str | None, since_by_task: dict[str, datetime] | None = None
) -> dict[str, Tally]:
    """Reviewed spot checks per task, of `model_version` (None: any), each task from its own start
    instant in `since_by_task` (a task resumed by a person starts afresh)."""
    statement = (
        sa.select(
            SpotCheck.task,
            SpotCheck.reviewed_at,
            SpotCheck.correct,
        )
        .where(SpotCheck.reviewed_at.is_not(None))
        .order_by(SpotCheck.task)
    )
    if model_version is not None:
        statement = statement.where(SpotCheck.model_version == model_version)
    since_by_task = since_by_task or {}
    counts: dict[str, list[int]] = {}
    for task, reviewed_at, correct in session.execute(statement):
        since = since_by_task.get(task)
        if since is not None and reviewed_at < since:
            continue
        pair = counts.setdefault(str(task), [0, 0])
        pair[0] += 1
        pair[1] += int(bool(correct))
    return {task: Tally(task, n, k) for task, (n, k) in counts.items()}


def selected_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Per task: spot checks selected, and how many of them people have reviewed."""
    rows = session.execute(
        sa.select(SpotCheck.task, sa.func.count(), sa.func.count(SpotCheck.reviewed_at)).group_by(
            SpotCheck.task
        )
    )
    return {str(task): (int(selected), int(reviewed)) for task, selected, reviewed in rows}


def shadow_outcomes(session: Session, shadow_version: str) -> list[tuple[str, str, bool, str]]:
    """For each reviewed spot check the shadow model also scored: (task, shadow intent, shadow
    abstained, reviewed intent)."""
    rows = session.execute(
        sa.select(
            SpotCheck.task, ShadowPrediction.intent, ShadowPrediction.abstained, SpotCheck.reviewed_intent
        )
        .join(ShadowPrediction, ShadowPrediction.enquiry_id == SpotCheck.enquiry_id)
        .where(ShadowPrediction.model_version == shadow_version, SpotCheck.reviewed_at.is_not(None))
    )
    return [(str(t), str(i), bool(a), str(r)) for t, i, a, r in rows]
