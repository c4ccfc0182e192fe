"""Accounts, login sessions, CSRF tokens and roles for the review pages.

Passwords are hashed with argon2id (argon2-cffi). The session is a signed cookie (Starlette's
SessionMiddleware: HttpOnly, SameSite=Lax, Secure unless `TRIAGE_WEB__SECURE_COOKIES=false`) holding the
user name, a fingerprint of the password hash (changing a password ends old sessions) and the CSRF token.
Every POST must carry that token in a `csrf_token` form field.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from config.settings import Settings
from models.errors import ConfigError, TriageError
from store import review_repo
from store.common import utcnow
from store.tables import User

ROLES = ("sdr", "ops_lead", "admin")
OPS_ROLES = ("ops_lead", "admin")
MIN_PASSWORD_CHARS = 8
SESSION_MAX_AGE_SECONDS = 12 * 3600
CSRF_FIELD = "csrf_token"

# argon2-cffi's default profile (RFC 9106 low-memory: t=3, m=64 MiB, p=4).
_hasher = PasswordHasher()


class AccountError(TriageError):
    """A user cannot be created as asked; the message says why."""


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

    Keeping the generated key on disk means a restart does not log everybody out.
    """
    if settings.web.secret_key is not None:
        return settings.web.secret_key.get_secret_value()
    if settings.environment == "production":
        raise ConfigError("TRIAGE_WEB__SECRET_KEY must be set in production")
    path = Path(settings.home) / "secret_key"
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key)
    return key


def _fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def start_session(request: Request, user: User) -> None:
    """Log `user` in: a fresh session (no state carried over from before login) and a new CSRF token."""
    request.session.clear()
    request.session.update(
        {"user": user.name, "pw": _fingerprint(user.password_hash), CSRF_FIELD: secrets.token_urlsafe(32)}
    )


def end_session(request: Request) -> None:
    request.session.clear()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (the login form needs one before anyone logs in)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


async def check_csrf(request: Request) -> None:
    """Refuse (403) any POST whose `csrf_token` form field does not match the session's token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = request.session.get(CSRF_FIELD)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise HTTPException(
            status_code=403, detail="The form was missing its security token. Reload the page."
        )


def db_session(request: Request) -> Iterator[Session]:
    """A database session for one request; routes commit what they change."""
    with request.app.state.session_factory() as session:
        yield session


def current_user(request: Request, session: Session = Depends(db_session)) -> CurrentUser:  # noqa: B008
    """The logged-in, still active user whose password has not changed since login."""
    name = request.session.get("user")
    if not isinstance(name, str):
        raise LoginRequiredError
    user = review_repo.get_user(session, name)
    if user is None or not user.active or request.session.get("pw") != _fingerprint(user.password_hash):
        request.session.clear()
        raise LoginRequiredError
    return CurrentUser(name=user.name, role=user.role)


def require_ops(user: CurrentUser = Depends(current_user)) -> CurrentUser:  # noqa: B008
    """Ops lead or admin, else 403."""
    if not user.is_ops:
        raise HTTPException(status_code=403, detail="This page is for the ops lead.")
    return user
