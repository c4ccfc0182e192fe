"""`triage review ...` and `triage users ...`: the review queue and accounts, for scripts and terminals.

Every review command names the acting person with `--user`; the action is audited under that name, as
it would be from the web pages. `--json` prints machine-readable output. Exit codes: 0 done, 1 refused
(claimed by someone else, unknown item or user), 2 bad arguments.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from review.choices import INTENTS, PRIORITIES, QUEUES, TaxonomyChoices
from review.display import SafeTable, markup_safe

# Heavy (SQLAlchemy, FastAPI and argon2 via review.auth): imported by the commands that need them.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from review.auth import CurrentUser


review_app = typer.Typer(help="Work the review queue from scripts.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts for the review pages.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# Item ids are INTEGER columns (32-bit on PostgreSQL): larger ones are refused as bad arguments (exit 2).
ItemIdArg = Annotated[
    int, typer.Argument(min=1, max=2**31 - 1, help="The item id from `triage review list`.")
]
HoursOption = Annotated[
    str | None,
    typer.Option(
        help='The user\'s own working hours in their --timezone, e.g. "Mon-Fri 09:00-17:00" (";" between '
        'windows); "team" (the default) uses the team\'s hours from routing.yaml.'
    ),
]
UserOption = Annotated[str, typer.Option("--user", "-u", help="The person acting (an existing user).")]


def _taxonomy() -> TaxonomyChoices:
    """The intents and queues of the configured policy directory's taxonomy."""
    from config.settings import Settings
    from review.choices import taxonomy_choices

    return taxonomy_choices(Settings().policy_dir)


@contextmanager
def _session() -> Iterator[Session]:
    from config.settings import Settings
    from pipeline.runtime import Runtime

    settings = Settings()
    settings.ensure_home()
    runtime = Runtime(settings)
    try:
        with runtime.factory() as session:
            yield session
    finally:
        runtime.engine.dispose()


def _fail(message: str, *, as_json: bool, code: int = 1) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        Console(stderr=True).print(f"[red]{markup_safe(message)}[/red]")
    raise typer.Exit(code)


def _acting_user(session: Session, name: str, *, as_json: bool) -> CurrentUser:
    from review.auth import CurrentUser
    from store import review_repo

    user = review_repo.get_user(session, name)
    if user is None or not user.active:
        _fail(f"no active user named {name!r}: add one with `triage users add`", as_json=as_json)
    return CurrentUser(name=user.name, role=user.role)


def _done(payload: dict[str, Any], text: str, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"ok": True, **payload}))
    else:
        print(text)


@review_app.command("list")
def list_items(
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    intent: Annotated[str | None, typer.Option(help="Only this intent.")] = None,
    lane: Annotated[str | None, typer.Option(help="Only this lane.")] = None,
    mine: Annotated[str | None, typer.Option("--mine", help="Only items claimed by this user.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only items routed to this user.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """Open and claimed items, soonest due first."""
    from review import service
    from store.common import utcnow

    taxonomy = _taxonomy()
    for name, value, allowed in (
        ("queue", queue, taxonomy.queues),
        ("lane", lane, service.LANES),
    ):
        if value is not None and value not in allowed:
            _fail(f"{name} must be one of {', '.join(allowed)}", as_json=as_json, code=2)
    with _session() as session:
        intents = service.allowed_intents(session, taxonomy)
        if intent is not None and intent not in intents:
            _fail(f"intent must be one of {', '.join(intents)}", as_json=as_json, code=2)
        page = service.list_queue(
            session,
            queue=queue,
            intent=intent,
            lane=lane,
            claimed_by=mine,
            owner=owner,
            now=utcnow(),
            limit=limit,
            offset=offset,
        )
    if as_json:
        print(json.dumps({"total": page.total, "items": [entry.as_dict() for entry in page.entries]}))
        return
    table = SafeTable(title=f"{page.total} open")
    for column in ("id", "time left", "priority", "subject", "intent", "queue", "lane", "owner"):
        table.add_column(column)
    for entry in page.entries:
        left = service.format_time_left(entry.seconds_left)
        table.add_row(
            str(entry.item_id),
            Text(left, style="red") if entry.breached else left,
            entry.priority,
            entry.subject[:60],
            entry.intent,
            entry.queue,
            entry.lane,
            # Who works it now, else whom routing gave it to (--json has both, and the language).
            entry.claimed_by or entry.owner or "",
        )
    Console(markup=True, highlight=False).print(table)


@review_app.command("claim")
def claim_item(item_id: ItemIdArg, user: UserOption, as_json: JsonOption = False) -> None:
    """Claim an item; exits 1 if someone else holds it."""
    from review import service
    from store import review_repo

    with _session() as session:
        actor = _acting_user(session, user, as_json=as_json)
        try:
            claimed = service.claim(session, item_id, user=actor.name)
        except service.ReviewError as error:
            _fail(str(error), as_json=as_json)
        session.commit()
        item = review_repo.get_item(session, item_id)
        holder = item.claimed_by if item is not None else None
    if not claimed:
        _fail(f"item {item_id} is held by {holder or 'nobody'} (or done)", as_json=as_json)
    _done({"item_id": item_id, "claimed_by": actor.name}, f"claimed item {item_id}", as_json=as_json)


@review_app.command("correct")
def correct_item(
    item_id: ItemIdArg,
    user: UserOption,
    intent: Annotated[
        str,
        typer.Option(
            help="An intent of the policy's taxonomy (bundled: "
            f"{', '.join(INTENTS)}) or one the active model was trained on."
        ),
    ],
    priority: Annotated[str, typer.Option(help=f"One of: {', '.join(PRIORITIES)}.")],
    queue: Annotated[
        str, typer.Option(help=f"A queue of the policy's taxonomy (bundled: {', '.join(QUEUES)}).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Correct the intent, priority and queue: a labelled example for the next training run."""
    from review import service

    with _session() as session:
        actor = _acting_user(session, user, as_json=as_json)
        try:
            service.correct(
                session,
                item_id,
                user=actor.name,
                intent=intent,
                priority=priority,
                queue=queue,
                override=actor.is_ops,
                taxonomy=_taxonomy(),
            )
        except service.ReviewError as error:
            _fail(str(error), as_json=as_json)
        session.commit()
    _done(
        {"item_id": item_id, "intent": intent, "priority": priority, "queue": queue},
        f"corrected item {item_id}: {intent}, {priority}, {queue}",
        as_json=as_json,
    )


@review_app.command("reply")
def reply_item(
    item_id: ItemIdArg,
    user: UserOption,
    text: Annotated[
        str | None, typer.Option(help="The reply's text (after the template's body, when both are given).")
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="A reply template (config/defaults/reply_templates/NAME.yaml).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Subject line; default 'Re: <enquiry subject>'.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a reply to the customer by e-mail (TRIAGE_OUTBOUND__SMTP__*), threaded on their mail.

    The reply goes through the reply outbox with its Message-ID fixed, so running this again never
    sends it twice. The first-response clock stops, and the item closes, when the SMTP server accepts
    it. Exits 1 when the reply is refused (no or bad address, bounce, spam) or the server refused it
    for good; a temporary failure leaves it queued for the next `triage run`.
    """
    from config.settings import Settings
    from pipeline import jobs
    from pipeline.runtime import Runtime
    from review import service
    from review.reply_templates import TemplateError, load_templates, render_for_item
    from store.tables import ReplyOutbox

    settings = Settings()
    runtime = Runtime(settings)
    try:
        with runtime.factory() as session:
            actor = _acting_user(session, user, as_json=as_json)
            body = text or ""
            if template is not None:
                try:
                    rendered = render_for_item(
                        session, item_id, load_templates(settings.policy_dir), template, owner=actor.name
                    )
                except (TemplateError, service.ReviewError) as error:
                    _fail(str(error), as_json=as_json)
                body = rendered.body + (f"\n\n{text}" if text else "")
                subject = subject or rendered.subject
            if not body.strip():
                _fail("give the reply's --text or a --template", as_json=as_json, code=2)
            try:
                reply_id = service.send_reply(
                    session,
                    item_id,
                    user=actor.name,
                    text=body,
                    subject=subject,
                    template=template,
                    outbound=settings.outbound,
                    now=runtime.clock(),
                    override=actor.is_ops,
                )
            except service.ReviewError as error:
                _fail(str(error), as_json=as_json)
            session.commit()
        sent = jobs.send_replies(runtime, only_ids=[reply_id])
        with runtime.factory() as session:
            row = session.get(ReplyOutbox, reply_id)
            assert row is not None
            state = {
                "status": row.status,
                "message_id": row.message_id,
                "to": row.to_address,
                "error": row.last_error,
            }
    finally:
        runtime.engine.dispose()
    payload = {"item_id": item_id, "reply_id": reply_id, **state, "replies_waiting": sent["replies_waiting"]}
    if state["status"] == "failed":
        _fail(f"reply {reply_id} not sent: {state['error']}", as_json=as_json)
    if state["status"] == "sent":
        text_out = f"reply sent to {state['to']} (Message-ID <{state['message_id']}>)"
    else:
        reason = state["error"] or "; ".join(sent["reply_errors"]) or "waiting for the next run"
        text_out = f"reply {reply_id} queued, not sent yet: {reason}"
    _done(payload, text_out, as_json=as_json)


@review_app.command("answered")
def answered_item(
    item_id: int,
    user: UserOption,
    reason: Annotated[str, typer.Option(help="How the customer was answered (a call, a chat, ...).")],
    as_json: JsonOption = False,
) -> None:
    """Record that the customer was answered outside this product: stops the clock by hand, closes the item.

    For chat and form enquiries without an e-mail address, or a reply made by phone.
    """
    from review import service

    if not reason.strip():
        _fail("give the --reason", as_json=as_json, code=2)
    with _session() as session:
        actor = _acting_user(session, user, as_json=as_json)
        try:
            service.mark_replied(
                session,
                item_id,
                user=actor.name,
                text=f"Answered elsewhere: {reason.strip()}",
                override=actor.is_ops,
            )
        except service.ReviewError as error:
            _fail(str(error), as_json=as_json)
        session.commit()
    _done(
        {"item_id": item_id, "answered_by": actor.name},
        f"item {item_id} recorded as answered",
        as_json=as_json,
    )


@review_app.command("route-again")
def route_again(
    user: UserOption,
    team: Annotated[str | None, typer.Option(help="Only items of this team (or pool).")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Only items routed to this user.")] = None,
    unassigned: Annotated[
        bool, typer.Option("--unassigned", help="Only items without an owner (held in the pool).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would move; change nothing.")] = False,
    now: Annotated[
        str | None,
        typer.Option(
            "--now", help="Route as at this instant (ISO 8601 with offset): what working hours see."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Route open items again whose owner can no longer hold them: none, away, disabled or over capacity.

    After `triage users set NAME --away` or a lowered `--capacity`: the items move by routing.yaml as
    intake routes (account owner, rules, round robin or least loaded, capacity, working hours, fallback
    pool); the rest keep their owner. Each move is audited under --user (an ops lead or admin) with
    from, to and why. Exits 1 when --user may not do it, 2 on bad arguments.
    """
    from config.routing import load_routing
    from config.settings import Settings
    from pipeline.routing import Router
    from review import assignment
    from store.common import utcnow

    if unassigned and owner is not None:
        _fail("--unassigned and --owner exclude each other", as_json=as_json, code=2)
    instant = utcnow()
    if now is not None:
        try:
            instant = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            _fail(f"--now {now!r} is not an ISO 8601 date-time", as_json=as_json, code=2)
        if instant.tzinfo is None:
            _fail(f"--now {now!r} has no UTC offset; add one, e.g. +00:00 or Z", as_json=as_json, code=2)
    settings = Settings()
    router = Router(load_routing(settings.policy_dir))
    if team is not None and team not in router.policy.teams and team not in router.policy.pools:
        names = sorted({*router.policy.teams, *router.policy.pools})
        _fail(f"team must be one of {', '.join(names)} (routing.yaml)", as_json=as_json, code=2)
    with _session() as session:
        actor = _acting_user(session, user, as_json=as_json)
        if not actor.is_ops:
            _fail(
                f"{actor.name} is an {actor.role}: routing again is for an ops lead or admin", as_json=as_json
            )
        result = assignment.route_again(
            session, router, by=actor.name, now=instant, team=team, owner=owner, unassigned=unassigned
        )
        if dry_run:
            session.rollback()
        else:
            session.commit()
    payload = {
        "dry_run": dry_run,
        "moved": [move.as_dict() for move in result.moved],
        "unchanged": [move.as_dict() for move in result.unchanged],
        "kept": result.kept,
        "skipped": [{"item_id": item_id, "why": why} for item_id, why in result.skipped],
    }
    if as_json:
        print(json.dumps({"ok": True, **payload}))
        return
    verb = "would move" if dry_run else "moved"
    table = SafeTable(title=f"{verb} {len(result.moved)} item(s); {result.kept} kept their owner")
    for column in ("id", "from", "to", "team", "why"):
        table.add_column(column)
    for move in result.moved:
        table.add_row(
            str(move.item_id), move.previous or "(nobody)", move.owner or "(pool)", move.team or "", move.why
        )
    console = Console(markup=True, highlight=False)
    console.print(table)
    if result.unchanged:
        console.print(f"{len(result.unchanged)} item(s) still without an owner: everyone away or at capacity")
    for item_id, why in result.skipped:
        console.print(Text(f"item {item_id} left alone: {why}"))


@users_app.command("add")
def add_user(
    name: str,
    role: Annotated[str, typer.Option(help="sdr, ops_lead or admin.")],
    password: Annotated[
        str | None, typer.Option(help="Prompted for (hidden, twice) when omitted; avoid it in shell history.")
    ] = None,
    teams: Annotated[
        str, typer.Option(help="Comma-separated teams the user works for, e.g. sales,support.")
    ] = "",
    capacity: Annotated[int, typer.Option(min=0, help="Most open items routing gives this user.")] = 25,
    weight: Annotated[int, typer.Option(min=1, help="Relative share in least-loaded assignment.")] = 1,
    timezone: Annotated[
        str, typer.Option(help="IANA zone of the working hours, e.g. Europe/Berlin.")
    ] = "UTC",
    email: Annotated[str | None, typer.Option(help="The user's e-mail address.")] = None,
    crm_user_id: Annotated[
        str | None, typer.Option(help="The user's CRM id (OwnerId on Salesforce).")
    ] = None,
    hours: HoursOption = None,
) -> None:
    """Create an account for the review pages, with what owner routing needs."""
    from review import auth
    from store import review_repo

    _check_zone(timezone)
    stored_hours = _hours_text(hours)
    team_names = _team_list(teams)

    if role not in auth.ROLES:
        _fail(f"role must be one of {', '.join(auth.ROLES)}", as_json=False, code=2)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _session() as session:
        try:
            auth.create_user(session, name, role=role, password=password)
        except auth.AccountError as error:
            _fail(str(error), as_json=False, code=1)
        user = review_repo.get_user(session, name)
        assert user is not None  # just created in this session
        user.teams = ",".join(team_names)
        user.capacity = capacity
        user.weight = weight
        user.timezone = timezone
        user.email = email
        user.crm_user_id = crm_user_id
        user.working_hours = stored_hours
        session.commit()
    print(f"user {name} added ({role})")


def _check_zone(timezone: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"unknown time zone {timezone!r}: use an IANA name like Europe/Berlin", as_json=False, code=2)


def _hours_text(hours: str | None) -> str | None:
    """The canonical text to store for --hours (None: the team's hours); exits 2 naming the mistake."""
    from config.routing import HoursError, format_hours, parse_hours

    if hours is None or hours.strip().lower() == "team":
        return None
    try:
        return format_hours(parse_hours(hours))
    except HoursError as error:
        _fail(f"--hours: {error}", as_json=False, code=2)


def _team_list(teams: str) -> list[str]:
    """`sales, support,,` -> ["sales", "support"]: blanks dropped, order kept, duplicates once."""
    names: list[str] = []
    for part in teams.split(","):
        team = part.strip().lower()
        if team and team not in names:
            names.append(team)
    return names


@users_app.command("set")
def set_user(
    name: str,
    away: Annotated[
        bool | None, typer.Option("--away/--back", help="Away users get no new items; --back returns them.")
    ] = None,
    hours: HoursOption = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA zone of the working hours, e.g. Europe/Berlin.")
    ] = None,
    capacity: Annotated[
        int | None, typer.Option(min=0, help="Most open items routing gives this user.")
    ] = None,
    weight: Annotated[int | None, typer.Option(min=1, help="Relative share in assignment.")] = None,
    teams: Annotated[str | None, typer.Option(help="Comma-separated teams (replaces the list).")] = None,
    email: Annotated[str | None, typer.Option(help="The user's e-mail address.")] = None,
    crm_user_id: Annotated[
        str | None, typer.Option(help="The user's CRM id (OwnerId on Salesforce).")
    ] = None,
) -> None:
    """Change a user's routing fields: away or back, working hours, time zone, capacity, weight, teams,
    e-mail and CRM user id.

    Items already routed keep their owner; `triage review route-again` moves them by the new fields.
    """
    from store import review_repo

    if all(value is None for value in (away, hours, timezone, capacity, weight, teams, email, crm_user_id)):
        _fail(
            "nothing to change: pass --away/--back, --hours, --timezone, --capacity, --weight, --teams, "
            "--email or --crm-user-id",
            as_json=False,
            code=2,
        )
    if timezone is not None:
        _check_zone(timezone)
    stored_hours = _hours_text(hours)
    with _session() as session:
        user = review_repo.get_user(session, name)
        if user is None:
            _fail(f"no user named {name!r}", as_json=False)
        changed: list[str] = []
        if away is not None:
            user.away = away
            changed.append("away" if away else "back")
        if hours is not None:
            user.working_hours = stored_hours
            changed.append(f"hours {stored_hours or 'of the team'}")
        if timezone is not None:
            user.timezone = timezone
            changed.append(f"time zone {timezone}")
        if capacity is not None:
            user.capacity = capacity
            changed.append(f"capacity {capacity}")
        if weight is not None:
            user.weight = weight
            changed.append(f"weight {weight}")
        if teams is not None:
            user.teams = ",".join(_team_list(teams))
            changed.append(f"teams {user.teams or '(none)'}")
        if email is not None:
            user.email = email or None
            changed.append(f"e-mail {email or '(none)'}")
        if crm_user_id is not None:
            user.crm_user_id = crm_user_id or None
            changed.append(f"CRM user id {crm_user_id or '(none)'}")
        session.commit()
    print(f"user {name}: {', '.join(changed)}")


def _set_active(name: str, active: bool) -> int:
    from review import auth

    with _session() as session:
        try:
            auth.set_active(session, name, active)
        except auth.AccountError as error:
            _fail(str(error), as_json=False)
        ended = 0 if active else auth.end_user_sessions(session, name)
        session.commit()
    return ended


@users_app.command("disable")
def disable_user(name: str) -> None:
    """Stop an account from logging in and end its open sessions at once."""
    _set_active(name, False)
    print(f"user {name} disabled; their sessions are ended")


@users_app.command("deactivate", hidden=True)
def deactivate_user(name: str) -> None:
    """The old name of `triage users disable`."""
    _set_active(name, False)
    print(f"user {name} deactivated; their sessions are ended")


@users_app.command("enable")
def enable_user(name: str) -> None:
    """Let a disabled account log in again (with its old password)."""
    _set_active(name, True)
    print(f"user {name} enabled")


@users_app.command("passwd")
def change_password(
    name: str,
    password: Annotated[
        str | None, typer.Option(help="Prompted for (hidden, twice) when omitted; avoid it in shell history.")
    ] = None,
) -> None:
    """Set a new password; every session of the user ends at once (they log in again)."""
    from review import auth

    if password is None:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    with _session() as session:
        try:
            auth.change_password(session, name, password)
        except auth.AccountError as error:
            _fail(str(error), as_json=False)
        session.commit()
    print(f"password of {name} changed; their sessions are ended")


@users_app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """Accounts, their roles and routing fields, and each one's load (open items routed to them)."""
    from store import review_repo, routing_repo

    with _session() as session:
        loads = routing_repo.loads_by_user(session)
        users = [
            {
                "name": user.name,
                "role": user.role,
                "active": user.active,
                "created_at": user.created_at.isoformat(),
                "teams": [team for team in user.teams.split(",") if team],
                "capacity": user.capacity,
                "weight": user.weight,
                "timezone": user.timezone,
                "working_hours": user.working_hours,  # None: the team's hours
                "email": user.email,
                "crm_user_id": user.crm_user_id,
                "away": user.away,
                "open_items": loads.get(user.name, 0),
            }
            for user in review_repo.list_users(session)
        ]
    if as_json:
        print(json.dumps(users))
        return
    for user in users:
        state = "away" if user["away"] else "active" if user["active"] else "inactive"
        hours = f"{user['working_hours']} {user['timezone']}" if user["working_hours"] else "team hours"
        print(
            f"{user['name']}\t{user['role']}\t{state}\t{user['open_items']}/{user['capacity']} open\t{hours}"
        )
