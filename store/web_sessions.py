"""Server-side login sessions and the login throttle of the review pages (tables `web_sessions`,
`login_throttle`). The policy (lifetimes, delays) lives in `review.auth`; this module only stores."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import insert_ignore
from store.db import is_postgresql
from store.tables import LoginThrottle, WebSession


def add_session(session: Session, *, token_hash: str, user_name: str, now: datetime) -> None:
    session.add(WebSession(token_hash=token_hash, user_name=user_name, created_at=now, last_seen_at=now))
    session.flush()


def get_session(session: Session, token_hash: str) -> WebSession | None:
    return session.get(WebSession, token_hash)


def touch_session(session: Session, token_hash: str, *, now: datetime) -> None:
    session.execute(sa.update(WebSession).where(WebSession.token_hash == token_hash).values(last_seen_at=now))


def delete_session(session: Session, token_hash: str) -> None:
    session.execute(sa.delete(WebSession).where(WebSession.token_hash == token_hash))


def delete_user_sessions(session: Session, user_name: str) -> int:
    """End every session of one user (password change, disabled account); returns how many."""
    result = session.execute(sa.delete(WebSession).where(WebSession.user_name == user_name))
    return int(getattr(result, "rowcount", 0) or 0)


def delete_stale_sessions(session: Session, *, idle_before: datetime, created_before: datetime) -> int:
    """Drop sessions past their idle or absolute lifetime (housekeeping; they are refused anyway)."""
    result = session.execute(
        sa.delete(WebSession).where(
            sa.or_(WebSession.last_seen_at < idle_before, WebSession.created_at < created_before)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def throttle_rows(session: Session, keys: list[str]) -> dict[str, LoginThrottle]:
    rows = session.scalars(sa.select(LoginThrottle).where(LoginThrottle.key.in_(keys)))
    return {row.key: row for row in rows}


def locked_throttle_row(session: Session, key: str, *, now: datetime) -> LoginThrottle:
    """The throttle row of `key`, made if absent, locked for update on PostgreSQL."""
    insert_ignore(
        session,
        LoginThrottle,
        [{"key": key, "failures": 0, "last_failure_at": now, "next_allowed_at": now}],
        conflict=["key"],
    )
    statement = sa.select(LoginThrottle).where(LoginThrottle.key == key)
    if is_postgresql(session):
        statement = statement.with_for_update()
    row = session.scalars(statement.execution_options(populate_existing=True)).one()
    return row


def delete_quiet_throttle_rows(session: Session, *, before: datetime) -> int:
    """Drop throttle rows whose last failure and wait both ended before `before`."""
    result = session.execute(
        sa.delete(LoginThrottle).where(
            LoginThrottle.last_failure_at < before, LoginThrottle.next_allowed_at < before
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def clear_throttle(session: Session, key: str) -> None:
    session.execute(sa.delete(LoginThrottle).where(LoginThrottle.key == key))
