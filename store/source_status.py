"""Each configured source's last attempt to read and its last error (`triage status`, /metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import SourceStatus

MAX_ERROR_CHARS = 2_000


def record_attempt(
    session: Session, *, source: str, channel: str, now: datetime, stored: int = 0, error: str | None = None
) -> None:
    """Note one attempt to read `source`: a success (error None) or the error a person should see."""
    row = session.get(SourceStatus, source, with_for_update=session.get_bind().dialect.name == "postgresql")
    if row is None:
        row = SourceStatus(
            source=source, channel=channel, errors_total=0, consecutive_errors=0, last_stored=0
        )
        session.add(row)
    row.channel = channel
    row.last_attempt_at = now
    if error is None:
        row.last_success_at = now
        row.consecutive_errors = 0
        row.last_stored = stored
    else:
        row.last_error = error[:MAX_ERROR_CHARS]
        row.last_error_at = now
        row.errors_total = (row.errors_total or 0) + 1
        row.consecutive_errors = (row.consecutive_errors or 0) + 1
    session.flush()


def all_statuses(session: Session) -> Sequence[SourceStatus]:
    """Every source that was ever attempted, by name."""
    return list(session.scalars(sa.select(SourceStatus).order_by(SourceStatus.source)))
