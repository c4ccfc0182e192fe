"""Owner routing: who gets an enquiry that needs people (config/defaults/routing.yaml).

In order: the account's owner (active, not away, under capacity, in working hours); else the team the
first territory rule picks, round robin or least loaded among its members who are available; else the
fallback pool; else the account owner or whoever is under capacity though not in working hours.
Working hours are each member's own (`triage users set NAME --hours`) when set, else their team's
from routing.yaml, always in the member's time zone. Every assignment carries its reason, written
as an audit row. The members' rows are locked while a batch is routed (store/routing_repo.py), so two
workers never give one person more than their capacity, and the round-robin cursor is a row shared by
every worker and run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from config.routing import DAYS, RoutingPolicy, Rule, WorkingHours
from store import routing_repo
from store.routing_repo import Member


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing looks at for one enquiry."""

    enquiry_id: str
    queue: str
    intent: str
    segment: str
    country: str | None = None
    language: str | None = None
    account_owner: str | None = None
    account: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    owner: str | None
    team: str
    reason: str
    crm_user_id: str | None = None


@dataclass
class _State:
    """Members, their loads and the cursors for one routing pass (inside the caller's transaction)."""

    members: dict[str, Member]
    loads: dict[str, int]
    cursors: dict[str, int]
    moved: dict[str, int] = field(default_factory=dict)


def working_now(member: Member, hours: WorkingHours | None, now: datetime) -> bool:
    """Whether `now` falls in the member's working hours in their own time zone: their own hours
    (`triage users set NAME --hours`) when set, else `hours` (the team's or pool's); always when neither."""
    windows = member.hours if member.hours is not None else (hours,) if hours is not None else None
    if windows is None:
        return True
    try:
        local = now.astimezone(ZoneInfo(member.timezone))
    except (ZoneInfoNotFoundError, ValueError):
        local = now
    day, clock = DAYS[local.weekday()], local.time()
    return any(day in window.days and window.start <= clock < window.end for window in windows)


class Router:
    """Routes batches of requests; `route` runs inside the batch's transaction."""

    def __init__(self, policy: RoutingPolicy) -> None:
        self.policy = policy

    def team_for(self, request: RouteRequest) -> tuple[str, Rule | None]:
        for rule in self.policy.rules:
            if _matches(rule, request):
                return rule.team, rule
        return self.policy.default_team, None

    def route(
        self, session: Session, requests: Sequence[RouteRequest], *, now: datetime, exclude: str | None = None
    ) -> dict[str, Assignment]:
        """Enquiry id → assignment, for every request (owner None only when everyone is away or full)."""
        if not requests:
            return {}
        members = {member.name: member for member in routing_repo.lock_members(session)}
        round_robin = [name for name, team in self.policy.teams.items() if team.strategy == "round_robin"]
        state = _State(
            members=members,
            loads=routing_repo.open_loads(session, members),
            cursors=routing_repo.lock_cursors(session, round_robin, now=now),
        )
        assignments = {
            request.enquiry_id: self._one(request, state, now, exclude=exclude) for request in requests
        }
        if state.moved:
            routing_repo.save_cursors(session, state.moved, now=now)
        return assignments

    # -- one request ----------------------------------------------------------------------------------
    def _one(self, request: RouteRequest, state: _State, now: datetime, *, exclude: str | None) -> Assignment:
        team, rule = self.team_for(request)
        owner = state.members.get(request.account_owner or "")
        # An account owner who is free but outside their hours still comes before strangers when
        # nobody is working now (they know the account and answer first thing in their morning).
        resting_owner: Member | None = None
        if self.policy.account_owner_first and request.account_owner:
            free = owner is not None and owner.name != exclude and self._free(owner, state)
            if owner is not None and free and working_now(owner, self._home_hours(owner, team), now):
                return self._give(
                    owner,
                    owner.teams[0] if owner.teams else team,
                    state,
                    f"account owner of {request.account or 'the account'}",
                )
            if owner is not None and free:
                resting_owner = owner
                why = "outside working hours"
            else:
                why = "unknown or inactive" if owner is None else "away" if owner.away else "at capacity"
            skipped = f"account owner {request.account_owner} {why}; "
        else:
            skipped = ""
        hours = self.policy.teams[team].working_hours
        candidates = [
            m
            for m in state.members.values()
            if team in m.teams and m.name != exclude and self._free(m, state)
        ]
        by_rule = f"rule {rule.name!r}" if rule is not None else "default team"
        working = [m for m in candidates if working_now(m, hours, now)]
        if working:
            strategy = self.policy.teams[team].strategy
            chosen = (
                self._round_robin(team, working, state)
                if strategy == "round_robin"
                else _least(working, state)
            )
            return self._give(
                chosen, team, state, f"{skipped}team {team} ({by_rule}), {strategy.replace('_', ' ')}"
            )
        pool_name = self.policy.fallback_pool
        pool = self.policy.pools[pool_name]
        named = set(pool.members)
        in_pool = [
            m
            for m in state.members.values()
            if (m.name in named if named else bool(m.teams)) and m.name != exclude and self._free(m, state)
        ]
        why = "nobody working now" if candidates else "everyone away or at capacity"
        pooled = [m for m in in_pool if working_now(m, pool.working_hours, now)]
        if pooled:
            return self._give(
                _least(pooled, state),
                team,
                state,
                f"{skipped}team {team} ({by_rule}): {why}; fallback pool {pool_name}, least loaded",
            )
        if resting_owner is not None:
            return self._give(
                resting_owner,
                resting_owner.teams[0] if resting_owner.teams else team,
                state,
                f"{skipped}team {team} and pool {pool_name}: nobody working now; "
                f"account owner of {request.account or 'the account'}, under capacity",
            )
        anyone = candidates or in_pool
        if anyone:
            return self._give(
                _least(anyone, state),
                team,
                state,
                f"{skipped}team {team} and pool {pool_name}: nobody working now; least loaded under capacity",
            )
        return Assignment(
            None,
            pool_name,
            f"{skipped}team {team} and pool {pool_name}: everyone away or at capacity; "
            f"held in pool {pool_name} until someone is free",
        )

    def _home_hours(self, member: Member, team: str) -> WorkingHours | None:
        """The team hours that apply to a member outside a team pick: their first team's (else `team`'s)."""
        home = member.teams[0] if member.teams and member.teams[0] in self.policy.teams else team
        return self.policy.teams[home].working_hours

    def _free(self, member: Member, state: _State) -> bool:
        return not member.away and state.loads.get(member.name, 0) < member.capacity

    def _give(self, member: Member, team: str, state: _State, reason: str) -> Assignment:
        state.loads[member.name] = state.loads.get(member.name, 0) + 1
        load = state.loads[member.name]
        return Assignment(
            member.name,
            team,
            f"assigned to {member.name}: {reason} ({load}/{member.capacity} open)",
            crm_user_id=member.crm_user_id,
        )

    def _round_robin(self, team: str, available: list[Member], state: _State) -> Member:
        """The next available member after the team's cursor in the weighted rotation."""
        rotation = _rotation([m for m in state.members.values() if team in m.teams])
        names = {m.name for m in available}
        position = state.cursors.get(team, -1)
        for step in range(1, len(rotation) + 1):
            index = (position + step) % len(rotation)
            if rotation[index] in names:
                state.cursors[team] = state.moved[team] = index
                return state.members[rotation[index]]
        return _least(available, state)  # not reached: available members are in the rotation


def _rotation(members: list[Member]) -> list[str]:
    """Members by name, each `weight` times, interleaved: weights 2 and 1 give a, b, a."""
    ordered = sorted(members, key=lambda m: m.name)
    rounds = max((m.weight for m in ordered), default=0)
    return [m.name for turn in range(rounds) for m in ordered if m.weight > turn]


def _least(members: list[Member], state: _State) -> Member:
    return min(
        members, key=lambda m: (state.loads.get(m.name, 0) / m.weight, state.loads.get(m.name, 0), m.name)
    )


def _matches(rule: Rule, request: RouteRequest) -> bool:
    checks: list[tuple[list[str], str | None]] = [
        (rule.queue, request.queue),
        (rule.segment, request.segment),
        (rule.country, (request.country or "").lower() or None),
        (rule.language, request.language),
        (rule.intent, request.intent),
    ]
    return all(not allowed or (value is not None and value in allowed) for allowed, value in checks)


def assignment_audit_row(triage_row: dict[str, Any], assignment: Assignment) -> dict[str, Any]:
    """The audit row of an assignment: the triage row's decision fields, its own kind and reason."""
    return {**triage_row, "kind": "assignment", "actor": "system", "reasons": [assignment.reason]}
