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
from store import flags
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


def test_ops_lead_sees_live_precision_and_resumes_a_paused_task(browser: Browser, server: LiveServer) -> None:
    from models import live_precision
    from store import model_registry, spot_checks

    now = utcnow()
    task = "create_or_update_lead"
    with server.factory() as session:
        model_registry.add_version(
            session,
            version="live-v1",
            artifact_path="unused",
            provenance={"params": {"target_precision": 0.95}},
            created_at=now,
            status="active",
        )
        checked = []
        for number in range(3):
            _, enquiry_id = add_enquiry_with_item(
                session, subject=f"Demo {number}", lane="automate", now=now, with_timer=False
            )
            checked.append(enquiry_id)
        spot_checks.add_spot_checks(
            session,
            [
                {
                    "enquiry_id": enquiry_id,
                    "task": task,
                    "model_version": "live-v1",
                    "intent": "sales_demo",
                    "reason": "share",
                    "selected_at": now,
                }
                for enquiry_id in checked
            ],
        )
        # Two right, one wrong: 0.667, Wilson 0.208-0.939, below the target; 3 checks, minimum 2 here.
        for enquiry_id, intent in zip(checked, ("sales_demo", "sales_demo", "pricing"), strict=True):
            spot_checks.record_review(session, enquiry_id, intent=intent, by="sam", at=now)
        paused = live_precision.evaluate_task(session, task, now=now, minimum=2)
        assert paused is not None and paused.paused
        session.commit()

    page = _login(browser, server, "olga")
    page.goto("/ops/automation")
    row = page.locator("#live-precision tbody tr", has_text=task)
    expect(row).to_have_count(1)
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("3")
    expect(cells.nth(2)).to_have_text("0.667")
    expect(cells.nth(3)).to_have_text("0.208–0.939")
    expect(cells.nth(4)).to_have_text("0.950")
    expect(cells.nth(5)).to_contain_text("paused")
    expect(page.locator("#min-reviewed")).to_have_text(str(live_precision.DEFAULT_MIN_REVIEWED))

    page.click(f"#resume-{task}")
    expect(page).to_have_url(f"{server.url}/ops/automation")
    expect(page.locator("body")).to_contain_text(f"Automation of task {task} resumed.")
    row = page.locator("#live-precision tbody tr", has_text=task)
    # Counted afresh after a person resumed it, and automating again.
    expect(row.locator("td").nth(1)).to_have_text("0")
    expect(row.locator("td").nth(5)).to_have_text("automating")
    page.context.close()
    with server.factory() as session:
        record = flags.task_pause(session, task)
        assert record is not None and record["paused"] is False and record["resumed_by"] == "olga"
