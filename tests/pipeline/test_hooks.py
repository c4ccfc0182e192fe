"""Web hooks over HTTP: signatures, validation, size caps, duplicates, and what reaches the pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.hooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from app.web import create_app
from config.settings import HooksSettings, Settings
from connectors.webhooks.base import hmac_hex
from store.db import make_engine, make_session_factory, upgrade_schema
from store.tables import RawRecord
from tests.builders import chat_json, form_json

FORM_SECRET = "form-secret-for-tests"
CHAT_SECRET = "chat-secret-for-tests"
# The app's clock: any day works, the signatures are made for it.
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    upgrade_schema(make_engine(db_url))
    return Settings(
        home=tmp_path,
        database_url=db_url,
        hooks=HooksSettings(
            secrets={"form:contact": SecretStr(FORM_SECRET), "chat:webchat": SecretStr(CHAT_SECRET)},
            max_body_bytes=4096,
        ),
        web={"secure_cookies": False},  # type: ignore[arg-type]
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=lambda: NOW)) as test_client:
        yield test_client


def post(
    client: TestClient,
    path: str,
    body: bytes,
    secret: str,
    content_type: str = "application/json",
    at: datetime = NOW,
) -> object:
    return client.post(
        path, content=body, headers={"content-type": content_type, **signed_headers(secret, body, at)}
    )


def raw_rows(settings: Settings) -> list[RawRecord]:
    factory = make_session_factory(make_engine(settings.effective_database_url))
    with factory() as session:
        return list(session.scalars(sa.select(RawRecord).order_by(RawRecord.id)))


def test_form_post_is_stored_once_and_answers_202(client: TestClient, settings: Settings) -> None:
    body = form_json(submission_id="s-1")
    first = post(client, "/hooks/forms/contact", body, FORM_SECRET)
    again = post(client, "/hooks/forms/contact", body, FORM_SECRET)
    assert first.status_code == again.status_code == 202  # type: ignore[attr-defined]
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True  # type: ignore[attr-defined]
    rows = raw_rows(settings)
    assert [(r.source, r.external_key, r.channel) for r in rows] == [("hook:form:contact", "s-1", "form")]
    assert json.loads(rows[0].payload)["form_id"] == "contact"


def test_urlencoded_form_post(client: TestClient, settings: Settings) -> None:
    body = urlencode(
        {"email": "kim@example.org", "message": "Please call me back about pricing", "website": ""}
    ).encode()
    response = post(client, "/hooks/forms/contact", body, FORM_SECRET, "application/x-www-form-urlencoded")
    assert response.status_code == 202  # type: ignore[attr-defined]
    assert json.loads(raw_rows(settings)[0].payload)["email"] == "kim@example.org"


def test_bad_or_missing_signature_is_401(client: TestClient, settings: Settings) -> None:
    body = form_json()
    wrong = client.post("/hooks/forms/contact", content=body, headers=signed_headers("guess", body, NOW))
    missing = client.post("/hooks/forms/contact", content=body)
    stamp = str(int(NOW.timestamp()))
    # The old body-only signature, which did not cover the timestamp, is refused.
    body_only = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "sha256=" + hmac_hex(FORM_SECRET, body)}
    unstamped = client.post("/hooks/forms/contact", content=body, headers=body_only)
    assert wrong.status_code == missing.status_code == unstamped.status_code == 401
    assert TIMESTAMP_HEADER in missing.json()["detail"]
    assert raw_rows(settings) == []


def test_stale_or_replayed_signature_is_401_and_stored_nowhere(
    client: TestClient, settings: Settings
) -> None:
    body = form_json(submission_id="s-2")
    stale = post(client, "/hooks/forms/contact", body, FORM_SECRET, at=NOW - timedelta(minutes=6))
    ahead = post(
        client, "/hooks/chat/webchat", chat_json("c-1", ("hi",)), CHAT_SECRET, at=NOW + timedelta(minutes=6)
    )
    assert stale.status_code == ahead.status_code == 401  # type: ignore[attr-defined]
    assert "5 minutes" in stale.json()["detail"]  # type: ignore[attr-defined]
    # A signature made for one timestamp does not verify under another.
    headers = signed_headers(FORM_SECRET, body, NOW)
    headers[TIMESTAMP_HEADER] = str(int(NOW.timestamp()) + 1)
    assert client.post("/hooks/forms/contact", content=body, headers=headers).status_code == 401
    assert raw_rows(settings) == []
    within = post(client, "/hooks/forms/contact", body, FORM_SECRET, at=NOW - timedelta(minutes=4))
    assert within.status_code == 202  # type: ignore[attr-defined]


def test_unknown_source_is_404(client: TestClient) -> None:
    body = form_json()
    assert post(client, "/hooks/forms/nope", body, FORM_SECRET).status_code == 404  # type: ignore[attr-defined]


def test_malformed_body_is_422_naming_the_field(client: TestClient, settings: Settings) -> None:
    missing_message = json.dumps({"email": "a@b.co"}).encode()
    response = post(client, "/hooks/forms/contact", missing_message, FORM_SECRET)
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert "message" in response.json()["detail"]  # type: ignore[attr-defined]
    broken = post(client, "/hooks/chat/webchat", b'{"conversation_id": "c"', CHAT_SECRET)
    assert broken.status_code == 422  # type: ignore[attr-defined]
    assert raw_rows(settings) == []


def test_oversized_body_is_413(client: TestClient, settings: Settings) -> None:
    body = form_json(message="x" * 5000)
    assert post(client, "/hooks/forms/contact", body, FORM_SECRET).status_code == 413  # type: ignore[attr-defined]
    assert raw_rows(settings) == []


def test_chat_continuation_is_a_new_record_identical_resend_is_not(
    client: TestClient, settings: Settings
) -> None:
    first = chat_json("c-7", ("Do you support SSO?",))
    longer = chat_json("c-7", ("Do you support SSO?", "We need Okta."))
    codes = [post(client, "/hooks/chat/webchat", b, CHAT_SECRET).status_code for b in (first, first, longer)]  # type: ignore[attr-defined]
    assert codes == [202, 202, 202]
    assert len(raw_rows(settings)) == 2


def test_hostile_json_is_422_or_kept_as_text_never_500(client: TestClient, settings: Settings) -> None:
    deep_form = b'{"email": "a@b.co", "message": "hello there", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    deep_chat = b"[" * 1500 + b"]" * 1500
    deep = [
        post(client, "/hooks/forms/contact", deep_form, FORM_SECRET),
        post(client, "/hooks/chat/webchat", deep_chat, CHAT_SECRET),
    ]
    assert [a.status_code for a in deep] == [422, 422]  # type: ignore[attr-defined]
    assert "nested 1001 levels" in deep[0].json()["detail"]  # type: ignore[attr-defined]
    assert raw_rows(settings) == []
    digits = "9" * 4000
    body = f'{{"email": "a@b.co", "message": "hello there", "employees": {digits}}}'.encode()
    assert post(client, "/hooks/forms/contact", body, FORM_SECRET).status_code == 202  # type: ignore[attr-defined]
    assert digits in raw_rows(settings)[0].payload.decode()
