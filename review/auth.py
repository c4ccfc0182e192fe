"""Accounts, login sessions, the login throttle, CSRF tokens and roles for the review pages.

Passwords are hashed with argon2id (argon2-cffi); at most `web.max_concurrent_hashes` logins hash at
once per process (`hashing_slot`), since each hash takes 64 MiB. Sessions live in the database
(`web_sessions`): the signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=Lax, Secure
unless `TRIAGE_WEB__SECURE_COOKIES=false`) carries a random token and the CSRF token; the table holds the
token's SHA-256. Logout deletes the row, a password change or disabling the user deletes all the user's
rows, and a session ends after `web.session_idle_minutes` unused or `web.session_max_hours` after login.
Failed logins are throttled per account and per client address with an exponential delay that is capped
(`web.login_max_delay_seconds`), so nobody is locked out for good: once the delay has passed, the right
password works. Every POST must carry the CSRF token in a `csrf_token` form field.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from config.settings import Settings, make_private_dir, secret_strength_problem
from models.errors import ConfigError, TriageError
from store import review_repo, web_sessions
from store.common import Clock, utcnow
from store.tables import User

ROLES = ("sdr", "ops_lead", "admin")
OPS_ROLES = ("ops_lead", "admin")
MIN_PASSWORD_CHARS = 8
CSRF_FIELD = "csrf_token"
SESSION_FIELD = "sid"
# A session's last use is written at most this often (not on every request).
TOUCH_EVERY = timedelta(seconds=60)
# Failures of an account or address are forgotten after this long without another one.
FORGET_FAILURES_AFTER = timedelta(hours=24)
# How long a login waits for a free hashing slot before the server says it is busy.
HASH_WAIT_SECONDS = 10.0

# argon2-cffi's default profile (RFC 9106 low-memory: t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()


_hash_slots = threading.BoundedSemaphore(2)


class AccountError(TriageError):
    """A user cannot be created as asked; the message says why."""


class HashingBusyError(TriageError):
    """Every password-hashing slot stayed busy for `HASH_WAIT_SECONDS`: the login should be retried."""


def configure_hashing(limit: int) -> None:
    """Allow `limit` password hashes at once in this process (`web.max_concurrent_hashes`)."""
    global _hash_slots
    _hash_slots = threading.BoundedSemaphore(limit)


@contextmanager
def hashing_slot(timeout: float = HASH_WAIT_SECONDS) -> Iterator[None]:
    """Hold one of the process's password-hashing slots, waiting at most `timeout` seconds for it."""
    slots = _hash_slots
    if not slots.acquire(timeout=timeout):
        raise HashingBusyError("too many logins at once; try again in a few seconds")
    try:
        yield
    finally:
        slots.release()


@dataclass(frozen=True)
class CurrentUser:
    """The person behind a request."""

    name: str
    role: str

    @property
    def is_ops(self) -> bool:
        """Ops leads and admins see the ops pages and may act on items others hold."""
        return self.role in OPS_ROLES


class LoginRequiredError(Exception):
    """Raised by `current_user` when nobody is logged in; the app turns it into a redirect to /login."""


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches the hash (never raises on a malformed hash)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, name: str, *, role: str, password: str) -> User:
    """Add an account. Names are 1-100 visible characters without spaces; passwords at least 8 characters."""
    name = name.strip()
    if not name or len(name) > 100 or any(ch.isspace() for ch in name) or not name.isprintable():
        raise AccountError("a user name is 1-100 characters without spaces")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if review_repo.get_user(session, name) is not None:
        raise AccountError(f"a user named {name!r} already exists")
    return review_repo.add_user(
        session, name=name, role=role, password_hash=hash_password(password), now=utcnow()
    )


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The active user with this name and password, or None."""
    user = review_repo.get_user(session, name.strip())
    if user is None or not user.active:
        # Same work as a wrong password, so response times do not reveal which names exist.
        verify_password(_dummy_hash(), password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.flush()
    return user


def load_secret_key(settings: Settings) -> str:
    """The key that signs session cookies: from settings, else `<home>/secret_key` (made once, mode 0600).

    Keeping the generated key on disk means a restart does not log everybody out. Production needs a
    configured key that passes `secret_strength_problem`.
    """
    if settings.web.secret_key is not None:
        key = settings.web.secret_key.get_secret_value()
        problem = secret_strength_problem(key) if settings.environment == "production" else None
        if problem:
            raise ConfigError(f"TRIAGE_WEB__SECRET_KEY {problem}")
        return key
    if settings.environment == "production":
        raise ConfigError("TRIAGE_WEB__SECRET_KEY must be set in production")
    path = Path(settings.home) / "secret_key"
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    make_private_dir(path.parent)
    key = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key)
    return key


# --- the login throttle -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """How failed logins slow the next try: free failures, then 1 s doubling per failure, capped."""

    account_free: int = 3
    address_free: int = 20
    max_delay_seconds: float = 900.0
    first_delay_seconds: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        web = settings.web
        return cls(
            account_free=web.login_free_failures,
            address_free=web.address_free_failures,
            max_delay_seconds=web.login_max_delay_seconds,
        )

    def delay(self, failures: int, free: int) -> float:
        """Seconds the next try waits after `failures` failures in a row (0 while under `free`)."""
        if failures < free:
            return 0.0
        exponent = min(failures - free, 60)
        return float(min(self.max_delay_seconds, self.first_delay_seconds * 2**exponent))


def _account_key(name: str) -> str:
    return ("user:" + name.strip().casefold())[:200]


def _address_key(address: str) -> str:
    """One key per IPv4 address, one per IPv6 /64 (a host holds the whole /64)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return ("addr:" + address)[:200]
    if parsed.version == 6:
        return f"addr:{ipaddress.ip_network(f'{parsed}/64', strict=False)}"
    return f"addr:{parsed}"


def login_wait(session: Session, name: str, address: str, *, now: datetime) -> float:
    """Seconds before this account may try from this address again (0: it may try now)."""
    rows = web_sessions.throttle_rows(session, [_account_key(name), _address_key(address)])
    waits = [(row.next_allowed_at - now).total_seconds() for row in rows.values()]
    return max([0.0, *waits])


def record_failure(
    session: Session, name: str, address: str, *, now: datetime, policy: ThrottlePolicy
) -> float:
    """Count a failed login for the account and the address; returns the wait now imposed (seconds)."""
    wait = 0.0
    keys = ((_account_key(name), policy.account_free), (_address_key(address), policy.address_free))
    for key, free in keys:
        row = web_sessions.locked_throttle_row(session, key, now=now)
        if now - row.last_failure_at > FORGET_FAILURES_AFTER:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        delay = policy.delay(row.failures, free)
        row.next_allowed_at = now + timedelta(seconds=delay)
        wait = max(wait, delay)
    session.flush()
    return wait


def forget_stale(session: Session, settings: Settings, *, now: datetime) -> None:
    """Housekeeping at each login: drop sessions past their lifetimes and throttle rows long quiet."""
    web_sessions.delete_stale_sessions(
        session,
        idle_before=now - timedelta(minutes=settings.web.session_idle_minutes),
        created_before=now - timedelta(hours=settings.web.session_max_hours),
    )
    web_sessions.delete_quiet_throttle_rows(session, before=now - FORGET_FAILURES_AFTER)


def record_success(session: Session, name: str) -> None:
    """A right password clears the account's failures (the address keeps its own until they age)."""
    web_sessions.clear_throttle(session, _account_key(name))


# --- sessions ---------------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(request: Request, session: Session, user: User, *, now: datetime) -> None:
    """Log `user` in: a new server-side session (nothing carried over from before login), a new CSRF
    token. The caller commits."""
    request.session.clear()
    token = secrets.token_urlsafe(32)
    web_sessions.add_session(session, token_hash=_token_hash(token), user_name=user.name, now=now)
    request.session.update({SESSION_FIELD: token, CSRF_FIELD: secrets.token_urlsafe(32)})


def end_session(request: Request, session: Session) -> None:
    """Log out: the session's row is deleted, so a copy of the cookie is worthless. The caller commits."""
    token = request.session.get(SESSION_FIELD)
    if isinstance(token, str):
        web_sessions.delete_session(session, _token_hash(token))
    request.session.clear()


def end_user_sessions(session: Session, name: str) -> int:
    """End every session of `name` (the caller commits); returns how many there were."""
    return web_sessions.delete_user_sessions(session, name)


def change_password(session: Session, name: str, password: str) -> User:
    """Set a new password and end the user's sessions everywhere (the caller commits)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    user = review_repo.get_user(session, name)
    if user is None:
        raise AccountError(f"no user named {name!r}")
    user.password_hash = hash_password(password)
    end_user_sessions(session, user.name)
    session.flush()
    return user


def set_active(session: Session, name: str, active: bool) -> User:
    """Enable or disable an account; disabling ends its sessions at once (the caller commits)."""
    user = review_repo.get_user(session, name)
    if user is None:
        raise AccountError(f"no user named {name!r}")
    user.active = active
    if not active:
        end_user_sessions(session, user.name)
    session.flush()
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (the login form needs one before anyone logs in)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def is_loopback(host: str | None) -> bool:
    """Whether `host` (a name or an address) is this machine."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cookie_needs_https(request: Request) -> bool:
    """True when the browser cannot have kept our cookie: Secure cookies, a plain-HTTP page, and a host
    other than this machine (browsers keep Secure cookies over http only on localhost)."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    secure = settings.web.secure_cookies if settings is not None else True
    return secure and request.url.scheme == "http" and not is_loopback(request.url.hostname)


HTTPS_NEEDED = (
    "This site must be opened over https:// — the login cookie is only sent over HTTPS, so the browser "
    "dropped it. Use the https:// address, or for a trusted plain-HTTP test network set "
    "TRIAGE_WEB__SECURE_COOKIES=false."
)


async def check_csrf(request: Request) -> None:
    """Refuse (403) any POST whose `csrf_token` form field does not match the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = request.session.get(CSRF_FIELD)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        if not isinstance(expected, str) and cookie_needs_https(request):
            raise HTTPException(status_code=403, detail=HTTPS_NEEDED)
        raise HTTPException(
            status_code=403, detail="The form was missing its security token. Reload the page."
        )


def db_session(request: Request) -> Iterator[Session]:
    """A database session for one request; routes commit what they change."""
    with request.app.state.session_factory() as session:
        yield session


def _request_now(request: Request) -> datetime:
    clock: Clock = getattr(request.app.state, "clock", utcnow)
    return clock()


def current_user(request: Request, session: Session = Depends(db_session)) -> CurrentUser:  # noqa: B008
    """The user of a live server-side session: not logged out, not idle or too old, still active."""
    token = request.session.get(SESSION_FIELD)
    if not isinstance(token, str):
        raise LoginRequiredError
    token_hash = _token_hash(token)
    row = web_sessions.get_session(session, token_hash)
    settings: Settings = request.app.state.settings
    now = _request_now(request)
    user = review_repo.get_user(session, row.user_name) if row is not None else None
    if (
        row is None
        or user is None
        or not user.active
        or now - row.last_seen_at > timedelta(minutes=settings.web.session_idle_minutes)
        or now - row.created_at > timedelta(hours=settings.web.session_max_hours)
    ):
        if row is not None:
            web_sessions.delete_session(session, token_hash)
            session.commit()
        request.session.clear()
        raise LoginRequiredError
    if now - row.last_seen_at >= TOUCH_EVERY:
        web_sessions.touch_session(session, token_hash, now=now)
        session.commit()
    return CurrentUser(name=user.name, role=user.role)


def require_ops(user: CurrentUser = Depends(current_user)) -> CurrentUser:  # noqa: B008
    """Ops lead or admin, else 403."""
    if not user.is_ops:
        raise HTTPException(status_code=403, detail="This page is for the ops lead.")
    return user
