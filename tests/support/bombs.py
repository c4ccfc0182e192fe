"""A corpus of crafted hostile records (issue 16): each one once stopped intake or held a worker.

`bomb_corpus()` builds them in memory, `write_bomb_folders()` as files `triage import` reads (mails as
.eml, form posts as .jsonl). Every bomb is expected to end in the quarantine with a reason; a test or a
benchmark mixes them with ordinary mail.
"""

from __future__ import annotations

import base64
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

HEAD = (
    b"From: Mallory <mallory@example.net>\r\nTo: sales@example.com\r\n"
    b"Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <%s@bombs.example>\r\n"
)


@dataclass(frozen=True, slots=True)
class Bomb:
    name: str
    channel: str  # "email" or "form"
    payload: bytes
    # What the quarantine reason must mention (lower case), so a test knows which limit caught it.
    reason_hint: str


def _mail(name: str, headers: bytes, body: bytes) -> bytes:
    return HEAD % name.encode() + headers + b"\r\n" + body


def nested_multiparts(levels: int = 2_000) -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return _mail("nested-multipart", b"Subject: nested\r\nMIME-Version: 1.0\r\n", b"").replace(
        b"MIME-Version: 1.0\r\n\r\n",
        b"MIME-Version: 1.0\r\n" + opening + b"Content-Type: text/plain\r\n\r\nhi" + closing,
    )


def nested_rfc822(levels: int = 3_000) -> bytes:
    inner = b"Content-Type: message/rfc822\r\n\r\n" * levels + b"Subject: deep\r\n\r\nhello"
    return HEAD % b"nested-rfc822" + b"Subject: forwarded\r\nMIME-Version: 1.0\r\n" + inner


def quadratic_html(repeats: int = 1_500_000) -> bytes:
    html = b"<html><body>" + b"<a" * repeats
    return _mail("quadratic-html", b"Subject: offer\r\nContent-Type: text/html; charset=utf-8\r\n", html)


def encoded_words(count: int = 5_000) -> bytes:
    subject = b"Subject: " + b" ".join(b"=?utf-8?q?price=C3=A9_?=" for _ in range(count)) + b"\r\n"
    return _mail("encoded-words", subject, b"hello")


def huge_header(size: int = 5_000_000) -> bytes:
    return _mail("huge-header", b"Subject: " + b"A" * size + b"\r\n", b"hello")


def many_headers(count: int = 10_000) -> bytes:
    return _mail("many-headers", b"".join(b"X-Filler-%d: x\r\n" % i for i in range(count)), b"hello")


def nul_bytes() -> bytes:
    return _mail(
        "nul-bytes", b"Subject: hello\x00\x00world\r\nX-Note: \x00" + b"\x00" * 100_000 + b"\r\n", b"a\x00b"
    )


def invalid_utf8_form() -> bytes:
    return b'{"email": "mallory@example.net", "message": "\xff\xfe\xc3\x28 broken \xed\xa0\x80"}'


def zip_bomb_mail(expanded: int = 60_000_000) -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as handle,
    ):
        chunk = b"\x00" * 1_000_000
        for _ in range(expanded // len(chunk)):
            handle.write(chunk)
    encoded = base64.encodebytes(buffer.getvalue())
    body = (
        b"--z\r\nContent-Type: text/plain\r\n\r\nPlease see the invoice.\r\n--z\r\n"
        b'Content-Type: application/zip; name="invoice.zip"\r\nContent-Transfer-Encoding: base64\r\n'
        b'Content-Disposition: attachment; filename="invoice.zip"\r\n\r\n' + encoded + b"\r\n--z--\r\n"
    )
    headers = b'Subject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="z"\r\n'
    return _mail("zip-bomb", headers, body)


def long_number_form(digits: int = 5_000) -> bytes:
    return b'{"email": "mallory@example.net", "message": "how much?", "employees": ' + b"9" * digits + b"}"


def deep_json_form(depth: int = 100_000) -> bytes:
    return b'{"email": "mallory@example.net", "message": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"


def bomb_corpus() -> list[Bomb]:
    """Every kind of bomb, once."""
    return [
        Bomb("nested-multipart", "email", nested_multiparts(), "nested"),
        Bomb("nested-rfc822", "email", nested_rfc822(), "nested"),
        Bomb("quadratic-html", "email", quadratic_html(), "html"),
        Bomb("encoded-words", "email", encoded_words(), "encoded words"),
        Bomb("huge-header", "email", huge_header(), "headers longer"),
        Bomb("many-headers", "email", many_headers(), "header lines"),
        Bomb("nul-bytes", "email", nul_bytes(), "nul"),
        Bomb("zip-bomb", "email", zip_bomb_mail(), "zip bomb"),
        Bomb("invalid-utf8", "form", invalid_utf8_form(), "not valid json"),
        Bomb("long-number", "form", long_number_form(), "digits"),
        Bomb("deep-json", "form", deep_json_form(), "nested"),
    ]


def write_bomb_folders(root: Path, bombs: list[Bomb] | None = None) -> tuple[Path, Path]:
    """Write the bombs as `root/mail/*.eml` and `root/forms/bombs.jsonl`; returns both folders."""
    mail, forms = root / "mail", root / "forms"
    mail.mkdir(parents=True, exist_ok=True)
    forms.mkdir(parents=True, exist_ok=True)
    lines = []
    for bomb in bombs if bombs is not None else bomb_corpus():
        if bomb.channel == "email":
            (mail / f"{bomb.name}.eml").write_bytes(bomb.payload)
        else:
            lines.append(bomb.payload)
    (forms / "bombs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return mail, forms


__all__ = ["Bomb", "bomb_corpus", "write_bomb_folders"]
