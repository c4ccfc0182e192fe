"""The review pages over HTTP (FastAPI's TestClient) on both databases: auth, CSRF, roles, actions, XSS."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.web import create_app
from config.settings import Settings
from connectors.notify import SmtpSettings
from connectors.smtp_outbound import OutboundSettings
from review.auth import load_secret_key
from store import flags
from store.tables import (
    Correction,
    DecisionRow,
    EnquiryMessage,
    ModelVersion,
    ReviewItem,
    ShadowPrediction,
    SlaTimer,
    User,
)
from tests.review.review_builders import NOW, PASSWORD, add_enquiry_with_item, add_users, csrf_token
from tests.sla.sla_helpers import smtp_server

XSS_BODY = 'Hi <script>window.pwned = 1</script> and <img src=x onerror="window.pwned = 2"> bye'


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with session_factory() as session:
        add_users(session)
        session.commit()
    app = create_app(settings)
    app.state.clock = lambda: NOW
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def login(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns a CSRF token valid for the new session."""
    token = csrf_token(client.get("/login").text)
    response = client.post("/login", data={"username": name, "password": password, "csrf_token": token})
    assert response.status_code == 200 and response.url.path == "/review", response.text[:500]
    return csrf_token(response.text)


def test_pages_need_a_login_and_a_wrong_password_is_refused(client: TestClient) -> None:
    response = client.get("/review", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    token = csrf_token(client.get("/login").text)
    refused = client.post(
        "/login", data={"username": "sam", "password": "wrong-password", "csrf_token": token}
    )
    assert refused.status_code == 401 and "Wrong name or password" in refused.text
    nobody = client.post("/login", data={"username": "ghost", "password": PASSWORD, "csrf_token": token})
    assert nobody.status_code == 401


def test_session_cookie_is_httponly_and_samesite_lax(client: TestClient) -> None:
    response = client.get("/login")
    cookie = response.headers["set-cookie"].lower()
    assert "triage_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # secure_cookies is off for plain-http tests


def test_secure_cookie_flag_follows_settings(settings: Settings) -> None:
    secure = settings.model_copy(update={"web": settings.web.model_copy(update={"secure_cookies": True})})
    app = create_app(secure)
    with TestClient(app, base_url="https://testserver") as https_client:
        assert "; secure" in https_client.get("/login").headers["set-cookie"].lower()
    app.state.engine.dispose()


def test_post_without_csrf_token_is_refused(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
    # no token at all, even for logging in
    assert client.post("/login", data={"username": "sam", "password": PASSWORD}).status_code == 403
    login(client, "sam")
    assert client.post(f"/review/items/{item_id}/claim").status_code == 403
    assert client.post(f"/review/items/{item_id}/claim", data={"csrf_token": "forged"}).status_code == 403
    with session_factory() as session:
        item = session.get(ReviewItem, item_id)
        assert item is not None and item.status == "open"


def test_sdr_claims_corrects_and_replies(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, enquiry_id = add_enquiry_with_item(session, subject="Quote for 300 seats")
        session.commit()
    token = login(client, "sam")
    queue = client.get("/review")
    assert "Quote for 300 seats" in queue.text and "1h 00m" in queue.text

    page = client.post(f"/review/items/{item_id}/claim", data={"csrf_token": token})
    assert "You claimed this enquiry." in page.text
    page = client.post(
        f"/review/items/{item_id}/correct",
        data={"csrf_token": token, "intent": "pricing", "priority": "urgent", "queue": "sales"},
    )
    assert "Correction saved" in page.text and 'id="intent">pricing<' in page.text
    assert 'id="proposed-intent">sales_demo<' in page.text  # the model's proposal stays visible
    # templates that suit the (corrected) intent are offered; choosing one pre-fills the reply
    assert "pricing_page" in page.text and "support_ack" not in page.text
    page = client.get(f"/review/items/{item_id}?template=pricing_page")
    assert "https://example.com/pricing" in page.text and "Hi Ann," in page.text
    with smtp_server() as sink:
        settings.outbound = OutboundSettings(
            smtp=SmtpSettings(host=sink.host, port=sink.port, starttls=False),
            from_address="sales@team.example",
        )
        page = client.post(
            f"/review/items/{item_id}/reply",
            data={"csrf_token": token, "text": "Quote sent.", "subject": "Your quote", "template": ""},
        )
    assert "Reply sent to ann@acme.example" in page.text and "Quote sent." in page.text
    [(_, message)] = sink.messages
    assert message["Subject"] == "Your quote" and message["In-Reply-To"] == f"<{enquiry_id}@x>"

    with session_factory() as session:
        assert session.scalars(sa.select(Correction.intent)).all() == ["pricing"]
        assert session.scalars(sa.select(EnquiryMessage.body)).all() == ["Quote sent."]
        kinds = session.scalars(
            sa.select(DecisionRow.kind).where(DecisionRow.enquiry_id == enquiry_id).order_by(DecisionRow.id)
        ).all()
        assert kinds == ["claim", "correction", "reply_queued", "reply_sent"]
        timer = session.scalars(sa.select(SlaTimer)).one()
        assert timer.stopped_by == "sam" and timer.status == "met" and timer.touch_source == "pages"
    assert "Quote for 300 seats" not in client.get("/review").text  # done items leave the queue


def test_a_chat_enquiry_without_an_address_says_so(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session, sender_email=None)
        session.commit()
    login(client, "sam")
    page = client.get(f"/review/items/{item_id}")
    assert 'id="reply-refusal"' in page.text and "gave no e-mail address" in page.text
    assert 'id="reply"' not in page.text


def test_second_claimant_is_told_who_holds_the_item(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session, status="claimed", claimed_by="sue")
        session.commit()
    token = login(client, "sam")
    page = client.post(f"/review/items/{item_id}/claim", data={"csrf_token": token})
    assert "already claimed by sue" in page.text
    page = client.post(f"/review/items/{item_id}/accept", data={"csrf_token": token})
    assert "claimed by sue" in page.text
    assert client.get("/review/items/424242").status_code == 404


def test_enquiry_text_is_escaped_and_scripts_are_forbidden(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session, subject="<b>bold</b> subject", body=XSS_BODY)
        session.commit()
    login(client, "sam")
    page = client.get(f"/review/items/{item_id}")
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page.text
    assert "<script>" not in page.text and "<img src=x" not in page.text and "<b>bold" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in client.get("/review").text


@pytest.mark.parametrize("path", ["/ops/sla", "/ops/models", "/ops/automation"])
def test_sdr_gets_403_on_ops_pages(client: TestClient, path: str) -> None:
    login(client, "sam")
    assert client.get(path).status_code == 403


def test_ops_lead_and_admin_see_ops_pages(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        add_enquiry_with_item(session, subject="overdue one", due_in_minutes=-10)
        add_enquiry_with_item(session, due_in_minutes=20)
        session.add(
            ModelVersion(
                version="m-2026-11-01",
                status="active",
                artifact_path="x",
                provenance={},
                created_at=NOW,
                approved_by="olga",
                promoted_at=NOW,
            )
        )
        session.commit()
    for name in ("olga", "adam"):
        client.cookies.clear()
        login(client, name)
        sla = client.get("/ops/sla")
        assert sla.status_code == 200 and "overdue one" in sla.text
        counts = re.sub(r"\s+", " ", sla.text)
        assert '<span class="n">1</span> due within the hour' in counts
        assert '<span class="n">1</span> overdue, still open' in counts
        models = client.get("/ops/models")
        assert models.status_code == 200 and "m-2026-11-01" in models.text


def test_kill_switch_shows_on_every_page_with_its_reason(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
    token = login(client, "olga")
    refused = client.post("/ops/automation", data={"csrf_token": token, "action": "pause", "reason": " "})
    assert "Say why" in refused.text
    page = client.post(
        "/ops/automation", data={"csrf_token": token, "action": "pause", "reason": "CRM outage <today>"}
    )
    assert 'id="killswitch"' in page.text and "CRM outage &lt;today&gt;" in page.text
    with session_factory() as session:
        assert flags.automation_paused(session) == (True, "CRM outage <today>")

    client.cookies.clear()
    login(client, "sam")
    for path in ("/review", f"/review/items/{item_id}"):
        assert "Automation is paused" in client.get(path).text
    assert "Automation is paused" in client.get("/ops/sla").text  # the 403 page too

    client.cookies.clear()
    token = login(client, "olga")
    client.post("/ops/automation", data={"csrf_token": token, "action": "resume", "reason": ""})
    assert 'id="killswitch"' not in client.get("/review").text
    with session_factory() as session:
        assert flags.automation_paused(session) == (False, None)


def test_logout_ends_the_session(client: TestClient) -> None:
    token = login(client, "sam")
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/review", follow_redirects=False).status_code == 303


def test_deactivating_a_user_ends_their_session(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    login(client, "sam")
    with session_factory() as session:
        user = session.scalars(sa.select(User).where(User.name == "sam")).one()
        user.active = False
        session.commit()
    assert client.get("/review", follow_redirects=False).headers["location"] == "/login"


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_generated_secret_key_is_private_and_kept(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = load_secret_key(settings)
    path = tmp_path / "home" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(settings) == first and len(first) > 40


@pytest.mark.slow  # promotion loads the model through models.registry: a real one is trained here
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ops_lead_sees_the_shadow_comparison_and_promotes_with_sign_off(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from models import registry
    from models.training import train_model
    from tests.models.conftest import OOS, toy_rows

    frame, labels = toy_rows(per_label=8, seed=5)
    with session_factory() as session:
        _, enquiry_id = add_enquiry_with_item(session)  # scored by the active model m-2026-11-01
        session.add(
            ModelVersion(
                version="m-2026-11-01", status="active", artifact_path="x", provenance={}, created_at=NOW
            )
        )
        # A registered candidate whose files are gone: the page must refuse to make it act.
        session.add(
            ModelVersion(
                version="m-broken", status="candidate", artifact_path="x", provenance={}, created_at=NOW
            )
        )
        shadow = registry.register_candidate(
            session,
            settings.home,
            train_model(frame, labels, oos_label=OOS, n_jobs=None),
            trained_by="tester",
            data_description="toy",
        )
        registry.set_shadow(session, shadow, actor="olga", home=settings.home)
        session.flush()
        session.add(
            ShadowPrediction(
                enquiry_id=enquiry_id,
                model_version=shadow,
                intent="pricing",
                confidence=0.8,
                abstained=False,
                created_at=NOW,
            )
        )
        session.commit()
    token = login(client, "sam")
    assert (
        client.post("/ops/models/promote", data={"csrf_token": token, "version": shadow}).status_code == 403
    )

    client.cookies.clear()
    token = login(client, "olga")
    page = re.sub(r"\s+", " ", client.get("/ops/models").text)
    assert '<th scope="row">agreement</th><td>0.0</td>' in page.replace("> <", "><")
    assert f'name="version" value="{shadow}"' in page
    unconfirmed = client.post("/ops/models/promote", data={"csrf_token": token, "version": shadow})
    assert "Tick the box" in unconfirmed.text
    broken = client.post(
        "/ops/models/promote", data={"csrf_token": token, "version": "m-broken", "confirm": "yes"}
    )
    assert "Not promoted" in broken.text and "missing" in broken.text
    promoted = client.post(
        "/ops/models/promote", data={"csrf_token": token, "version": shadow, "confirm": "yes"}
    )
    assert "signed off by olga" in promoted.text
    with session_factory() as session:
        rows = {row.version: row for row in session.scalars(sa.select(ModelVersion))}
        assert rows[shadow].status == "active" and rows[shadow].approved_by == "olga"
        assert rows["m-2026-11-01"].status == "retired" and rows["m-broken"].status == "candidate"


def test_breach_report_for_the_ops_lead_carries_the_kill_switch_banner(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        add_enquiry_with_item(session, subject="late one", due_in_minutes=-30)
        flags.set_automation_paused(session, True, reason="model drift <check>", by="olga")
        session.commit()
    login(client, "sam")
    assert client.get("/ops/sla/report").status_code == 403
    client.cookies.clear()
    login(client, "olga")
    assert 'href="/ops/sla/report?days=7"' in client.get("/ops/sla").text
    report = client.get("/ops/sla/report?days=7")
    assert report.status_code == 200 and "<title>SLA report 2026-11-17 – 2026-11-24</title>" in report.text
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script
    assert report.text.count('id="killswitch"') == 1 and "model drift &lt;check&gt;" in report.text
    assert "<script" not in report.text.lower()
