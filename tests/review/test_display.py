"""Display safety (issue 16, section 3): invisible and bidi controls shown visibly, Rich markup and
terminal escapes neutralised in every CLI table, formula cells quoted in CSV exports; raw records
unchanged."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.web import create_app
from config.settings import Settings, WebSettings
from review.display import SafeTable, csv_cell, markup_safe, visible
from sla.report import write_csv
from store import review_repo
from store.tables import Enquiry, LocalLead, Quarantine, RawRecord
from tests.review.review_builders import NOW, PASSWORD, add_enquiry_with_item, add_users

RLO_SUBJECT = "Invoice \u202egnp.exe\u202c overdue"
TERMINAL_TRAP = "\x1b]0;pwned\x07\x1b[2J"


def test_visible_marks_bidi_invisible_and_control_characters_and_keeps_the_rest() -> None:
    assert visible(RLO_SUBJECT) == "Invoice <U+202E>gnp.exe<U+202C> overdue"
    assert visible(TERMINAL_TRAP) == "<U+001B>]0;pwned<U+0007><U+001B>[2J"
    assert visible("a\u200bb\u2066c\u2069d\ufeff\u2028") == "a<U+200B>b<U+2066>c<U+2069>d<U+FEFF><U+2028>"
    assert visible("x\u0000y\x85z") == "x<U+0000>y<U+0085>z"
    # Ordinary text, line breaks, tabs, accents, scripts and emoji with joiners are left alone.
    for text in ("Grüße, José", "line one\nline two\tend", "مرحبا", "नमस्ते", "👩\u200d💻", "می\u200cخواهم"):
        assert visible(text) == text
    assert visible("a\r\nb\rc") == "a\nb<U+000D>c"


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    for formula in ('=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1"):
        assert csv_cell(formula) == "'" + formula
    assert csv_cell("\r=1") == "<U+000D>=1"  # a carriage return is shown, so it no longer starts the cell
    assert csv_cell("ann@acme.example") == "ann@acme.example"
    assert csv_cell(-5) == -5 and csv_cell(None) is None  # numbers are data, not text
    assert csv_cell("\u202eabc") == "<U+202E>abc"


def test_rich_tables_show_markup_and_escapes_literally() -> None:
    table = SafeTable("subject", "company")
    table.add_row("[/x]", "[/]")
    table.add_row("[bold red]boom", TERMINAL_TRAP)
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(table)
    text = out.getvalue()
    assert "[/x]" in text and "[/]" in text and "[bold red]boom" in text
    assert "\x1b" not in text and "<U+001B>" in text
    assert markup_safe("[/oops]\x07") == "\\[/oops]<U+0007>"


# --- the CLI over a real database ---------------------------------------------------------------------


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIAGE_DATABASE_URL", db_url)
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    return db_url


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "\x1b" not in result.output and "\x07" not in result.output
    return result.output


def test_cli_tables_survive_hostile_stored_text(cli_env: str, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        _, enquiry_id = add_enquiry_with_item(session, subject="[/x] " + TERMINAL_TRAP)
        session.add(
            LocalLead(
                external_id="lead-1",
                fields={"email": "a@b.example", "company": "[/]", "intent": "pricing", "lane": "automate"},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        raw = RawRecord(
            source="files",
            channel="email",
            external_key="k1",
            payload=b"x",
            received_at=NOW,
            imported_at=NOW,
            status="quarantined",
        )
        session.add(raw)
        session.flush()
        session.add(Quarantine(raw_id=raw.id, source="files", reason="[/oops] \x1b[2J", created_at=NOW))
        session.commit()
    listing = _run("review", "list")
    assert "[/x]" in listing and "<U+001B>" in listing
    assert "[/]" in _run("crm", "list")
    assert "[/oops]" in _run("quarantine", "list")
    with session_factory() as session:  # what is stored stays as it came
        enquiry = session.get(Enquiry, enquiry_id)
        assert enquiry is not None and enquiry.subject == "[/x] " + TERMINAL_TRAP


def test_audit_csv_quotes_formulas_in_every_column(
    cli_env: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with session_factory() as session:
        _, enquiry_id = add_enquiry_with_item(session, sender_email="=cmd|' /C calc'!A0@evil.example")
        review_repo.add_decision(
            session,
            {
                "enquiry_id": enquiry_id,
                "created_at": NOW,
                "actor": '=HYPERLINK("http://evil.example","click")',
                "kind": "note",
                "lane": "hybrid",
                "intent": "sales_demo",
                "queue": "sales",
                "priority": "high",
                "confidence": 0.5,
                "task": "review",
                "reasons": ["@SUM(1+1)"],
                "policy_version": "p",
                "model_version": "m",
            },
        )
        session.commit()
    for extra in ([], ["--raw-identities"]):
        out = tmp_path / f"audit{len(extra)}.csv"
        _run("audit", "export", "--format", "csv", "--out", str(out), *extra)
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        for row in rows:
            for value in row.values():
                assert not re.match(r"[=+\-@\t\r]", value or ""), (extra, row)
        actors = {row["actor"] for row in rows}
        assert '\'=HYPERLINK("http://evil.example","click")' in actors
    assert any(row["sender_email"].startswith("'=cmd") for row in rows)  # --raw-identities keeps it, quoted


def test_sla_csv_quotes_every_text_cell(tmp_path: Path) -> None:
    fact = SimpleNamespace(
        enquiry_id="e1",
        policy="standard",
        channel="email",
        intent="-2+3",
        queue="@queue",
        owner="\t=1",
        stopped_by=None,
        started_at=NOW,
        due_at=NOW + timedelta(hours=1),
        stopped_at=None,
        status="running",
    )
    policies: Any = SimpleNamespace(get=lambda _name: None)
    write_csv([fact], policies, tmp_path / "sla.csv", now=NOW)
    (row,) = list(csv.DictReader((tmp_path / "sla.csv").open(encoding="utf-8")))
    assert (row["intent"], row["queue"], row["owner"]) == ("'-2+3", "'@queue", "'\t=1")


# --- the web pages ----------------------------------------------------------------------------------


@pytest.fixture
def client(db_url: str, tmp_path: Path, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with session_factory() as session:
        add_users(session)
        session.commit()
    settings = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        web=WebSettings(secret_key=SecretStr("test-secret-key-0123456789"), secure_cookies=False),
    )
    app = create_app(settings, clock=lambda: NOW)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def _login(client: TestClient, name: str = "sam") -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token[1]})
    assert response.url.path == "/review"


def test_pages_show_bidi_controls_visibly_and_keep_the_record(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        item_id, enquiry_id = add_enquiry_with_item(
            session,
            subject=RLO_SUBJECT,
            sender_name="Ann \u2067Lee\u2069",
            body="Pay\u200b now\n" + TERMINAL_TRAP,
        )
        session.commit()
    _login(client)
    queue = client.get("/review").text
    assert "\u202e" not in queue and "Invoice &lt;U+202E&gt;gnp.exe&lt;U+202C&gt; overdue" in queue
    item = client.get(f"/review/items/{item_id}").text
    for hidden in ("\u202e", "\u2067", "\u200b", "\x1b", "\x07"):
        assert hidden not in item
    assert "&lt;U+2067&gt;" in item and "&lt;U+200B&gt;" in item and "&lt;U+001B&gt;" in item
    with session_factory() as session:
        enquiry = session.get(Enquiry, enquiry_id)
        assert enquiry is not None and enquiry.subject == RLO_SUBJECT
        assert session.scalar(sa.select(sa.func.count()).select_from(Enquiry)) == 1


def test_an_item_id_beyond_64_bits_is_refused_not_a_server_error(client: TestClient) -> None:
    _login(client)
    for item_id in (2**31, 2**63, 2**64 + 5, 10**30, 0):
        assert client.get(f"/review/items/{item_id}").status_code == 422
        assert client.post(f"/review/items/{item_id}/claim", data={}).status_code in (403, 422)
    assert client.get(f"/review/items/{2**31 - 1}").status_code == 404
