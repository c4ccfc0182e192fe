"""The web application: review pages, web hooks and a health check, in one FastAPI app.

`triage serve` runs it with uvicorn (`serve(settings)`). Nothing here imports Prefect: the web app must
start fast and stay small.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from review import web as review_web
from store.common import Clock, utcnow
from store.db import make_engine, make_session_factory
from store.deliveries import DeliveryWriter

logger = logging.getLogger(__name__)

# Routers other parts of the product provide: web hooks (/hooks/...) and Prometheus metrics (/metrics).
OPTIONAL_ROUTERS = ("app.hooks", "app.metrics")

# Enquiry text is untrusted: besides escaping, the browser is told to run no inline script at all.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
# Sent over HTTPS only (a browser ignores it over plain HTTP, and it must not pin a test host).
HSTS = "max-age=31536000"


class SecurityHeadersMiddleware:
    """Adds the security headers to every response, and `no-store` to pages (they show personal data).

    A route that sets one of these headers itself (the breach report's own CSP) keeps its value.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = str(scope.get("path", "")).startswith("/static/")
        is_https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(SECURITY_HEADERS)
                if not is_static:
                    extra["cache-control"] = "no-store"
                if is_https:
                    extra["strict-transport-security"] = HSTS
                for name, value in extra.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLargeError(StarletteHTTPException):
    """A request body went over its cap while it was being read (an HTTP 413 wherever it surfaces)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="The request body is too large.")


class BodyLimitMiddleware:
    """Caps every request body before the app reads it: a declared Content-Length over the cap is
    refused with 413 at once, and a streamed (chunked) body is cut off as soon as it passes the cap.

    `limit_for(path)` gives the cap per path (the anonymous /login gets a small one).
    """

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, 400, b"bad Content-Length")
                    return
                if declared > limit:
                    await _too_large(send, 413, b"request body too large")
                    return
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await _too_large(send, 413, b"request body too large")


async def _too_large(send: Send, status: int, text: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": text})


def body_limits(settings: Settings) -> Callable[[str], int]:
    """The body cap of each path: /login small, web hooks their own cap, everything else web's cap."""
    login = settings.web.login_max_body_bytes
    hooks = max(settings.hooks.max_body_bytes, settings.web.max_body_bytes)
    default = settings.web.max_body_bytes

    def limit_for(path: str) -> int:
        if path == "/login":
            return login
        if path.startswith("/hooks/"):
            return hooks
        return default

    return limit_for


def refresh_sqlite_statistics(engine: sa.Engine) -> None:
    """Give SQLite's planner table statistics (bounded ANALYZE); without them it joins in the slow order.

    With 10,000 open items the intent filter takes ~200 ms without statistics and ~20 ms with them.
    PostgreSQL's autovacuum keeps its own statistics, so this is SQLite only.
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("PRAGMA analysis_limit=1000")
            connection.exec_driver_sql("ANALYZE")
    except sa.exc.SQLAlchemyError as error:  # a busy database must not stop the web app starting
        logger.warning("could not refresh SQLite statistics: %s", error)


def create_app(settings: Settings | None = None, *, clock: Clock = utcnow) -> FastAPI:
    """Assemble the app: review pages and static files, the hooks and metrics routers, `/healthz`.

    The schema must already be migrated (`triage db upgrade`); the app never changes it. `clock` is
    what the app's time-dependent figures read (tests set it).
    """
    settings = settings or Settings()
    if settings.database_url is None:
        settings.ensure_home()
    engine = make_engine(settings.effective_database_url)
    refresh_sqlite_statistics(engine)
    app = FastAPI(title="enquiry-triage", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.delivery_writer = DeliveryWriter(app.state.session_factory)
    app.state.clock = clock

    review_web.install(app, settings)
    for module_name in OPTIONAL_ROUTERS:
        try:
            module: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise  # the module exists but is broken: say so loudly
            logger.info("%s is not installed: its routes are not served", module_name)
        else:
            app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz(request: Request) -> JSONResponse:
        try:
            with request.app.state.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as error:
            return JSONResponse({"status": "error", "database": error.__class__.__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limits(settings))
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def serve(settings: Settings | None = None, *, workers: int = 1) -> None:
    """Run the app with uvicorn on `settings.web.host:port` (what `triage serve` calls)."""
    import uvicorn

    settings = settings or Settings()
    if workers > 1:
        # Several processes need an import string; each builds its app from the environment.
        uvicorn.run(
            "app.web:create_app",
            factory=True,
            host=settings.web.host,
            port=settings.web.port,
            workers=workers,
            proxy_headers=True,
        )
        return
    uvicorn.run(create_app(settings), host=settings.web.host, port=settings.web.port, proxy_headers=True)
