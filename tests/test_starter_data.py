"""The bundled data: starter training set, firmographics, free-mail list and the demo sample.

These files are the first thing a new user meets (`triage demo`, the first model), so the tests pin
what their READMEs promise: sizes, labels, the deliberate breakage in the demo sample, and that demo
texts are not copied from the training set.
"""

from __future__ import annotations

import csv
import email
import json
import mailbox
import re
from collections import Counter
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CSV = ROOT / "models" / "starter_data" / "train.csv"
FIRMOGRAPHICS_CSV = ROOT / "connectors" / "data" / "firmographics.csv"
FREE_MAIL_TXT = ROOT / "connectors" / "data" / "free_mail_domains.txt"
DEMO = ROOT / "app" / "demo_data"

LABELS = {"sales_demo", "pricing", "support", "billing", "partnership", "careers", "press", "spam", "other"}
DEMO_TO = "hello@acme-triage.example"
FIRST_DAY, LAST_DAY = date(2026, 11, 16), date(2026, 11, 20)
BROKEN_CHARSET_ID = "<20261119034100.77AB12@tamarisk-components.dk>"
BOUNCE_ID = "<20261118140700.4F2A1C0123@mx1.acme-triage.example>"
FORM_KEYS = [
    "submission_id",
    "form_id",
    "submitted_at",
    "email",
    "name",
    "company",
    "phone",
    "subject",
    "message",
    "website",
]
HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,}$")


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _train_rows() -> list[dict[str, str]]:
    with TRAIN_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@cache
def _mbox_messages() -> tuple[bytes, ...]:
    box = mailbox.mbox(str(DEMO / "emails.mbox"), create=False)
    try:
        return tuple(box.get_bytes(key) for key in box.iterkeys())
    finally:
        box.close()


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@cache
def _messages() -> tuple[EmailMessage, ...]:
    """The mbox parsed once (the modern parser is slow); tests only read these messages."""
    return tuple(_parse(raw) for raw in _mbox_messages())


def _is_broken(message: EmailMessage) -> bool:
    return message["Message-ID"] is None or message["Message-ID"] == BROKEN_CHARSET_ID


def _form_lines() -> list[str]:
    return (DEMO / "forms.jsonl").read_text(encoding="utf-8").splitlines()


def _chats() -> list[dict[str, Any]]:
    loaded = json.loads((DEMO / "chats.json").read_text(encoding="utf-8"))
    assert isinstance(loaded, list)
    return loaded


def _demo_texts() -> list[str]:
    """Every human-written text in the demo sample: mail bodies, form messages, chat messages."""
    texts: list[str] = []
    for message in _messages():
        if _is_broken(message):
            continue
        body = message.get_body(preferencelist=("plain",))
        if body is not None:
            texts.append(body.get_content())
    for line in _form_lines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "message" in record:
            texts.append(record["message"])
    with (DEMO / "forms.csv").open(encoding="utf-8", newline="") as f:
        texts.extend(row["message"] for row in csv.DictReader(f))
    for chat in _chats():
        texts.extend(m["text"] for m in chat.get("messages", []))
    return texts


# --- starter training set ---------------------------------------------------------------------------


def test_train_csv_has_enough_rows_over_exactly_the_nine_labels() -> None:
    rows = _train_rows()
    counts = Counter(row["label"] for row in rows)
    assert len(rows) >= 1000
    assert set(counts) == LABELS
    assert min(counts.values()) >= 100, counts


def test_train_csv_texts_are_unique_and_not_trivially_short() -> None:
    texts = [row["text"] for row in _train_rows()]
    normalised = Counter(_normalise(t) for t in texts)
    assert [t for t, n in normalised.items() if n > 1] == []
    assert [t for t in texts if len(t.strip()) < 15] == []


def test_train_csv_has_only_the_two_documented_columns() -> None:
    with TRAIN_CSV.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["text", "label"]


# --- firmographics and free-mail domains -----------------------------------------------------------


def test_firmographics_columns_types_and_unique_domains() -> None:
    with FIRMOGRAPHICS_CSV.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [
            "domain",
            "company",
            "industry",
            "employees",
            "country",
            "annual_revenue_usd",
        ]
        rows = list(reader)
    assert 200 <= len(rows) <= 300
    domains = [row["domain"] for row in rows]
    assert len(set(domains)) == len(domains)
    for row in rows:
        assert HOSTNAME.match(row["domain"]), row
        assert row["company"].strip() and row["industry"].strip(), row
        assert re.fullmatch(r"[A-Z]{2}", row["country"]), row
        assert 5 <= int(row["employees"]) <= 50_000, row
        assert int(row["annual_revenue_usd"]) > 0, row


def test_firmographics_mix_smb_mid_market_and_enterprise() -> None:
    with FIRMOGRAPHICS_CSV.open(encoding="utf-8", newline="") as f:
        employees = [int(row["employees"]) for row in csv.DictReader(f)]
    smb = sum(1 for e in employees if e <= 100)
    mid = sum(1 for e in employees if 100 < e <= 1000)
    enterprise = sum(1 for e in employees if e > 1000)
    for segment in (smb, mid, enterprise):
        assert segment >= len(employees) // 10, (smb, mid, enterprise)


def test_free_mail_domains_are_clean_and_disjoint_from_firmographics() -> None:
    lines = FREE_MAIL_TXT.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#")
    domains = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert len(domains) >= 80
    assert len(set(domains)) == len(domains)
    assert {"gmail.com", "outlook.com", "yahoo.com", "proton.me", "gmx.de", "qq.com"} <= set(domains)
    assert all(HOSTNAME.match(d) for d in domains), [d for d in domains if not HOSTNAME.match(d)]
    with FIRMOGRAPHICS_CSV.open(encoding="utf-8", newline="") as f:
        company_domains = {row["domain"] for row in csv.DictReader(f)}
    assert not company_domains & set(domains)


# --- demo sample: mail -----------------------------------------------------------------------------


def test_every_demo_email_except_the_two_broken_ones_parses_cleanly() -> None:
    messages = list(_messages())
    assert 140 <= len(messages) <= 160
    broken = [m for m in messages if _is_broken(m)]
    assert len(broken) == 2
    for message in messages:
        if _is_broken(message):
            continue
        sent = parsedate_to_datetime(str(message["Date"]))
        assert sent.tzinfo is not None
        assert FIRST_DAY <= sent.astimezone(UTC).date() <= LAST_DAY, message["Message-ID"]
        assert message["From"] and message["Subject"] and message["Message-ID"]
        assert str(message["To"]) == DEMO_TO or "MAILER-DAEMON" in str(message["From"])
        defects = [d for part in message.walk() for d in part.defects]
        assert defects == [], (message["Message-ID"], defects)
        body = message.get_body(preferencelist=("plain", "html"))
        assert body is not None and body.get_content().strip(), message["Message-ID"]


def test_the_broken_demo_emails_really_are_broken() -> None:
    broken = [m for m in _messages() if _is_broken(m)]
    headerless = [m for m in broken if m["Message-ID"] is None]
    assert len(headerless) == 1 and headerless[0]["From"] is None
    (bad_charset,) = [m for m in broken if m["Message-ID"] == BROKEN_CHARSET_ID]
    with pytest.raises(LookupError):
        bad_charset.get_content()


def test_demo_mbox_has_the_documented_duplicates_resend_replies_and_non_enquiries() -> None:
    raws = _mbox_messages()
    messages = _messages()
    exact = Counter(raws)
    assert sorted(n for n in exact.values() if n > 1) == [2, 2, 2]

    by_id: dict[str, set[bytes]] = {}
    for raw, message in zip(raws, messages, strict=True):
        if message["Message-ID"]:
            by_id.setdefault(str(message["Message-ID"]), set()).add(raw)
    assert len([i for i, contents in by_id.items() if len(contents) > 1]) == 1

    seen: set[str] = set()
    replies = 0
    for message in messages:
        parent = message["In-Reply-To"]
        if parent and str(parent) in seen:
            replies += 1
            assert str(message["Subject"]).startswith("Re: ")
            assert str(parent) in str(message["References"])
        if message["Message-ID"]:
            seen.add(str(message["Message-ID"]))
    assert replies == 2

    auto_replies = [
        m for m in messages if m["Auto-Submitted"] == "auto-replied" and m["Message-ID"] != BOUNCE_ID
    ]
    assert len(auto_replies) == 1
    (bounce,) = [m for m in messages if m.get_content_type() == "multipart/report"]
    assert bounce["Message-ID"] == BOUNCE_ID
    assert bounce.get_param("report-type") == "delivery-status"
    assert "MAILER-DAEMON" in str(bounce["From"])


def test_demo_mbox_includes_the_documented_encodings_and_attachment() -> None:
    messages = [m for m in _messages() if not _is_broken(m)]
    charsets = Counter(
        part.get_content_charset() for m in messages for part in m.walk() if not part.is_multipart()
    )
    assert charsets["iso-8859-1"] == 1 and charsets["windows-1252"] == 1
    assert sum(1 for m in messages if m.get_content_type() == "multipart/alternative") >= 10
    pdfs = [a for m in messages for a in m.iter_attachments() if a.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_content().startswith(b"%PDF-")


# --- demo sample: forms ----------------------------------------------------------------------------


def test_forms_jsonl_has_the_documented_broken_duplicate_and_bot_lines() -> None:
    lines = _form_lines()
    assert 100 <= len(lines) <= 130
    invalid_json, missing_message, records = [], [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            invalid_json.append(number)
            continue
        if "message" not in record:
            missing_message.append(number)
            continue
        records.append(record)
    assert invalid_json == [41]
    assert missing_message == [86]
    assert sorted(n for n in Counter(lines).values() if n > 1) == [2, 2]
    assert sum(1 for r in records if r["website"]) == 3

    for record in records:
        assert list(record) == FORM_KEYS
        assert record["form_id"] in {"contact", "demo", "pricing"}
        assert datetime.fromisoformat(record["submitted_at"]).tzinfo is not None
        assert "@" in record["email"] and record["name"] and record["message"].strip()
        for optional in ("company", "phone", "subject"):
            assert record[optional] is None or isinstance(record[optional], str)


def test_forms_csv_is_a_clean_export_with_the_documented_header() -> None:
    with (DEMO / "forms.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FORM_KEYS
        rows = list(reader)
    assert len(rows) == 20
    assert len({row["submission_id"] for row in rows}) == 20
    for row in rows:
        assert row["form_id"] in {"contact", "demo", "pricing"}
        assert datetime.fromisoformat(row["submitted_at"]).tzinfo is not None
        assert row["message"].strip() and row["website"] == ""


# --- demo sample: chats ----------------------------------------------------------------------------


def test_chats_json_loads_with_documented_duplicates_continuation_and_broken_transcript() -> None:
    chats = _chats()
    assert 55 <= len(chats) <= 75
    broken = [c for c in chats if "messages" not in c]
    assert len(broken) == 1

    complete = [c for c in chats if "messages" in c]
    dumped = Counter(json.dumps(c, sort_keys=True) for c in complete)
    assert sorted(n for n in dumped.values() if n > 1) == [2, 2]

    by_id: dict[str, list[dict[str, Any]]] = {}
    for chat in complete:
        by_id.setdefault(chat["conversation_id"], []).append(chat)
    continued = [v for v in by_id.values() if len({json.dumps(c, sort_keys=True) for c in v}) > 1]
    assert len(continued) == 1
    first, later = continued[0]
    assert len(later["messages"]) > len(first["messages"])
    assert later["messages"][: len(first["messages"])] == first["messages"]

    for chat in complete:
        assert chat["source"] == "webchat"
        assert datetime.fromisoformat(chat["started_at"]).tzinfo is not None
        ids = {p["id"] for p in chat["participants"]}
        assert {p["role"] for p in chat["participants"]} <= {"visitor", "agent", "bot"}
        assert any(p["role"] == "visitor" for p in chat["participants"])
        assert chat["messages"]
        for message in chat["messages"]:
            assert message["author"] in ids
            assert message["text"].strip()
            assert datetime.fromisoformat(message["sent_at"]) >= datetime.fromisoformat(chat["started_at"])


# --- demo sample against the training set ----------------------------------------------------------


def test_demo_texts_do_not_overlap_the_training_texts() -> None:
    train = [_normalise(row["text"]) for row in _train_rows()]
    demo = [_normalise(t) for t in _demo_texts()]
    assert len(demo) > 500
    assert set(train).isdisjoint(demo)
    # a training text pasted inside a longer demo message is still a copy
    long_train = [t for t in train if len(t) >= 40]
    copied = [t for t in long_train if any(t in d for d in demo)]
    assert copied == []


def test_demo_sample_has_at_least_330_records() -> None:
    mails = len(_mbox_messages())
    forms = len(_form_lines())
    with (DEMO / "forms.csv").open(encoding="utf-8", newline="") as f:
        csv_forms = sum(1 for _ in csv.DictReader(f))
    chats = len(_chats())
    assert mails + forms + csv_forms + chats >= 330
