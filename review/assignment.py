"""Owners in the review pages: the load per SDR the ops lead sees, and routing items again.

Loads are counted from the items' owners (store/routing_repo.py), so a reassignment moves one item
from one person's count to the other's at once; routing again picks a new owner by the same rules
as intake (pipeline/routing.py), never the current one, under the same locks. `route_again` does it
for every open item whose owner can no longer hold it (`triage review route-again`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.routing import Assignment, Router, RouteRequest
from store import review_repo, routing_repo
from store.routing_repo import OPEN_STATUSES, Member
from store.tables import DecisionRow, Enquiry, ReviewItem


@dataclass(frozen=True, slots=True)
class Load:
    name: str
    teams: str
    open_items: int
    capacity: int
    away: bool

    @property
    def share(self) -> float:
        return self.open_items / self.capacity if self.capacity else 1.0


def loads(session: Session) -> list[Load]:
    """Every active user with a team: open items they own against their capacity."""
    counts = routing_repo.loads_by_user(session)
    return [
        Load(user.name, user.teams, counts.get(user.name, 0), user.capacity, user.away)
        for user in review_repo.list_users(session)
        if user.active and user.teams
    ]


class RerouteError(Exception):
    pass


def _request(item: ReviewItem, enquiry: Enquiry) -> RouteRequest:
    """What routing looks at, from the stored item and its enquiry (as intake saw it)."""
    enrichment = enquiry.enrichment or {}
    return RouteRequest(
        enquiry_id=enquiry.id,
        queue=item.queue,
        intent=item.intent or enquiry.intent,
        segment=str(enrichment.get("segment") or "unknown"),
        country=enrichment.get("country"),
        language=enquiry.language,
        account_owner=enrichment.get("account_owner"),
        account=enrichment.get("account"),
    )


def _audit(session: Session, enquiry: Enquiry, *, by: str, now: datetime, reason: str) -> None:
    session.add(
        DecisionRow(
            enquiry_id=enquiry.id,
            created_at=now,
            actor=by,
            kind="assignment",
            lane=enquiry.lane,
            intent=enquiry.intent,
            queue=enquiry.queue,
            priority=enquiry.priority,
            confidence=enquiry.confidence,
            task="reroute",
            reasons=[reason],
            policy_version="routing",
            model_version=enquiry.model_version,
        )
    )


def reroute(session: Session, item_id: int, router: Router, *, by: str, now: datetime) -> str | None:
    """Route an open item again (someone other than its owner); returns the new owner."""
    item = session.get(ReviewItem, item_id)
    if item is None or item.status == "done":
        raise RerouteError(f"item {item_id} is not open")
    enquiry = session.get(Enquiry, item.enquiry_id)
    assert enquiry is not None  # a review item always has its enquiry (foreign key)
    request = _request(item, enquiry)
    previous = item.owner
    # The item leaves its owner's count before routing counts the loads.
    routing_repo.set_owner(session, item.id, owner=None, team=item.team, now=now)
    assignment = router.route(session, [request], now=now, exclude=previous)[enquiry.id]
    _move(
        session,
        item,
        enquiry,
        assignment,
        previous=previous,
        by=by,
        now=now,
        reason=f"routed again by {by} (was {previous or 'nobody'}): {assignment.reason}",
    )
    session.flush()
    return assignment.owner


def _move(
    session: Session,
    item: ReviewItem,
    enquiry: Enquiry,
    assignment: Assignment,
    *,
    previous: str | None,
    by: str,
    now: datetime,
    reason: str,
) -> None:
    """Give `item` its new owner, release the previous owner's claim on it, and audit the move."""
    routing_repo.set_owner(session, item.id, owner=assignment.owner, team=assignment.team, now=now)
    if item.claimed_by is not None and item.claimed_by == previous:
        review_repo.set_item_state(session, item, status="open", claimed_by=None, claimed_at=None)
    _audit(session, enquiry, by=by, now=now, reason=reason)


@dataclass(frozen=True, slots=True)
class Move:
    """One item routed again: from whom, to whom, why it moved and how routing chose."""

    item_id: int
    enquiry_id: str
    previous: str | None
    owner: str | None
    team: str | None
    why: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "item_id": self.item_id,
            "enquiry_id": self.enquiry_id,
            "from": self.previous,
            "to": self.owner,
            "team": self.team,
            "why": self.why,
            "reason": self.reason,
        }


@dataclass
class RouteAgainResult:
    moved: list[Move] = field(default_factory=list)
    unchanged: list[Move] = field(default_factory=list)  # routed again, same answer (still no owner)
    kept: int = 0  # open items looked at whose owner can still hold them
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (item id, why it was left alone)


def _why_move(owner: str | None, members: dict[str, Member]) -> str | None:
    """Why an item's owner can no longer hold it (None: they can), capacity aside."""
    if owner is None:
        return "no owner"
    member = members.get(owner)
    if member is None:
        return f"{owner} is not an active user"
    if member.away:
        return f"{owner} is away"
    return None


def route_again(
    session: Session,
    router: Router,
    *,
    by: str,
    now: datetime,
    team: str | None = None,
    owner: str | None = None,
    unassigned: bool = False,
) -> RouteAgainResult:
    """Route again every open item (of `team`, of `owner`, or only those without one) whose owner can
    no longer hold it: none, away, not an active user, or over their capacity (the newest items above
    it move, the oldest stay). Everything else keeps its owner, so running it twice changes nothing.

    Under the routing locks (store/routing_repo.py): the moving items leave their owners' counts, then
    one routing pass gives them owners by routing.yaml as intake does (account owner, rules, round
    robin or least loaded, capacity, hours, fallback pool). An item someone other than its owner has
    claimed is being worked and is left alone; an away or gone owner's claim is released. Each change is
    an `assignment` audit row naming who ran it, from, to and why. The caller commits (or rolls back
    for a dry run: the same decisions, nothing kept).
    """
    members = {member.name: member for member in routing_repo.lock_members(session)}
    statement = sa.select(ReviewItem).where(ReviewItem.status.in_(OPEN_STATUSES)).order_by(ReviewItem.id)
    if team is not None:
        statement = statement.where(ReviewItem.team == team)
    if unassigned:
        statement = statement.where(ReviewItem.owner.is_(None))
    elif owner is not None:
        statement = statement.where(ReviewItem.owner == owner)
    items = list(session.scalars(statement))
    loads = routing_repo.open_loads(session, members)
    result = RouteAgainResult()
    moving: list[tuple[ReviewItem, str]] = []
    for item in items:
        why = _why_move(item.owner, members)
        if item.status == "claimed" and item.claimed_by and item.claimed_by != item.owner:
            worker = members.get(item.claimed_by)
            if worker is not None and not worker.away:
                result.skipped.append((item.id, f"claimed by {item.claimed_by}, who is working on it"))
                continue
        if why is not None:
            moving.append((item, why))
    # Over capacity (lowered, or set by hand): the newest unclaimed items above it move.
    chosen = {item.id for item, _ in moving}
    for name, member in members.items():
        excess = loads.get(name, 0) - member.capacity
        if excess <= 0 or member.away:
            continue
        theirs = [i for i in items if i.owner == name and i.status == "open" and i.id not in chosen]
        for item in sorted(theirs, key=lambda i: i.id, reverse=True)[:excess]:
            moving.append((item, f"{name} is over capacity ({loads[name]}/{member.capacity} open)"))
    moving.sort(key=lambda pair: pair[0].id)
    result.kept = len(items) - len(moving) - len(result.skipped)
    if not moving:
        return result
    enquiries = {
        enquiry.id: enquiry
        for enquiry in session.scalars(
            sa.select(Enquiry).where(Enquiry.id.in_([i.enquiry_id for i, _ in moving]))
        )
    }
    # Read before the updates below (the session keeps the items in step with them).
    previous = {item.id: (item.owner, item.team, item.assigned_at) for item, _ in moving}
    # The moving items leave their owners' counts before routing counts the loads.
    for item, _ in moving:
        routing_repo.set_owner(session, item.id, owner=None, team=item.team, now=now)
    session.flush()
    assignments = router.route(
        session, [_request(item, enquiries[item.enquiry_id]) for item, _ in moving], now=now
    )
    for item, why in moving:
        enquiry = enquiries[item.enquiry_id]
        assignment = assignments[enquiry.id]
        was, team_was, assigned_at = previous[item.id]
        move = Move(item.id, enquiry.id, was, assignment.owner, assignment.team, why, assignment.reason)
        if assignment.owner == was:  # still nobody free: the item stays as it was, unaudited
            routing_repo.set_owner(session, item.id, owner=was, team=team_was, now=assigned_at or now)
            result.unchanged.append(move)
            continue
        _move(
            session,
            item,
            enquiry,
            assignment,
            previous=was,
            by=by,
            now=now,
            reason=f"routed again by {by}: {was or 'nobody'} -> {assignment.owner or 'nobody'} "
            f"because {why}; {assignment.reason}",
        )
        result.moved.append(move)
    session.flush()
    return result
