"""The review pages: the SDR queue, the enquiry page and its actions, and the ops lead's pages.

Server-rendered with Jinja2 (autoescape on: enquiry text is untrusted and always shown as text). Every
form posts with a CSRF token (checked by a router-wide dependency) and answers with a redirect, so
reloading a page never repeats an action. `install(app, settings)` wires sessions, static files and the
login redirect into an application; `app.web.create_app` calls it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.templating import Jinja2Templates

from config.settings import Settings
from models.errors import ConfigError, TriageError
from review import assignment, auth, service
from review.auth import CurrentUser, check_csrf, current_user, db_session, require_ops
from review.choices import TaxonomyChoices, taxonomy_choices
from review.display import jinja_finalize
from store import flags, review_repo
from store.common import utcnow
from store.tables import ModelVersion

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
# Item ids are INTEGER columns (32-bit on PostgreSQL): a larger id is a 422, never an overflow (a 500).
ItemId = Annotated[int, PathParam(ge=1, le=2**31 - 1)]

_environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    # Every `{{ }}` string shows bidi and other invisible controls as visible <U+XXXX> (review.display).
    finalize=jinja_finalize,
)
_environment.filters["time_left"] = service.format_time_left
_environment.filters["utc"] = lambda value: value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"
templates = Jinja2Templates(env=_environment)

router = APIRouter(dependencies=[Depends(check_csrf)])


# --- page plumbing ----------------------------------------------------------------------------------


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = getattr(request.app.state, "clock", utcnow)
    return clock()


def flash(request: Request, text: str, level: str = "info") -> None:
    """A one-time message shown on the next page."""
    messages = list(request.session.get("flash", []))
    messages.append([level, text])
    request.session["flash"] = messages[-5:]


def render(
    request: Request,
    session: Session,
    name: str,
    context: dict[str, Any],
    *,
    user: CurrentUser | None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page with what every page needs: user, CSRF token, kill-switch banner, flash messages."""
    paused, reason = flags.automation_paused(session)
    base = {
        "user": user,
        "csrf_token": auth.csrf_token(request),
        "automation_paused": paused,
        "automation_reason": reason,
        "messages": request.session.pop("flash", []),
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def _back_to_item(item_id: int) -> RedirectResponse:
    return RedirectResponse(f"/review/items/{item_id}", status_code=303)


def _run_action(
    request: Request, session: Session, item_id: int, action: Callable[[], None], done: str
) -> Response:
    """Run one service action in a transaction; tell the person what happened either way."""
    try:
        action()
        session.commit()
        flash(request, done, "ok")
    except service.ItemNotFoundError as error:
        session.rollback()
        raise HTTPException(status_code=404, detail=str(error)) from error
    except service.ReviewError as error:
        session.rollback()
        flash(request, str(error), "error")
    return _back_to_item(item_id)


# --- login ------------------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/review", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, session: Session = Depends(db_session)) -> HTMLResponse:  # noqa: B008
    error = auth.HTTPS_NEEDED if auth.cookie_needs_https(request) else None
    return render(request, session, "login.html", {"error": error}, user=None)


def _client_address(request: Request) -> str:
    # uvicorn's proxy_headers put the X-Forwarded-For address here when a trusted proxy sent it.
    return request.client.host if request.client is not None else "unknown"


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    username: str = Form(..., max_length=100),
    password: str = Form(..., max_length=1000),
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    """Check the password under the login throttle, with one of the process's hashing slots held.

    The throttle is read inside the slot, so logins queued behind it see the failures before them.
    """
    address = _client_address(request)
    policy = auth.ThrottlePolicy.from_settings(request.app.state.settings)
    try:
        with auth.hashing_slot():
            now = _now(request)
            wait = auth.login_wait(session, username, address, now=now)
            if wait > 0:
                session.rollback()
                return _login_refused(request, session, wait, status_code=429)
            user = auth.authenticate(session, username, password)
            if user is None:
                delay = auth.record_failure(session, username, address, now=now, policy=policy)
                session.commit()
                logger.warning("failed login for %r from %s", username[:100], address)
                return _login_refused(request, session, delay, status_code=401)
            auth.record_success(session, user.name)
            auth.forget_stale(session, request.app.state.settings, now=now)
            auth.start_session(request, session, user, now=now)
            session.commit()  # the session row, the cleared throttle and a rehashed password
    except auth.HashingBusyError as error:
        session.rollback()
        context = {"error": f"The server is busy: {error}."}
        response = render(request, session, "login.html", context, user=None, status_code=503)
        response.headers["retry-after"] = "5"
        return response
    logger.info("login: %s", user.name)
    return RedirectResponse("/review", status_code=303)


def _login_refused(request: Request, session: Session, wait: float, *, status_code: int) -> HTMLResponse:
    seconds = max(1, int(-(-wait // 1))) if wait > 0 else 0
    if status_code == 429:
        text = f"Too many failed logins. Try again in {seconds} s."
    elif seconds:
        text = f"Wrong name or password. The next try must wait {seconds} s."
    else:
        text = "Wrong name or password."
    response = render(request, session, "login.html", {"error": text}, user=None, status_code=status_code)
    if seconds:
        response.headers["retry-after"] = str(seconds)
    return response


@router.post("/logout")
def logout(request: Request, session: Session = Depends(db_session)) -> RedirectResponse:  # noqa: B008
    auth.end_session(request, session)
    session.commit()
    return RedirectResponse("/login", status_code=303)


# --- the SDR queue ----------------------------------------------------------------------------------


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


@router.get("/review", response_class=HTMLResponse)
def queue_page(
    request: Request,
    queue: str | None = Query(None),
    intent: str | None = Query(None),
    lane: str | None = Query(None),
    mine: bool = Query(False),
    page: int = Query(1, ge=1, le=100_000),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    filters = {
        "queue": _choice(queue, _taxonomy(request).queues),
        "intent": _choice(intent, service.allowed_intents(session, _taxonomy(request))),
        "lane": _choice(lane, service.LANES),
    }
    result = service.list_queue(
        session,
        **filters,
        claimed_by=user.name if mine else None,
        now=_now(request),
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
        owner_first=None if user.is_ops else user.name,  # an SDR sees "My items" first
    )
    query = {key: value for key, value in filters.items() if value}
    if mine:
        query["mine"] = "1"
    pages = max(1, -(-result.total // PAGE_SIZE))
    context = {
        "page_obj": result,
        "filters": filters,
        "mine": mine,
        "page": page,
        "pages": pages,
        "prev_url": f"/review?{urlencode({**query, 'page': page - 1})}" if page > 1 else None,
        "next_url": f"/review?{urlencode({**query, 'page': page + 1})}" if page < pages else None,
        "queues": _taxonomy(request).queues,
        "intents": service.allowed_intents(session, _taxonomy(request)),
        "lanes": service.LANES,
        "loads": assignment.loads(session) if user.is_ops else [],  # the ops lead's load per SDR
    }
    return render(request, session, "queue.html", context, user=user)


def _taxonomy(request: Request) -> TaxonomyChoices:
    """The policy directory's intents and queues (re-read when taxonomy.yaml changes)."""
    return taxonomy_choices(Path(request.app.state.settings.policy_dir))


@router.get("/review/items/{item_id}", response_class=HTMLResponse)
def item_page(
    request: Request,
    item_id: ItemId,
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    try:
        view = service.item_view(session, item_id, now=_now(request))
    except service.ItemNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from error
    can_act = view.item.status == "open" or view.item.claimed_by == user.name or user.is_ops
    settings: Settings = request.app.state.settings
    context = {
        **_reply_context(request, session, view, settings, user=user),
        "view": view,
        "can_act": can_act,
        "users": [person.name for person in review_repo.list_users(session) if person.active],
        "queues": _taxonomy(request).queues,
        "intents": service.allowed_intents(session, _taxonomy(request)),
        "priorities": service.PRIORITIES,
    }
    return render(request, session, "item.html", context, user=user)


@router.post("/review/items/{item_id}/claim")
def claim_item(
    request: Request,
    item_id: ItemId,
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    try:
        claimed = service.claim(session, item_id, user=user.name, now=_now(request))
    except service.ItemNotFoundError as error:
        raise HTTPException(status_code=404, detail=str(error)) from error
    session.commit()
    if claimed:
        flash(request, "You claimed this enquiry.", "ok")
    else:
        holder = review_repo.get_item(session, item_id)
        who = holder.claimed_by if holder is not None and holder.claimed_by else "someone else"
        state = (
            "is done" if holder is not None and holder.status == "done" else f"is already claimed by {who}"
        )
        flash(request, f"Not claimed: this enquiry {state}.", "error")
    return _back_to_item(item_id)


@router.post("/review/items/{item_id}/accept")
def accept_item(
    request: Request,
    item_id: ItemId,
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    def action() -> None:
        service.accept(session, item_id, user=user.name, now=_now(request), override=user.is_ops)

    return _run_action(request, session, item_id, action, "Proposal accepted; the item is done.")


@router.post("/review/items/{item_id}/correct")
def correct_item(
    request: Request,
    item_id: ItemId,
    intent: str = Form(...),
    priority: str = Form(...),
    queue: str = Form(...),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    def action() -> None:
        service.correct(
            session,
            item_id,
            user=user.name,
            intent=intent,
            priority=priority,
            queue=queue,
            now=_now(request),
            override=user.is_ops,
            taxonomy=_taxonomy(request),
        )

    return _run_action(request, session, item_id, action, "Correction saved; it will teach the next model.")


@router.post("/review/items/{item_id}/reassign")
def reassign_item(
    request: Request,
    item_id: ItemId,
    to_user: str = Form(""),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    target = to_user.strip() or None

    def action() -> None:
        service.reassign(
            session, item_id, user=user.name, to_user=target, now=_now(request), override=user.is_ops
        )

    done = f"Reassigned to {target}." if target else "Released to the queue."
    return _run_action(request, session, item_id, action, done)


@router.post("/review/items/{item_id}/reroute")
def reroute_item(
    request: Request,
    item_id: ItemId,
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    """Route the item again by routing.yaml (someone other than its owner): the ops lead's re-balance."""
    from config.routing import load_routing
    from pipeline.routing import Router

    settings: Settings = request.app.state.settings
    try:
        owner = assignment.reroute(
            session, item_id, Router(load_routing(Path(settings.policy_dir))), by=user.name, now=_now(request)
        )
    except assignment.RerouteError as error:
        flash(request, str(error), "error")
        return _back_to_item(item_id)
    session.commit()
    flash(request, f"Routed again: now {owner}." if owner else "Routed again: held in the pool.")
    return _back_to_item(item_id)


def _reply_context(
    request: Request, session: Session, view: service.ItemView, settings: Settings, *, user: CurrentUser
) -> dict[str, Any]:
    """The reply panel: templates suiting the intent (one pre-filled when chosen), refusals, sent replies."""
    from pipeline.replies import refusal, reply_subject
    from review import reply_templates
    from store import reply_outbox

    outbound = settings.outbound
    try:
        available = reply_templates.load_templates(Path(settings.policy_dir))
    except ConfigError as error:
        logger.error("reply templates not loaded: %s", error)
        available = {}
    suiting = reply_templates.suiting(available, view.enquiry.intent)
    chosen = request.query_params.get("template")
    draft_subject, draft_body = reply_subject(view.enquiry), ""
    if chosen and chosen in {spec.name for spec in suiting}:
        rendered = reply_templates.render_for_item(session, view.item.id, available, chosen, owner=user.name)
        draft_subject, draft_body = rendered.subject, rendered.body
    return {
        "reply_templates": [spec.name for spec in suiting],
        "reply_template": chosen if draft_body else None,
        "reply_subject": draft_subject,
        "reply_body": draft_body,
        "reply_refusal": refusal(view.enquiry, team_domains=outbound.domains),
        "replies": reply_outbox.for_enquiry(session, view.enquiry.id),
    }


def _send_now(request: Request, session: Session, reply_id: int) -> str:
    """Drain this one reply right away; what to tell the person."""
    from connectors.smtp_outbound import SenderPool
    from pipeline.replies import drain_replies
    from store.db import make_session_factory
    from store.tables import ReplyOutbox

    settings: Settings = request.app.state.settings
    pool = SenderPool.for_mailboxes(settings.outbound, settings.all_mailboxes)
    if not pool.configured:
        return "Reply queued; no SMTP server is configured (TRIAGE_OUTBOUND__SMTP__HOST), so it waits."
    factory = make_session_factory(session.get_bind())  # type: ignore[arg-type]
    clock = getattr(request.app.state, "clock", utcnow)
    drain_replies(
        factory,
        pool(""),
        settings.outbound,
        clock=clock,
        only_ids=[reply_id],
        automated_counts=settings.sla.automated_reply_counts_as_first_response,
        sender_for=pool,
    )
    session.expire_all()
    row = session.get(ReplyOutbox, reply_id)
    if row is not None and row.status == "sent":
        return f"Reply sent to {row.to_address}; the first-response clock stopped."
    if row is not None and row.status == "failed":
        return f"Reply not sent: {row.last_error}"
    return f"Reply queued; it will be retried: {row.last_error if row else ''}"


@router.post("/review/items/{item_id}/reply")
def reply_item(
    request: Request,
    item_id: ItemId,
    text: str = Form("", max_length=service.MAX_TEXT_CHARS),
    subject: str = Form("", max_length=300),
    template: str = Form("", max_length=80),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    settings: Settings = request.app.state.settings
    try:
        reply_id = service.send_reply(
            session,
            item_id,
            user=user.name,
            text=text,
            subject=subject.strip() or None,
            template=template.strip() or None,
            outbound=settings.outbound,
            now=_now(request),
            override=user.is_ops,
        )
        session.commit()
    except service.ItemNotFoundError as error:
        session.rollback()
        raise HTTPException(status_code=404, detail=str(error)) from error
    except service.ReviewError as error:
        session.rollback()
        flash(request, str(error), "error")
        return _back_to_item(item_id)
    outcome = _send_now(request, session, reply_id)
    flash(request, outcome, "error" if outcome.startswith("Reply not sent") else "ok")
    return _back_to_item(item_id)


@router.post("/review/items/{item_id}/answered")
def answered_item(
    request: Request,
    item_id: int,
    reason: str = Form("", max_length=service.MAX_TEXT_CHARS),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    def action() -> None:
        if not reason.strip():
            raise service.ReviewError("say how the customer was answered")
        service.mark_replied(
            session,
            item_id,
            user=user.name,
            text=f"Answered elsewhere: {reason.strip()}",
            now=_now(request),
            override=user.is_ops,
        )

    return _run_action(
        request, session, item_id, action, "Recorded as answered; the first-response clock stopped."
    )


@router.post("/review/items/{item_id}/note")
def note_item(
    request: Request,
    item_id: ItemId,
    text: str = Form("", max_length=service.MAX_TEXT_CHARS),
    user: CurrentUser = Depends(current_user),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    def action() -> None:
        service.add_note(session, item_id, user=user.name, text=text, now=_now(request))

    return _run_action(request, session, item_id, action, "Note added.")


# --- the ops lead -----------------------------------------------------------------------------------


def _optional(module: str) -> Any:
    """A module another part of the product provides, or None while it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@router.get("/ops", include_in_schema=False)
def ops_home(user: CurrentUser = Depends(require_ops)) -> RedirectResponse:  # noqa: B008
    return RedirectResponse("/ops/sla", status_code=303)


@router.get("/ops/sla", response_class=HTMLResponse)
def ops_sla(
    request: Request,
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    now = _now(request)
    context = {
        "counts": review_repo.sla_counts(session, now=now),
        "breaches": review_repo.breached_timers(session, now=now),
        "now": now,
        "report_available": importlib.util.find_spec("sla.report") is not None,
        "report_days": REPORT_DAYS,
    }
    return render(request, session, "ops_sla.html", context, user=user)


REPORT_DAYS = (1, 7, 30)
# The breach report is one self-contained page with inline styles and SVG; it runs no script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


def _sla_policies(request: Request) -> Any:
    """The SLA policies (TRIAGE_POLICY_DIR/sla.yaml, else the defaults), loaded once per app."""
    policies = getattr(request.app.state, "sla_policies", None)
    if policies is None:
        from sla.policies import load_policies

        settings: Settings = request.app.state.settings
        zone = getattr(getattr(settings, "sla", None), "timezone", None)
        candidate = Path(settings.policy_dir) / "sla.yaml"
        policies = load_policies(candidate if candidate.exists() else None, timezone=zone)
        request.app.state.sla_policies = policies
    return policies


def _with_banner(html: str, paused: bool, reason: str | None) -> str:
    """Put the kill-switch banner at the top of a page rendered elsewhere (the breach report)."""
    if not paused:
        return html
    banner = templates.get_template("_killswitch.html").render(automation_reason=reason, inline_style=True)
    start = html.find("<body")
    end = html.find(">", start) + 1 if start >= 0 else 0
    return html[:end] + banner + html[end:]


@router.get("/ops/sla/report", response_class=HTMLResponse)
def ops_sla_report(
    request: Request,
    days: int = Query(7, ge=1, le=366),
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    """The ops lead's breach report from `sla.report`, for the last `days` days."""
    if importlib.util.find_spec("sla.report") is None:
        raise HTTPException(status_code=404, detail="The breach report is not installed.")
    from sla.report import build_report, render_html

    now = _now(request)
    data = build_report(session, _sla_policies(request), since=now - timedelta(days=days), until=now, now=now)
    paused, reason = flags.automation_paused(session)
    html = _with_banner(render_html(data), paused, reason)
    return HTMLResponse(html, headers={"content-security-policy": REPORT_CSP})


def _model_rows(session: Session) -> list[dict[str, Any]]:
    """Registered versions, newest first. Read through the store: `models.registry` imports scikit-learn,
    which costs seconds, and listing needs none of it."""
    fields = ("version", "status", "created_at", "approved_by", "promoted_at")
    repo = _optional("store.model_registry")
    if repo is not None:
        versions = repo.list_versions(session)
    else:
        versions = list(session.scalars(sa.select(ModelVersion).order_by(ModelVersion.created_at.desc())))
    return [{field: getattr(version, field, None) for field in fields} for version in versions]


def _comparison(session: Session, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    comparison = _optional("models.comparison")
    active = next((row["version"] for row in rows if row["status"] == "active"), None)
    shadow = next((row["version"] for row in rows if row["status"] == "shadow"), None)
    if comparison is None or not active or not shadow:
        return None
    result: dict[str, Any] = comparison.compare(session, active=active, shadow=shadow)
    return result


def _registry_installed() -> bool:
    return importlib.util.find_spec("models.registry") is not None


@router.get("/ops/models", response_class=HTMLResponse)
def ops_models(
    request: Request,
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    from models import live_precision

    rows = _model_rows(session)
    context = {
        "versions": rows,
        "comparison": _comparison(session, rows),
        "can_promote": _registry_installed(),
        "shadow_live": live_precision.shadow_precision(session),
    }
    return render(request, session, "ops_models.html", context, user=user)


@router.post("/ops/models/promote")
def ops_promote(
    request: Request,
    version: str = Form(..., max_length=64),
    confirm: str = Form(""),
    allow_unmapped: str = Form(""),
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    registry = _optional("models.registry")
    if registry is None or not hasattr(registry, "promote"):
        raise HTTPException(status_code=404, detail="The model registry is not installed.")
    if confirm != "yes":
        flash(request, "Tick the box to confirm you reviewed the shadow comparison.", "error")
        return RedirectResponse("/ops/models", status_code=303)
    try:
        registry.promote(
            session,
            version,
            approved_by=user.name,
            home=request.app.state.settings.home,
            taxonomy_intents=_taxonomy(request).intents,
            allow_unmapped=allow_unmapped == "yes",
        )
        session.commit()
    except Exception as error:  # the registry's own errors say what is wrong; show them, keep the page
        session.rollback()
        logger.warning("promotion of %s refused: %s", version, error)
        flash(request, f"Not promoted: {error}", "error")
    else:
        logger.info("model %s promoted by %s", version, user.name)
        flash(request, f"Model {version} promoted; signed off by {user.name}.", "ok")
    return RedirectResponse("/ops/models", status_code=303)


@router.get("/ops/automation", response_class=HTMLResponse)
def ops_automation(
    request: Request,
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> HTMLResponse:
    from models import live_precision

    report = live_precision.monitor_report(session)
    return render(request, session, "ops_automation.html", {"live": report}, user=user)


@router.post("/ops/automation/tasks/resume")
def ops_resume_task(
    request: Request,
    task: str = Form(..., max_length=80),
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    """Resume a task the live precision monitor paused (models.live_precision); signed by the user."""
    from models import live_precision

    try:
        live_precision.resume_task(session, task, by=user.name, now=_now(request))
        session.commit()
    except TriageError as error:
        session.rollback()
        flash(request, f"Not resumed: {error}", "error")
    else:
        logger.warning("automation of task %s resumed by %s", task, user.name)
        flash(request, f"Automation of task {task} resumed.", "ok")
    return RedirectResponse("/ops/automation", status_code=303)


@router.post("/ops/automation")
def ops_set_automation(
    request: Request,
    action: str = Form(...),
    reason: str = Form("", max_length=500),
    user: CurrentUser = Depends(require_ops),  # noqa: B008
    session: Session = Depends(db_session),  # noqa: B008
) -> Response:
    reason = reason.strip()
    if action not in ("pause", "resume"):
        raise HTTPException(status_code=400, detail="action must be pause or resume")
    if action == "pause" and not reason:
        flash(request, "Say why automation is paused: everyone sees the reason.", "error")
        return RedirectResponse("/ops/automation", status_code=303)
    flags.set_automation_paused(session, action == "pause", reason=reason or "resumed", by=user.name)
    session.commit()
    logger.warning("automation %s by %s: %s", "paused" if action == "pause" else "resumed", user.name, reason)
    flash(
        request,
        "Automation paused: everything goes to people." if action == "pause" else "Automation resumed.",
        "ok",
    )
    return RedirectResponse("/ops/automation", status_code=303)


# --- wiring -----------------------------------------------------------------------------------------


def _kill_switch(factory: Callable[[], Session]) -> tuple[bool, str | None]:
    with factory() as session:
        return flags.automation_paused(session)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the review pages to `app`: session cookies, static files, routes and error pages."""
    auth.configure_hashing(settings.web.max_concurrent_hashes)
    app.add_middleware(
        SessionMiddleware,
        secret_key=auth.load_secret_key(settings),
        session_cookie="triage_session",
        max_age=int(settings.web.session_max_hours * 3600),
        same_site="lax",
        https_only=settings.web.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.exception_handler(auth.LoginRequiredError)
    async def _to_login(request: Request, _error: auth.LoginRequiredError) -> Response:
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return HTMLResponse("Log in first.", status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def _error_page(request: Request, error: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/hooks", "/healthz", "/metrics", "/static")):
            return await http_exception_handler(request, error)  # machines get FastAPI's JSON errors
        paused, reason = False, None
        try:
            paused, reason = await run_in_threadpool(_kill_switch, request.app.state.session_factory)
        except SQLAlchemyError:  # an error page must render even when the database is the problem
            logger.exception("could not read the kill switch for an error page")
        context = {
            "status": error.status_code,
            "detail": error.detail,
            "user": None,
            "automation_paused": paused,
            "automation_reason": reason,
            "messages": [],
        }
        return templates.TemplateResponse(request, "error.html", context, status_code=error.status_code)
