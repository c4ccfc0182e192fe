"""parse_email on hand-made mails, one per rule, and on all 6,046 SpamAssassin mails."""

from __future__ import annotations

import base64
import email
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.mime import decode_bytes, html_to_text, normalise_message_id, parse_email, read_message
from models.errors import SkippableError
from models.records import Attachment, Channel, EnquiryIn
from tests.support.corpus import spamassassin_files

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def parse(raw: bytes, **kwargs: int) -> EnquiryIn:
    return parse_email(raw, source="imap:test", received_at=NOW, **kwargs)


def mail(headers: str, body: bytes = b"Hello, we need a quote.\n") -> bytes:
    base = "From: Ada Buyer <Ada@Example.COM>\nTo: sales@example.org\nSubject: Quote\n"
    return (base + headers).encode() + b"\n" + body


# --- headers and identity --------------------------------------------------------------------------


def test_plain_mail_fills_every_field() -> None:
    raw = (
        b'From: "Buyer, Ada" <Ada@Example.COM>\r\nTo: sales@example.org\r\nCc: boss@example.com\r\n'
        b"Subject: Quote for 40 seats\r\nMessage-ID: < abc.123@mail.example.com >\r\n"
        b"Date: Tue, 17 Nov 2026 09:30:00 +0100\r\nList-Id: <buyers.example.com>\r\n\r\n"
        b"Hello,\r\nplease quote 40 seats.\r\n"
    )
    enquiry = parse(raw)
    assert enquiry.channel is Channel.EMAIL and enquiry.source == "imap:test"
    assert enquiry.sender_email == "ada@example.com"
    assert enquiry.sender_name == "Buyer, Ada"
    assert enquiry.subject == "Quote for 40 seats"
    assert enquiry.body == "Hello,\nplease quote 40 seats."
    assert enquiry.message_key == "abc.123@mail.example.com"
    assert enquiry.received_at == datetime(2026, 11, 17, 8, 30, tzinfo=UTC)
    assert enquiry.attributes == {
        "to": "sales@example.org",
        "cc": "boss@example.com",
        "list_id": "<buyers.example.com>",
    }
    assert enquiry.in_reply_to == () and enquiry.skip_reason is None and not enquiry.truncated


def test_missing_message_id_is_none() -> None:
    assert parse(mail("")).message_key is None


def test_reply_keys_in_reply_to_first_then_references_newest_first() -> None:
    enquiry = parse(mail("In-Reply-To: <b@x>\nReferences: <a@x>\n <b@x> <c@x>\n"))
    assert enquiry.in_reply_to == ("b@x", "c@x", "a@x")


def test_reply_keys_without_angle_brackets() -> None:
    assert parse(mail("In-Reply-To: plain-id@host\n")).in_reply_to == ("plain-id@host",)


def test_encoded_word_headers_are_decoded() -> None:
    raw = (
        mail(
            "Subject: =?utf-8?q?Angebot_f=C3=BCr?= =?iso-8859-1?q?_Gr=F6=DFe?=\n"
            "From: =?utf-8?b?SsO8cmdlbiBNw7xsbGVy?= <jm@example.de>\n"
        )
        .replace(b"From: Ada Buyer <Ada@Example.COM>\n", b"")
        .replace(b"Subject: Quote\n", b"")
    )
    enquiry = parse(raw)
    assert enquiry.subject == "Angebot für Größe"
    assert enquiry.sender_name == "Jürgen Müller"
    assert enquiry.sender_email == "jm@example.de"


def test_raw_8bit_and_broken_encoded_word_headers_do_not_crash() -> None:
    raw = (
        b"From: Ren\xe9 <rene@example.fr>\nSubject: caf\xc3\xa9 =?unknown-charset?q?x=FF?= =?utf-8?q?broken\n"
        b"\nbody\n"
    )
    enquiry = parse(raw)
    assert enquiry.sender_email == "rene@example.fr"
    assert enquiry.subject.startswith("café")
    assert enquiry.sender_name == "René"


def test_unparseable_sender_leaves_email_empty() -> None:
    enquiry = parse(b"From: just a name\nSubject: hi\n\nbody\n")
    assert enquiry.sender_email is None


@pytest.mark.parametrize(
    "date_header",
    [
        "not a date",
        "Mon, 01 Jan 1970 00:00:00 +0000",
        "Fri, 01 Jan 2100 00:00:00 +0000",
        "Mon, 32 Foo 2026 99:99",
    ],
)
def test_invalid_or_implausible_date_falls_back_to_received_at(date_header: str) -> None:
    assert parse(mail(f"Date: {date_header}\n")).received_at == NOW


def test_date_without_zone_is_utc() -> None:
    assert parse(mail("Date: Tue, 17 Nov 2026 09:30:00 -0000\n")).received_at == datetime(
        2026, 11, 17, 9, 30, tzinfo=UTC
    )


def test_normalise_message_id() -> None:
    assert normalise_message_id("  <x@y>  ") == "x@y"
    assert normalise_message_id("<>") is None
    assert normalise_message_id("two words") is None


# --- bodies and charsets ---------------------------------------------------------------------------


def test_declared_charset_is_used() -> None:
    raw = mail('Content-Type: text/plain; charset="iso-8859-2"\n', "Dzień dobry".encode("iso-8859-2"))
    assert parse(raw).body == "Dzień dobry"


def test_wrong_declared_charset_falls_back_to_utf8() -> None:
    raw = mail("Content-Type: text/plain; charset=us-ascii\n", "Grüße aus Köln".encode())
    assert parse(raw).body == "Grüße aus Köln"


def test_unknown_charset_falls_back() -> None:
    raw = mail("Content-Type: text/plain; charset=x-made-up-42\n", "Größe".encode("cp1252"))
    assert parse(raw).body == "Größe"


def test_missing_charset_with_8bit_bytes_decodes() -> None:
    assert parse(mail("", "naïve café".encode("latin-1"))).body == "naïve café"


def test_codec_names_that_are_not_charsets_are_ignored() -> None:
    raw = mail("Content-Type: text/plain; charset=rot13\n", b"plain words")
    assert parse(raw).body == "plain words"


def test_decode_bytes_never_raises() -> None:
    assert decode_bytes(b"\xff\xfe\x81", "utf-8") == "ÿþ\ufffd"
    assert decode_bytes(b"abc", "zlib") == "abc"
    assert decode_bytes(b"abc", '"UTF-8"') == "abc"


def test_quoted_printable_and_base64_bodies() -> None:
    qp = mail(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
        b"F=C3=BCnf=\n Lizenzen\n",
    )
    assert parse(qp).body == "Fünf Lizenzen"
    b64 = base64.b64encode("Zwölf Lizenzen".encode())
    raw = mail("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n", b64 + b"\n")
    assert parse(raw).body == "Zwölf Lizenzen"


def test_broken_base64_does_not_crash() -> None:
    raw = mail("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n", b"SGVsbG8gd29y!!!bGQ=\n%%%\n")
    enquiry = parse(raw)
    assert isinstance(enquiry.body, str) and enquiry.subject == "Quote"


def test_nul_bytes_and_lone_surrogates_never_reach_the_text() -> None:
    enquiry = parse(mail("", b"before\x00after \xed\xa0\x80 end"))
    assert "\x00" not in enquiry.body
    enquiry.body.encode("utf-8")  # would raise on a lone surrogate
    assert enquiry.body.startswith("beforeafter")


def test_multipart_alternative_prefers_text() -> None:
    raw = mail(
        'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="b"\n',
        b"--b\nContent-Type: text/plain; charset=utf-8\n\nPlain words\n"
        b"--b\nContent-Type: text/html; charset=utf-8\n\n<p>HTML <b>words</b></p>\n--b--\n",
    )
    assert parse(raw).body == "Plain words"


def test_multipart_alternative_with_empty_text_uses_html() -> None:
    raw = mail(
        'Content-Type: multipart/alternative; boundary="b"\n',
        b"--b\nContent-Type: text/plain\n\n   \n--b\nContent-Type: text/html\n\n<p>Only in HTML</p>\n--b--\n",
    )
    assert parse(raw).body == "Only in HTML"


def test_html_only_becomes_safe_text() -> None:
    html = (
        b"<html><head><title>T</title><style>p {color: red}</style></head><body>"
        b"<script>alert('x')</script><p>Dear team,</p>"
        b"<p>We need&nbsp;50 &amp; more<br>seats &lt;soon&gt;.</p>"
        b"<!-- a comment --><table><tr><td>Qty</td><td>50</td></tr></table></body></html>"
    )
    enquiry = parse(mail("Content-Type: text/html; charset=utf-8\n", html))
    assert enquiry.body == "Dear team,\n\nWe need\u00a050 & more\nseats <soon>.\n\nQty 50".replace(
        "\u00a0", " "
    )
    assert "alert" not in enquiry.body and "color" not in enquiry.body and "comment" not in enquiry.body


def test_html_to_text_handles_unclosed_and_odd_markup() -> None:
    assert html_to_text("<div>one<div>two</span> three &#x41;&#66;") == "one\ntwo three AB"
    assert html_to_text("a < b and c > d") == "a < b and c > d"
    assert html_to_text("<style>never closed") == ""


def test_mixed_mail_keeps_text_and_lists_attachments() -> None:
    pdf = base64.b64encode(b"%PDF-1.4 " + b"x" * 991)
    raw = mail(
        'Content-Type: multipart/mixed; boundary="m"\n',
        b'--m\nContent-Type: multipart/alternative; boundary="a"\n\n'
        b"--a\nContent-Type: text/plain\n\nSee the RFP attached.\n"
        b"--a\nContent-Type: text/html\n\n<p>HTML</p>\n--a--\n"
        b'--m\nContent-Type: application/pdf; name="rfp.pdf"\n'
        b'Content-Disposition: attachment; filename="rfp.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\n" + pdf + b"\n"
        b"--m\nContent-Type: text/plain; name=notes.txt\n"
        b"Content-Disposition: attachment; filename*=utf-8''N%C3%B6tes.txt\n\n"
        b"attached notes\n"
        b"--m\nContent-Type: image/png\n\n\x89PNG\n--m--\n",
    )
    enquiry = parse(raw)
    assert enquiry.body == "See the RFP attached."
    assert enquiry.attachments == (
        Attachment(filename="rfp.pdf", content_type="application/pdf", size=1000),
        Attachment(filename="Nötes.txt", content_type="text/plain", size=len(b"attached notes")),
        Attachment(filename=None, content_type="image/png", size=len(b"\x89PNG")),
    )


def test_inline_text_parts_are_joined() -> None:
    raw = mail(
        'Content-Type: multipart/mixed; boundary="m"\n',
        b"--m\nContent-Type: text/plain\n\nPart one.\n--m\nContent-Type: text/plain\n\nPart two.\n--m--\n",
    )
    assert parse(raw).body == "Part one.\n\nPart two."


def test_forwarded_message_text_is_kept() -> None:
    raw = mail(
        'Content-Type: multipart/mixed; boundary="m"\n',
        b"--m\nContent-Type: text/plain\n\nFYI below.\n--m\nContent-Type: message/rfc822\n\n"
        b"From: c@d.e\nSubject: inner\n\nInner request text.\n--m--\n",
    )
    assert parse(raw).body == "FYI below.\n\nInner request text."


def test_unterminated_multipart_does_not_crash() -> None:
    raw = mail('Content-Type: multipart/mixed; boundary="never"\n', b"no boundary ever appears\n")
    enquiry = parse(raw)
    assert enquiry.subject == "Quote" and enquiry.body == "no boundary ever appears"


# --- size caps -------------------------------------------------------------------------------------


def test_body_cap_truncates() -> None:
    enquiry = parse(mail("", b"x" * 5_000), max_body_chars=1_000)
    assert len(enquiry.body) == 1_000 and enquiry.truncated


def test_body_cap_across_parts_and_html() -> None:
    parts = b"".join(b"--m\nContent-Type: text/html\n\n<p>" + b"y" * 800 + b"</p>\n" for _ in range(5))
    enquiry = parse(
        mail('Content-Type: multipart/mixed; boundary="m"\n', parts + b"--m--\n"), max_body_chars=1_000
    )
    assert len(enquiry.body) == 1_000 and enquiry.truncated


def test_header_cap_truncates() -> None:
    enquiry = parse(
        mail("X-Pad: 1\n").replace(b"Subject: Quote", b"Subject: " + b"s" * 500), max_header_chars=100
    )
    assert len(enquiry.subject) == 100 and enquiry.truncated


def test_mail_cap_cuts_giant_input() -> None:
    raw = mail("", b"z" * 3_000)
    enquiry = parse_email(raw, source="s", received_at=NOW, max_parse_bytes=1_000)
    assert enquiry.truncated and enquiry.subject == "Quote"


# --- auto-replies and bounces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-replied\n", "auto-reply (Auto-Submitted: auto-replied)"),
        ("Auto-Submitted: auto-generated; owner-email=x@y\n", "auto-reply (Auto-Submitted: auto-generated)"),
        ("X-Autoreply: yes\n", "auto-reply (X-Autoreply header)"),
        ("X-Autorespond: Out of office\n", "auto-reply (X-Autorespond header)"),
        ("Precedence: auto_reply\n", "auto-reply (Precedence: auto_reply)"),
        ("X-Failed-Recipients: nobody@example.com\n", "bounce (X-Failed-Recipients header)"),
    ],
)
def test_auto_replies_are_marked_skipped(headers: str, reason: str) -> None:
    assert parse(mail(headers)).skip_reason == reason


def test_auto_submitted_no_is_a_normal_mail() -> None:
    assert parse(mail("Auto-Submitted: no\n")).skip_reason is None


@pytest.mark.parametrize("precedence", ["list", "bulk", "junk"])
def test_list_and_bulk_mail_is_an_enquiry(precedence: str) -> None:
    enquiry = parse(mail(f"Precedence: {precedence}\n"))
    assert enquiry.skip_reason is None and enquiry.attributes["precedence"] == precedence


def test_delivery_status_report_is_a_bounce() -> None:
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\nTo: sales@example.org\n"
        b"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
        b"--r\nContent-Type: text/plain\n\nI'm sorry to have to inform you...\n"
        b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
        b"Final-Recipient: rfc822; nobody@example.com\nAction: failed\nStatus: 5.1.1\n--r--\n"
    )
    assert parse(raw).skip_reason == "bounce (delivery-status report)"


def test_mailer_daemon_with_failure_subject_is_a_bounce() -> None:
    raw = b"From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail: see transcript\n\nThe original...\n"
    assert parse(raw).skip_reason == "bounce (from mailer-daemon: Returned mail: see transcript)"


def test_postmaster_writing_normally_is_not_a_bounce() -> None:
    raw = b"From: postmaster@example.org\nSubject: We want to buy 200 licences\n\nHello\n"
    assert parse(raw).skip_reason is None


# --- not mail at all -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"", b"   \r\n\r\n  ", b"\x00\xff\xfe\x81 garbage\x01\x02", b"no headers here\n\nat all"]
)
def test_not_an_email_raises_skippable(raw: bytes) -> None:
    with pytest.raises(SkippableError):
        parse(raw)


def test_bytes_without_any_mail_header_are_not_an_email() -> None:
    with pytest.raises(SkippableError, match="not an email"):
        parse(b"X-Whatever: 1\n\n")
    with pytest.raises(SkippableError, match="not an email"):
        parse(b'{"json": "posted to the wrong place"}\n')


def test_headers_with_nothing_usable_raise_skippable() -> None:
    with pytest.raises(SkippableError, match="nothing to make an enquiry of"):
        parse(b"Date: Tue, 17 Nov 2026 09:30:00 +0100\nX-Whatever: 1\n\n")


def test_naive_received_at_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_email(mail(""), source="s", received_at=datetime(2026, 1, 1))


# --- the fast reader builds the stdlib's Message ----------------------------------------------------


def assert_same_as_stdlib(raw: bytes) -> None:
    ours, stdlib = read_message(raw), email.message_from_bytes(raw)
    assert list(ours.raw_items()) == list(stdlib.raw_items())
    assert ours.get_unixfrom() == stdlib.get_unixfrom()
    assert ours.is_multipart() == stdlib.is_multipart()
    if not stdlib.is_multipart():
        assert ours.get_payload() == stdlib.get_payload()


@pytest.mark.parametrize(
    "raw",
    [
        b"From someone@x  Mon Jan  1 00:00:00 2001\nSubject: a\n\tfolded\r\nX-Empty:\nX-Sp:   \n\tcont\n"
        b"\nbody\r\nend",
        b"Subject: only headers, no body, no final newline",
        b"Subject: lone\rCR: here\n\nbody",
        b"Subject: x\nBad Header: space in name\n\nbody",
        b" continuation first\nSubject: x\n\nbody",
        b"Subject: x\nFrom misplaced envelope\n\nbody",
        b":empty name\nSubject: x\n\nbody",
        b"Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xff\xfe body\r\n",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n",
        b"Content-Type: message/rfc822\n\nSubject: inner\n\nx\n",
        b"Subject: x\r\n\r\n\r\nbody after blank lines",
    ],
)
def test_read_message_matches_the_stdlib_parser(raw: bytes) -> None:
    assert_same_as_stdlib(raw)


@pytest.mark.slow
def test_read_message_matches_the_stdlib_on_the_whole_corpus() -> None:
    for path in spamassassin_files():
        assert_same_as_stdlib(path.read_bytes())


# --- the real corpus -------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_spamassassin_mail_parses_or_is_skippable() -> None:
    """All 6,046 files: an EnquiryIn or a SkippableError, nothing else (speed: bench/bench_imap.py)."""
    files: list[Path] = spamassassin_files()
    assert len(files) == 6_046
    payloads = [path.read_bytes() for path in files]
    parsed: list[EnquiryIn] = []
    rejected = 0
    started = time.perf_counter()
    for path, raw in zip(files, payloads, strict=True):
        try:
            enquiry = parse_email(raw, source="file:spamassassin", received_at=NOW)
        except SkippableError:
            rejected += 1
            continue
        except Exception as error:  # the assertion names the file that broke the rule
            pytest.fail(f"{path.name}: {error!r}")
        parsed.append(enquiry)
    per_second = len(files) / (time.perf_counter() - started)
    assert len(parsed) + rejected == 6_046
    bodies = [enquiry.body for enquiry in parsed]
    assert sum(1 for body in bodies if body) > 6_000, "nearly every mail has readable text"
    assert all("\x00" not in body for body in bodies)
    assert sum(1 for enquiry in parsed if enquiry.skip_reason) >= 5  # real bounces live in the corpus
    assert sum(1 for enquiry in parsed if enquiry.sender_email) > 6_000
    print(f"parse_email: {per_second:.0f} mails/s over the SpamAssassin corpus, {rejected} rejected")
