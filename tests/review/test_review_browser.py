"""The review pages in real headless Chromium against a real uvicorn on a temporary SQLite database.

Set TRIAGE_SCREENSHOTS=1 to also write docs/screenshots/review-queue.png and review-enquiry.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from app.web import create_app
from config.settings import Settings, WebSettings
from store.common import utcnow
from store.db import make_engine, make_session_factory
from store.tables import Correction, DecisionRow, EnquiryMessage, ReviewItem
from tests.review.review_builders import PASSWORD, add_demo_queue, add_enquiry_with_item, add_users

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
HOSTILE_BODY = (
    "Hello <script>window.pwned = 'script'; alert('script')</script>\n"
    "<img src=x onerror=\"window.pwned = 'img'; alert('img')\">\n"
    '<a href="javascript:alert(1)">click</a> bye'
)

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests", allow_module_level=True
    )

from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright  # noqa: E402


@dataclass
class LiveServer:
    url: str
    factory: sessionmaker[Session]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path: Path, _sqlite_template: Path) -> Iterator[LiveServer]:
    database = tmp_path / "triage.db"
    shutil.copyfile(_sqlite_template, database)
    url = f"sqlite:///{database}"
    settings = Settings(
        home=tmp_path / "home",
        database_url=url,
        web=WebSettings(secret_key=SecretStr("browser-test-secret-0123456789"), secure_cookies=False),
    )
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session:
        add_users(session)
        session.commit()
    port = _free_port()
    app = create_app(settings)
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.02)
    yield LiveServer(url=f"http://127.0.0.1:{port}", factory=factory)
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()
    engine.dispose()


def _login(browser: Browser, server: LiveServer, name: str) -> Page:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto("/review")
    expect(page).to_have_url(f"{server.url}/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{server.url}/review")
    return page


def test_sdr_logs_in_claims_corrects_and_replies(browser: Browser, server: LiveServer) -> None:
    now = utcnow()
    with server.factory() as session:
        ids = add_demo_queue(session, now=now)
        session.commit()
    page = _login(browser, server, "sam")
    rows = page.locator("table.queue tbody tr")
    expect(rows).to_have_count(len(ids))
    expect(rows.first).to_have_class("breached")
    expect(rows.first.locator("td.left")).to_contain_text("overdue")
    if os.environ.get("TRIAGE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "review-queue.png"))

    page.click("text=Demo request for our EMEA sales team")
    page.click("#claim")
    expect(page.locator(".flash-ok")).to_have_text("You claimed this enquiry.")
    expect(page.locator("#claimed-by")).to_have_text("sam")
    page.select_option("#correct-intent", "pricing")
    page.select_option("#correct-priority", "urgent")
    page.click("#correct")
    expect(page.locator(".flash-ok")).to_contain_text("Correction saved")
    expect(page.locator("#intent")).to_have_text("pricing")
    if os.environ.get("TRIAGE_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOTS / "review-enquiry.png"))
    # no SMTP server in this test: the customer was answered by phone, recorded by hand
    page.fill("#answered-reason", "Thanks Priya, pricing attached.")
    page.click("#answered")
    expect(page.locator(".flash-ok")).to_contain_text("Recorded as answered")
    expect(page.locator("#item-status")).to_have_text("done")

    item_id = ids[2]
    with server.factory() as session:
        item = session.get(ReviewItem, item_id)
        assert item is not None and item.status == "done" and item.claimed_by == "sam"
        label = session.scalars(sa.select(Correction)).one()
        assert (label.intent, label.priority, label.corrected_by) == ("pricing", "urgent", "sam")
        assert session.scalars(sa.select(EnquiryMessage.body)).all() == [
            "Answered elsewhere: Thanks Priya, pricing attached."
        ]
        kinds = session.scalars(sa.select(DecisionRow.kind).order_by(DecisionRow.id)).all()
        assert kinds == ["claim", "correction", "reply"]
    page.context.close()


def test_hostile_enquiry_shows_as_text_and_runs_nothing(browser: Browser, server: LiveServer) -> None:
    with server.factory() as session:
        item_id, _ = add_enquiry_with_item(
            session, subject="<img src=x onerror=alert('subject')>", body=HOSTILE_BODY
        )
        session.commit()
    page = _login(browser, server, "sam")
    dialogs: list[str] = []

    def record_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record_dialog)
    expect(page.locator("td.subject a")).to_have_text("<img src=x onerror=alert('subject')>")
    page.goto(f"/review/items/{item_id}")
    page.wait_for_load_state("load")

    assert page.locator("#body").text_content() == HOSTILE_BODY
    expect(page.locator("#subject")).to_have_text("<img src=x onerror=alert('subject')>")
    assert page.locator("main script, main img").count() == 0
    assert page.locator("#body a").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []
    page.context.close()


def test_a_bidi_override_in_a_subject_shows_as_visible_text(browser: Browser, server: LiveServer) -> None:
    """U+202E would display 'Invoice exe.png' reversed; the queue shows the control character instead."""
    subject = "Invoice \u202egnp.exe\u202c overdue"
    with server.factory() as session:
        item_id, _ = add_enquiry_with_item(session, subject=subject, sender_name="Eve \u202eoknuB")
        session.commit()
    page = _login(browser, server, "sam")
    link = page.locator("td.subject a")
    expect(link).to_have_text("Invoice <U+202E>gnp.exe<U+202C> overdue")
    shown = page.evaluate("document.querySelector('td.subject a').innerText")
    assert "\u202e" not in shown and "<U+202E>" in shown
    page.goto(f"/review/items/{item_id}")
    expect(page.locator("#subject")).to_have_text("Invoice <U+202E>gnp.exe<U+202C> overdue")
    assert "\u202e" not in page.evaluate("document.body.innerText")
    page.context.close()


def test_sdr_gets_403_on_ops_pages(browser: Browser, server: LiveServer) -> None:
    page = _login(browser, server, "sam")
    for path in ("/ops/sla", "/ops/models", "/ops/automation"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.locator("h1")).to_contain_text("Not allowed")
    expect(page.locator("nav a", has_text="SLA")).to_have_count(0)
    page.context.close()

    ops = _login(browser, server, "olga")
    response = ops.goto("/ops/sla")
    assert response is not None and response.status == 200
    ops.context.close()


def test_post_without_csrf_token_is_refused(browser: Browser, server: LiveServer) -> None:
    with server.factory() as session:
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
    page = _login(browser, server, "sam")
    page.goto(f"/review/items/{item_id}")
    page.locator("input[name=csrf_token]").evaluate_all("inputs => inputs.forEach(input => input.remove())")
    with page.expect_navigation() as navigation:
        page.click("#claim")
    response = navigation.value
    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("security token")
    with server.factory() as session:
        item = session.get(ReviewItem, item_id)
        assert item is not None and item.status == "open"
    page.context.close()


def test_two_browsers_claiming_the_same_item_one_wins(browser: Browser, server: LiveServer) -> None:
    with server.factory() as session:
        item_id, _ = add_enquiry_with_item(session)
        session.commit()
    pages = [_login(browser, server, name) for name in ("sam", "sue")]
    for page in pages:
        page.goto(f"/review/items/{item_id}")
    # both posts leave before either answer comes back
    for page in pages:
        page.click("#claim", no_wait_after=True)
    outcomes = []
    for page in pages:
        flash = page.locator(".flash")
        expect(flash).to_be_visible()
        outcomes.append(flash.text_content() or "")
    winners = [text for text in outcomes if text == "You claimed this enquiry."]
    losers = [text for text in outcomes if text.startswith("Not claimed: this enquiry is already claimed by")]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    with server.factory() as session:
        item = session.get(ReviewItem, item_id)
        claims = session.scalar(sa.select(sa.func.count()).where(DecisionRow.kind == "claim"))
    assert item is not None and item.claimed_by in ("sam", "sue") and claims == 1
    assert losers[0].endswith(f"by {item.claimed_by}.")
    for page in pages:
        page.context.close()
