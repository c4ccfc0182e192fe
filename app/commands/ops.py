"""Governance commands for the ops lead and auditors: the decision matrix and the audit export."""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from models.errors import ConfigError
from review.display import SafeTable, csv_cell

policy_app = typer.Typer(
    help="The decision matrix: which tasks may be automated, scored and owned.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="Export the audit trail (decisions and corrections) for review.", no_args_is_help=True
)
console = Console(stderr=True)

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Addresses written to dodge harvesters: jane(at)example.com, jane [at] example [dot] com, jane at x dot io.
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)"
# The local part is possessive and a lookahead asks for an "at" right after it before anything else is
# tried: the same matches (no _AT form starts with a local-part character, so the local part always
# runs to the end of its word), without backtracking through every word of a text (7x faster).
OBFUSCATED_EMAIL = re.compile(
    rf"(?=[\w.+-]++(?:\s*[(\[{{<@]|\s+at\s))[\w.+-]++{_AT}[\w-]+(?:{_DOT}[\w-]+)*{_DOT}[a-z]{{2,24}}\b",
    re.IGNORECASE,
)
PHONE = re.compile(r"(?<!\w)\+?\d[\d ()./-]{6,}\d(?!\w)")
# Two letters, two check digits, 11-30 letters or digits, in groups or not: anything IBAN-shaped.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}\b", re.IGNORECASE)
# A capitalised name after a salutation, an honorific, an introduction or a sign-off.
# Up to three words; `_mask_names` keeps the leading capitalised ones ("Dear Jane Doe, we" → Jane Doe).
_NAME = r"([^\W\d_][\w'-]*(?:[ \t]+[^\W\d_][\w'-]*){0,2})"
_HONORIFICS = ("Mr", "Mrs", "Ms", "Miss", "Mx", "Dr", "Prof", "Herr", "Frau", "Mme", "Mlle", "Sr", "Sra")
_GREETINGS = ("dear", "hi", "hello", "hey", "hallo", "bonjour")
_INTRODUCTIONS = ("my name is", "this is", "i am", "i'm", "je suis", "ich bin", "ich heiße")
_SIGN_OFFS = ("regards", "thanks", "thank you", "cheers", "best", "sincerely", "yours", "grüße", "gruß",
              "cordialement")  # fmt: skip
NAME_CONTEXTS = (
    rf"\b(?:{'|'.join(_HONORIFICS)})\.?[ \t]+{_NAME}",
    rf"\b(?i:{'|'.join(_GREETINGS)})[ \t,]+{_NAME}",
    rf"\b(?i:{'|'.join(_INTRODUCTIONS)})[ \t]+{_NAME}",
    rf"\b(?i:{'|'.join(_SIGN_OFFS)})[ \t]*[,.!]?[ \t]*\r?\n[ \t]*{_NAME}",
)
# What each context needs to be in a text at all: (its words, whether they are matched case-blind,
# whether a line break must follow). An ASCII text with none of the words skips the context.
_CONTEXT_NEEDS = ((_HONORIFICS, False, False), (_GREETINGS, True, False), (_INTRODUCTIONS, True, False),
                  (_SIGN_OFFS, True, True))  # fmt: skip
PII_FIELDS = ("sender_email", "sender_phone", "sender_name")
FREE_TEXT_FIELDS = ("reasons",)
# Written by the product, never by a person: ids, times, the taxonomy's values, versions (see pseudonymise).
STRUCTURAL_FIELDS = frozenset(
    {"record", "id", "created_at", "enquiry_id", "channel", "kind", "lane", "intent", "queue", "priority",
     "confidence", "task", "policy_version", "model_version"}
)  # fmt: skip


@policy_app.command("score")
def policy_score(
    scores: Annotated[
        str, typer.Argument(help="Comma-separated scores, 1-5 each, in the matrix's criteria order.")
    ],
    matrix: Annotated[
        str, typer.Option(help="marketing4 (4 criteria, 5 = safest) or risk6 (6 criteria, 5 = riskiest).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a task on a decision matrix: prints the sum and the lane it falls in."""
    from config.policy import MATRIX_CRITERIA, score_matrix

    try:
        values = [int(part) for part in scores.split(",")]
    except ValueError as error:
        raise ConfigError(f"scores must be whole numbers separated by commas, got {scores!r}") from error
    total, lane = score_matrix(matrix, values)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "matrix": matrix,
                    "scores": dict(zip(MATRIX_CRITERIA[matrix], values, strict=True)),
                    "sum": total,
                    "lane": lane,
                }
            )
        )
    else:
        typer.echo(f"{matrix}: sum {total} → {lane}")


@policy_app.command("show")
def policy_show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every task of the decision matrix with its lane, owner, review SLA, escalation and rollback."""
    from config.policy import load_policy
    from config.settings import Settings

    policy = load_policy(Settings().policy_dir)
    rows = [
        {
            "task": name,
            "matrix": task.matrix,
            "sum": task.total,
            "matrix_lane": task.matrix_lane,
            "lane": task.lane.value,
            "owner": task.owner,
            "review_sla": task.review_sla,
            "escalation": task.escalation,
            "rollback": task.rollback,
        }
        for name, task in policy.matrix.tasks.items()
    ]
    if as_json:
        typer.echo(json.dumps({"policy_version": policy.version, "tasks": rows}, indent=2))
        return
    columns = ("task", "matrix", "sum", "lane", "owner", "review SLA")
    table = SafeTable(*columns, title=f"policy {policy.version}")
    for row in rows:
        table.add_row(
            *(str(row[key]) for key in ("task", "matrix", "sum", "matrix_lane", "owner", "review_sla"))
        )
    Console().print(table)


def pseudonymisation_key(home: Path, configured: str | None) -> bytes:
    """The keyed-hash secret: TRIAGE_PSEUDONYMISATION_KEY, or one generated once under TRIAGE_HOME."""
    from config.settings import make_private_dir  # not at the top: pydantic-settings costs start-up

    if configured:
        return configured.encode()
    path = home / "pseudonymisation.key"
    if not path.exists():
        make_private_dir(home)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def pseudonym(key: bytes, value: str) -> str:
    """A stable keyed hash: the same address always maps to the same token, and cannot be reversed."""
    return _keyed_hash(key, value.strip().lower())


@functools.lru_cache(maxsize=65_536)  # bounded: an export's memory does not grow with the store
def _keyed_hash(key: bytes, normalised: str) -> str:
    return "pii_" + hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)  # bounded; a sender's rows come together (one per decision)
def _sender_name_pattern(name: str) -> tuple[tuple[str, ...] | None, str]:
    """The sender's name, whole and each part of 3+ letters: one pattern's source for all of them
    (compiled only for a text that may hold the name), and the lowercase parts for a cheap test of
    whether an ASCII text can contain them (None for a name that is not ASCII: Unicode
    case-insensitive matching folds more than `str.lower` does)."""
    parts = sorted({name.strip(), *(part for part in re.split(r"[\s,]+", name) if len(part) >= 3)}, key=len,
                   reverse=True)  # fmt: skip
    alternatives = "|".join(re.escape(part) for part in parts)
    lowered = tuple(part.lower() for part in parts) if name.isascii() else None
    return lowered, rf"\b(?:{alternatives})\b"


@functools.lru_cache(maxsize=1024)  # bounded; one per sender name whose parts appear in a text
def _case_blind(source: str) -> re.Pattern[str]:
    return re.compile(source, re.IGNORECASE)


@dataclass(frozen=True)
class NameMasks:
    """What to mask as names in a record's free text: its sender's own name and the name contexts."""

    sender: tuple[tuple[str, ...] | None, str] | None = None
    contexts: bool = False


def _name_masks(record: dict[str, Any]) -> NameMasks:
    name = record.get("sender_name")
    sender = _sender_name_pattern(name) if isinstance(name, str) and name.strip() else None
    return NameMasks(sender=sender, contexts=True)


@functools.cache
def _context_patterns() -> list[re.Pattern[str]]:
    return [re.compile(pattern) for pattern in NAME_CONTEXTS]


def _mask_names(match: re.Match[str], key: bytes) -> str:
    """Pseudonymise the leading capitalised words of a context match's name group."""
    words = match.group(1).split()
    kept = []
    for word in words:
        if not word[:1].isupper():
            break
        kept.append(word)
    if not kept:
        return match.group(0)
    start = match.start(1) - match.start(0)
    whole = match.group(0)
    name_end = whole.index(kept[-1], start) + len(kept[-1])
    return whole[:start] + pseudonym(key, " ".join(kept)) + whole[name_end:]


_DIGIT = re.compile(r"\d")
_NOT_DIGIT = re.compile(r"\D")
_SPACE_OR_DASH = re.compile(r"[\s-]")


def scrub_text(text: str, key: bytes, names: NameMasks | None = None) -> str:
    """Free text with e-mail addresses (plain and obfuscated), IBAN-like strings, phone numbers and
    names replaced by keyed pseudonyms.

    Each pattern runs only where it can match, tested on the text as it is at that step: a plain
    address needs an '@', an obfuscated one an '@' or an "at", an IBAN or a phone number a digit,
    the sender's name one of its parts. (Texts that are not ASCII skip the case-insensitive tests.)
    Most values pass every test in a few string searches instead of many regular-expression scans."""
    if "@" in text:
        text = EMAIL.sub(lambda m: pseudonym(key, m.group(0)), text)
    if "@" in text or not text.isascii() or "at" in text.lower():
        text = OBFUSCATED_EMAIL.sub(lambda m: pseudonym(key, m.group(0)), text)
    if _DIGIT.search(text):
        text = IBAN.sub(lambda m: pseudonym(key, _SPACE_OR_DASH.sub("", m.group(0)).upper()), text)
    if _DIGIT.search(text):
        text = PHONE.sub(lambda m: pseudonym(key, _NOT_DIGIT.sub("", m.group(0))), text)
    if names is None:
        return text
    if names.sender is not None:
        parts, source = names.sender
        if parts is None or not text.isascii() or any(part in text.lower() for part in parts):
            text = _case_blind(source).sub(lambda m: pseudonym(key, m.group(0)), text)
    if names.contexts:
        for context, (words, case_blind, newline) in zip(_context_patterns(), _CONTEXT_NEEDS, strict=True):
            if text.isascii():
                haystack = text.lower() if case_blind else text
                if (newline and "\n" not in text) or not any(word in haystack for word in words):
                    continue
            text = context.sub(lambda m: _mask_names(m, key), text)
    return text


def pseudonymise(record: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Pseudonymise the identity fields; in every other field replace e-mail addresses (also obfuscated
    ones), IBAN-like strings and phone numbers, and in the free text (`reasons`: notes, rule reasons)
    names too: the sender's own and any after a salutation, honorific, introduction or sign-off.

    The fields the product writes itself (ids, times, the taxonomy's values, versions) hold no one's
    data and pass unchanged: scrubbing them mangled them (a hex id starting "ab12" is IBAN-shaped, the
    "00.123456" of a timestamp phone-shaped), so an audit row no longer matched its enquiry."""
    names: NameMasks | None = None

    def scrub(value: Any, free_text: bool) -> Any:
        nonlocal names
        if isinstance(value, str):
            if free_text and names is None:
                names = _name_masks(record)
            return scrub_text(value, key, names if free_text else None)
        if isinstance(value, list):
            return [scrub(item, free_text) for item in value]
        if isinstance(value, dict):
            return {k: scrub(v, free_text) for k, v in value.items()}
        return value

    out = {
        k: v if k in STRUCTURAL_FIELDS else scrub(v, k in FREE_TEXT_FIELDS)
        for k, v in record.items()
        if k not in PII_FIELDS
    }
    for field in PII_FIELDS:
        value = record.get(field)
        out[field] = (
            pseudonym(key, _NOT_DIGIT.sub("", value) if field == "sender_phone" else value) if value else None
        )
    return out


@audit_app.command("export")
def audit_export(
    since: Annotated[
        datetime | None, typer.Option(help="Only records at or after this date/time (UTC if no offset).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
    raw_identities: Annotated[
        bool,
        typer.Option(
            "--raw-identities", help="Keep e-mail addresses and phone numbers in clear (default: keyed hash)."
        ),
    ] = False,
) -> None:
    """Decisions and corrections, oldest first; e-mail addresses and phone numbers pseudonymised."""
    from config.settings import Settings
    from pipeline.runtime import Runtime
    from store.audit import iter_corrections, iter_decisions

    if format_ not in ("jsonl", "csv"):
        raise ConfigError(f"--format must be jsonl or csv, got {format_!r}")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    settings = Settings()
    settings.ensure_home()
    runtime = Runtime(settings)
    secret = settings.pseudonymisation_key.get_secret_value() if settings.pseudonymisation_key else None
    key = pseudonymisation_key(settings.home, secret)
    handle = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    count = 0
    try:
        with runtime.factory() as session:

            def records() -> Iterator[dict[str, Any]]:
                yield from iter_decisions(session, since=since)
                yield from iter_corrections(session, since=since)

            rows = (record if raw_identities else pseudonymise(record, key) for record in records())
            if format_ == "jsonl":
                for row in rows:
                    handle.write(json.dumps(row, default=str) + "\n")
                    count += 1
            else:
                columns = [
                    "record",
                    "id",
                    "created_at",
                    "enquiry_id",
                    "channel",
                    "sender_email",
                    "sender_phone",
                    "sender_name",
                    "actor",
                    "kind",
                    "lane",
                    "intent",
                    "queue",
                    "priority",
                    "confidence",
                    "task",
                    "reasons",
                    "previous",
                    "policy_version",
                    "model_version",
                ]
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                for row in rows:
                    # Every cell (actor, raw identities, reasons...): no formula a spreadsheet would run.
                    writer.writerow(
                        {
                            k: csv_cell(json.dumps(v) if isinstance(v, list | dict) else v)
                            for k, v in row.items()
                        }
                    )
                    count += 1
    finally:
        if out:
            handle.close()
    console.print(f"exported {count} audit records" + (f" to {out}" if out else ""))
