"""The web app under attack: login throttling, bounded hashing, body caps, server-side sessions,
security headers and the plain-HTTP login message (issue 16, section 4)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.commands.review import users_app
from app.web import create_app
from config.settings import Settings, WebSettings
from review import auth
from store.tables import WebSession
from tests.review.review_builders import NOW, PASSWORD, add_enquiry_with_item, add_users, csrf_token


class MovableClock:
    """A clock the test moves forward by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock(NOW)


@pytest.fixture
def client(
    settings: Settings, session_factory: sessionmaker[Session], clock: MovableClock
) -> Iterator[TestClient]:
    with session_factory() as session:
        add_users(session)
        session.commit()
    app = create_app(settings, clock=clock)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def _try_login(client: TestClient, name: str, password: str) -> tuple[int, int]:
    """One login attempt: (status code, Retry-After seconds or 0)."""
    token = csrf_token(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    return response.status_code, int(response.headers.get("retry-after", "0"))


def _login(client: TestClient, name: str = "sam") -> str:
    status, _ = _try_login(client, name, PASSWORD)
    assert status == 303
    return csrf_token(client.get("/review").text)


# --- throttling -------------------------------------------------------------------------------------


def test_wrong_passwords_wait_ever_longer_and_the_right_one_works_after_the_delay(
    client: TestClient, clock: MovableClock, session_factory: sessionmaker[Session]
) -> None:
    waits = []
    for _ in range(20):
        status, wait = _try_login(client, "sam", "wrong-password")
        assert status == 401
        waits.append(wait)
        # Trying again before the wait is over is refused without checking the password.
        if wait:
            assert _try_login(client, "sam", "wrong-password")[0] == 429
        clock.advance(seconds=wait)
    assert waits[:2] == [0, 0] and waits[2] == 1
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    assert waits[-1] == 900 and len(set(waits)) > 8  # doubling, then capped: never a lockout
    # The right password during the delay is refused too (429), then works once the delay has passed.
    status, wait = _try_login(client, "sam", "wrong-password")
    assert status == 401 and wait == 900
    assert _try_login(client, "sam", PASSWORD)[0] == 429
    clock.advance(seconds=900)
    assert _try_login(client, "sam", PASSWORD)[0] == 303
    # Success clears the account's failures: from another address, its next typo costs no wait.
    with session_factory() as session:
        policy = auth.ThrottlePolicy()
        assert auth.record_failure(session, "sam", "192.0.2.9", now=clock.now, policy=policy) == 0


def test_one_address_trying_many_accounts_is_slowed_too(client: TestClient, clock: MovableClock) -> None:
    waits = [_try_login(client, f"nobody{number}", "guess") for number in range(20)]
    assert waits[:19] == [(401, 0)] * 19  # an office behind one address has room for typos
    status, wait = waits[19]
    assert status == 401 and wait == 1
    assert _try_login(client, "sue", PASSWORD)[0] == 429  # another account, same address: waits
    clock.advance(seconds=wait)
    assert _try_login(client, "sue", PASSWORD)[0] == 303


def test_password_hashing_runs_at_most_the_configured_number_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth.configure_hashing(2)
    running = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    class SlowHasher:
        def verify(self, _hash: str, _password: str) -> bool:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            release.wait(timeout=5)
            with lock:
                running -= 1
            return False

    monkeypatch.setattr(auth, "_hasher", SlowHasher())

    def one_login() -> None:
        with auth.hashing_slot():
            auth.verify_password("hash", "password")

    threads = [threading.Thread(target=one_login) for _ in range(8)]
    for thread in threads:
        thread.start()
    # While two hashes are running, a ninth login finds no slot and is told the server is busy.
    with pytest.raises(auth.HashingBusyError):
        while True:
            with auth.hashing_slot(timeout=0):  # a try, not a timed wait (libfaketime stalls those)
                pass
    release.set()
    for thread in threads:
        thread.join()
    assert most == 2


# --- body caps --------------------------------------------------------------------------------------


def test_bodies_over_the_cap_are_refused_before_they_are_read(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    big = "x" * 20_000
    refused = client.post("/login", data={"username": "sam", "password": big, "csrf_token": big})
    assert refused.status_code == 413
    assert refused.headers["x-content-type-options"] == "nosniff"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is counted
        for _ in range(40):
            yield b"a" * 1024

    streamed = client.post(
        "/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert streamed.status_code == 413

    token = _login(client)
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
    note = client.post(
        f"/review/items/{item_id}/note", data={"csrf_token": token, "text": "y" * (2 * 1024 * 1024)}
    )
    assert note.status_code == 413
    small = client.post(f"/review/items/{item_id}/note", data={"csrf_token": token, "text": "fine"})
    assert small.status_code == 200 and "Note added" in small.text


# --- sessions ---------------------------------------------------------------------------------------


def test_logout_ends_the_session_on_the_server(client: TestClient) -> None:
    _login(client)
    stolen = dict(client.cookies)
    client.post("/logout", data={"csrf_token": csrf_token(client.get("/review").text)})
    client.cookies.clear()
    client.cookies.update(stolen)  # the cookie as it was before logout
    response = client.get("/review", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_password_change_and_disabling_end_sessions_at_once(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", str(settings.database_url))
    runner = CliRunner()
    _login(client)
    assert client.get("/review", follow_redirects=False).status_code == 200
    result = runner.invoke(users_app, ["passwd", "sam", "--password", "a whole new password"])
    assert result.exit_code == 0, result.output
    assert client.get("/review", follow_redirects=False).status_code == 303
    assert _try_login(client, "sam", PASSWORD)[0] == 401
    assert _try_login(client, "sam", "a whole new password")[0] == 303

    client.cookies.clear()
    _login(client, "sue")
    assert client.get("/review", follow_redirects=False).status_code == 200
    assert runner.invoke(users_app, ["disable", "sue"]).exit_code == 0
    assert client.get("/review", follow_redirects=False).status_code == 303
    assert _try_login(client, "sue", PASSWORD)[0] == 401
    assert runner.invoke(users_app, ["enable", "sue"]).exit_code == 0
    assert runner.invoke(users_app, ["disable", "nobody"]).exit_code == 1


def test_sessions_have_an_idle_and_an_absolute_lifetime(client: TestClient, clock: MovableClock) -> None:
    _login(client)
    clock.advance(minutes=29)
    assert client.get("/review", follow_redirects=False).status_code == 200
    clock.advance(minutes=31)
    assert client.get("/review", follow_redirects=False).status_code == 303  # idle for 31 minutes

    _login(client)
    for _ in range(36):  # busy all day: used every 20 minutes, for 12 hours
        clock.advance(minutes=20)
        assert client.get("/review", follow_redirects=False).status_code == 200
    clock.advance(minutes=20)
    assert client.get("/review", follow_redirects=False).status_code == 303  # past 12 h since login


def test_abandoned_sessions_are_deleted_at_the_next_login(
    client: TestClient, clock: MovableClock, session_factory: sessionmaker[Session]
) -> None:
    _login(client)
    client.cookies.clear()  # the browser went away without logging out
    clock.advance(minutes=31)
    _login(client, "sue")
    with session_factory() as session:
        assert session.scalars(sa.select(WebSession.user_name)).all() == ["sue"]


# --- headers and plain HTTP -------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/login", "/review", "/healthz", "/static/review.css", "/no-such-page"):
        headers = client.get(path, follow_redirects=False).headers
        for name in (
            "content-security-policy",
            "x-content-type-options",
            "referrer-policy",
            "x-frame-options",
            "cross-origin-opener-policy",
            "permissions-policy",
        ):
            assert name in headers, (path, name)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "strict-transport-security" not in headers  # plain HTTP: no HSTS
    assert client.get("/login", headers={"x-forwarded-proto": "https"}).status_code == 200
    https = TestClient(client.app, base_url="https://triage.example.com")
    assert https.get("/login").headers["strict-transport-security"].startswith("max-age=")


def test_login_over_plain_http_on_a_real_host_says_the_cookie_needs_https(
    db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        add_users(session)
        session.commit()
    secure = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        web=WebSettings(secret_key=SecretStr("test-secret-key-0123456789"), secure_cookies=True),
    )
    app = create_app(secure)
    with TestClient(app, base_url="http://triage.example.com") as remote:
        page = remote.get("/login")
        assert "https://" in page.text and "TRIAGE_WEB__SECURE_COOKIES" in page.text
        # The browser dropped the Secure cookie, so the post arrives without a session.
        remote.cookies.clear()
        refused = remote.post(
            "/login", data={"username": "sam", "password": PASSWORD, "csrf_token": csrf_token(page.text)}
        )
        assert refused.status_code == 403 and "only sent over HTTPS" in refused.text
        assert "missing its security token" not in refused.text
    with TestClient(app, base_url="http://127.0.0.1:8000") as local:
        assert "only sent over HTTPS" not in local.get("/login").text
    app.state.engine.dispose()
