"""What owner routing reads and locks: routable users, their open items, the round-robin cursors.

Concurrency: `lock_members` takes the users' rows `FOR UPDATE` on PostgreSQL (ordered by id, so two
workers never deadlock on them) and the database's write lock on SQLite. Loads are counted after the
lock is held, so a second worker sees the first one's committed assignments and never gives a member
more than their capacity; the locks last until the batch commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config.routing import HoursError, WorkingHours, parse_hours
from store.common import insert_ignore
from store.tables import ReviewItem, RoutingCursor, User

OPEN_STATUSES = ("open", "claimed")


@dataclass(frozen=True, slots=True)
class Member:
    """A user as routing sees them."""

    id: int
    name: str
    role: str
    teams: tuple[str, ...]
    capacity: int
    weight: int
    timezone: str
    away: bool
    crm_user_id: str | None
    # The user's own hours in `timezone`; None: the team's (or pool's) hours from routing.yaml.
    hours: tuple[WorkingHours, ...] | None = None


def member_hours(text: str | None) -> tuple[WorkingHours, ...] | None:
    """A user's stored hours; None when unset. `triage users` validates before storing, so a row
    that does not parse was edited by hand: it counts as unset (the team's hours) rather than
    stopping routing for everyone."""
    if not text:
        return None
    try:
        return parse_hours(text)
    except HoursError:
        return None


def _member(user: User) -> Member:
    return Member(
        id=user.id,
        name=user.name,
        role=user.role,
        teams=tuple(team for team in user.teams.split(",") if team),
        capacity=user.capacity,
        weight=max(1, user.weight),
        timezone=user.timezone or "UTC",
        away=user.away,
        crm_user_id=user.crm_user_id,
        hours=member_hours(user.working_hours),
    )


def take_write_lock(session: Session) -> None:
    """SQLite: hold the database's write lock from here to commit (a no-op UPDATE takes it)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("UPDATE flags SET key = key WHERE 0"))


def lock_members(session: Session) -> list[Member]:
    """Every active user, locked for this transaction (see the module docstring)."""
    take_write_lock(session)
    statement = sa.select(User).where(User.active.is_(True)).order_by(User.id)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    # Fresh rows, not what the session may hold from before the lock.
    return [_member(user) for user in session.scalars(statement.execution_options(populate_existing=True))]


def open_loads(session: Session, names: Iterable[str]) -> dict[str, int]:
    """Open and claimed items each user owns."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(ReviewItem.owner, sa.func.count())
        .where(ReviewItem.owner.in_(wanted), ReviewItem.status.in_(OPEN_STATUSES))
        .group_by(ReviewItem.owner)
    )
    return {str(owner): int(count) for owner, count in rows}


def lock_cursors(session: Session, teams: Sequence[str], *, now: datetime) -> dict[str, int]:
    """The round-robin position of each team, its row created if missing and locked (PostgreSQL)."""
    if not teams:
        return {}
    insert_ignore(
        session,
        RoutingCursor,
        [{"team": team, "position": -1, "updated_at": now} for team in teams],
        conflict=["team"],
    )
    statement = sa.select(RoutingCursor.team, RoutingCursor.position).where(
        RoutingCursor.team.in_(list(teams))
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.order_by(RoutingCursor.team).with_for_update()
    return {str(team): int(position) for team, position in session.execute(statement)}


def save_cursors(session: Session, positions: dict[str, int], *, now: datetime) -> None:
    for team, position in positions.items():
        session.execute(
            sa.update(RoutingCursor)
            .where(RoutingCursor.team == team)
            .values(position=position, updated_at=now)
        )


def user_names_by_crm_id(session: Session, crm_ids: Iterable[str]) -> dict[str, str]:
    """CRM user id (Salesforce OwnerId) → the user here who carries it (`--crm-user-id`)."""
    wanted = [value for value in dict.fromkeys(crm_ids) if value]
    if not wanted:
        return {}
    rows = session.execute(sa.select(User.crm_user_id, User.name).where(User.crm_user_id.in_(wanted)))
    return {str(crm_id): str(name) for crm_id, name in rows}


def set_owner(session: Session, item_id: int, *, owner: str | None, team: str | None, now: datetime) -> None:
    session.execute(
        sa.update(ReviewItem).where(ReviewItem.id == item_id).values(owner=owner, team=team, assigned_at=now)
    )


def loads_by_user(session: Session) -> dict[str, int]:
    """Open and claimed items per owner (the ops lead's load view)."""
    rows = session.execute(
        sa.select(ReviewItem.owner, sa.func.count())
        .where(ReviewItem.owner.is_not(None), ReviewItem.status.in_(OPEN_STATUSES))
        .group_by(ReviewItem.owner)
    )
    return {str(owner): int(count) for owner, count in rows}


def open_items_by_owner_team(session: Session) -> list[tuple[str, str, int]]:
    """(owner, team, open and claimed items) for /metrics; owner and team '' when none (index-backed)."""
    rows = session.execute(
        sa.select(ReviewItem.owner, ReviewItem.team, sa.func.count())
        .where(ReviewItem.status.in_(OPEN_STATUSES))
        .group_by(ReviewItem.owner, ReviewItem.team)
    )
    return [(str(owner or ""), str(team or ""), int(count)) for owner, team, count in rows]


def breached_by_owner_team(session: Session) -> list[tuple[str, str, int]]:
    """(owner, team, breached first-response timers) for /metrics."""
    from store.tables import SlaTimer

    rows = session.execute(
        sa.select(sa.func.coalesce(ReviewItem.claimed_by, ReviewItem.owner), ReviewItem.team, sa.func.count())
        .join(SlaTimer, SlaTimer.enquiry_id == ReviewItem.enquiry_id)
        .where(SlaTimer.kind == "first_response", SlaTimer.status == "breached")
        .group_by(sa.func.coalesce(ReviewItem.claimed_by, ReviewItem.owner), ReviewItem.team)
    )
    return [(str(owner or ""), str(team or ""), int(count)) for owner, team, count in rows]
