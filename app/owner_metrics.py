"""/metrics figures by owner and by team (issue 12): open items and breached first responses."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session

from store import observability, routing_repo


def owner_metrics(session: Session, _now: datetime) -> list[Metric]:
    open_items = GaugeMetricFamily(
        "triage_review_open_by_owner",
        "Open and claimed review items by routed owner and team ('' when none).",
        labels=["owner", "team"],
    )
    # From the counters (review_owners): the same figures as routing_repo.open_items_by_owner_team.
    for owner, team, count in observability.open_by_owner_team(session):
        open_items.add_metric([owner, team], count)
    breached = GaugeMetricFamily(
        "triage_sla_breached_by_owner",
        "Breached first-response timers by owner (who works the item, else its routed owner) and team.",
        labels=["owner", "team"],
    )
    for owner, team, count in routing_repo.breached_by_owner_team(session):
        breached.add_metric([owner, team], count)
    return [open_items, breached]
