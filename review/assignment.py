"""Owners in the review pages: the load per SDR the ops lead sees, and routing an item again.

Loads are counted from the items' owners (store/routing_repo.py), so a reassignment moves one item
from one person's count to the other's at once; routing again picks a new owner by the same rules
as intake (pipeline/routing.py), never the current one, under the same locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from pipeline.routing import Router, RouteRequest
from store import review_repo, routing_repo
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


def reroute(session: Session, item_id: int, router: Router, *, by: str, now: datetime) -> str | None:
    """Route an open item again (someone other than its owner); returns the new owner."""
    item = session.get(ReviewItem, item_id)
    if item is None or item.status == "done":
        raise RerouteError(f"item {item_id} is not open")
    enquiry = session.get(Enquiry, item.enquiry_id)
    assert enquiry is not None  # a review item always has its enquiry (foreign key)
    enrichment = enquiry.enrichment or {}
    request = RouteRequest(
        enquiry_id=enquiry.id,
        queue=item.queue,
        intent=item.intent or enquiry.intent,
        segment=str(enrichment.get("segment") or "unknown"),
        country=enrichment.get("country"),
        language=enquiry.language,
        account_owner=enrichment.get("account_owner"),
        account=enrichment.get("account"),
    )
    previous = item.owner
    # The item leaves its owner's count before routing counts the loads.
    routing_repo.set_owner(session, item.id, owner=None, team=item.team, now=now)
    assignment = router.route(session, [request], now=now, exclude=previous)[enquiry.id]
    routing_repo.set_owner(session, item.id, owner=assignment.owner, team=assignment.team, now=now)
    if item.claimed_by == previous and previous is not None:
        review_repo.set_item_state(session, item, status="open", claimed_by=None, claimed_at=None)
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
            reasons=[f"routed again by {by} (was {previous or 'nobody'}): {assignment.reason}"],
            policy_version="routing",
            model_version=enquiry.model_version,
        )
    )
    session.flush()
    return assignment.owner
