"""Raw RFC 822 mail → `EnquiryIn`: tolerant, bounded, fast.

Parsing uses the `compat32` policy because it is about ten times faster than `policy.default`
(~17,000 against ~1,600 mails/s here) and never raises on broken structure; the price is that headers
and charsets are decoded by hand below. Every decode falls back (declared charset → UTF-8 → cp1252 with
replacement characters), so no charset, declared, wrong or missing, can crash a run. Only input that is
not mail at all raises `SkippableError`, which the pipeline turns into a quarantine row.

All text returned is plain: HTML is reduced to text here and must still be escaped when rendered.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import io
import re
import zipfile
from datetime import UTC, datetime
from email.header import Header, decode_header
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime
from html import unescape

from models.errors import SkippableError
from models.records import Attachment, Channel, EnquiryIn

# A Date header before this is a broken clock, not a real send time.
EARLIEST_PLAUSIBLE_DATE = datetime(1990, 1, 1, tzinfo=UTC)
# How far a Date header may run ahead of the time the mail was received (clock skew).
MAX_DATE_SKEW_SECONDS = 24 * 3600
# Longest message id we keep: the store's message_key column is 500 characters.
MAX_MESSAGE_ID_CHARS = 500
# Replies carry long References chains; the newest few are enough to thread.
MAX_REPLY_KEYS = 30
# Attribute values (to, cc, list id) are context for people, not content.
MAX_ATTRIBUTE_CHARS = 300

# Explicit bounds on the work one mail can cause (issue 16). Real mail sits far below each; a mail over
# one is hostile or broken and is refused with the limit it broke (SkippableError: quarantined), before
# the stdlib parser sees it (its feed parser recurses per nested part: 2,000 levels raise RecursionError).
MAX_HEADER_BLOCK_BYTES = 256_000  # the top-level header block
MAX_HEADER_LINES = 2_000  # lines in the top-level header block
MAX_CONTAINERS = 100  # multipart and message/* parts, which is also the deepest possible nesting
MAX_PARTS = 1_000  # boundary delimiter lines: the parts of every multipart together
MAX_ENCODED_WORDS = 1_000  # RFC 2047 encoded words in the whole mail
MAX_HTML_BYTES = 2_000_000  # one text/html part before HTML-to-text (beyond: refused, not cut)
MAX_ZIP_EXPANDED_BYTES = 200_000_000  # what the entries of one zip attachment declare, together
MAX_ZIP_RATIO = 100  # declared expansion over compressed size, beyond which a zip is a bomb
MAX_ZIP_ENTRIES = 10_000

_CONTAINER_HEADER = re.compile(rb"^content-type:[ \t]*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)
_RAW_HEADER_END = re.compile(rb"\r?\n\r?\n")
_ENCODED_WORD_BYTES = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_WHITESPACE = re.compile(r"\s+")
_HAS_SPACE = re.compile(r"\s")
# A header block as the stdlib feed parser accepts it without complaint: an optional envelope line, then
# fields "name: value" (name characters as in its headerRE) with continuation lines; no empty names.
_EOL = r"(?:\r\n|\r(?!\n)|\n)"
_HEADER_END = re.compile(rf"({_EOL}){_EOL}")
_LONE_CR = re.compile(r"\r(?!\n)")
_FIELD = r"[\041-\071\073-\176]+:[^\r\n]*(?:\r?\n|$)(?:[ \t][^\r\n]*(?:\r?\n|$))*"
_HEADER_BLOCK = re.compile(rf"(From [^\r\n]*\r?\n)?(?:{_FIELD})+")
_HEADER_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n?)")
# 'Name <a@b>', '"Name" <a@b>', '<a@b>' or 'a@b': no comments, quoting tricks or groups.
_SIMPLE_FROM = re.compile(
    r'^\s*(?:"?([^"<>(),;:\\]*?)"?\s*<([^<>\s"(),;:@]+@[^<>\s"(),;:@]+)>|([^<>\s"(),;:@]+@[^<>\s"(),;:@]+))\s*$'
)
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
# Inside a tag, `[^<>]*` rather than `[^>]*`: an unclosed `<a<a<a...` made every `<` scan to the end
# of the text (quadratic: 81 s of CPU for one crafted mail); stopping at the next `<` makes each
# attempt end where the next one starts, so the whole pass is linear.
_HTML_INVISIBLE = re.compile(
    r"<!--.*?(?:-->|$)|<(script|style|title|noscript|template|svg)\b[^<>]*>.*?(?:</\1\s*>|$)",
    re.IGNORECASE | re.DOTALL,
)
_BLOCK_TAGS = (
    "p|div|br|li|ul|ol|tr|table|h[1-6]|blockquote|pre|hr|section|article|header|footer|dd|dt|dl"
    "|form|address|center|body|html"
)
_HTML_BLOCK_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS})\b[^<>]*>", re.IGNORECASE)
_HTML_CELL_TAG = re.compile(r"</?t[dh]\b[^<>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[a-zA-Z/!?][^<>]*>")
_HTML_SOURCE_BREAK = re.compile(r"[\r\n]+")
# At least one of these makes bytes a mail (RFC 5322 requires From and Date; the rest are common).
_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_MAIL_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "subject", "date", "message-id", "reply-to", "received",
        "return-path", "delivered-to", "mime-version", "content-type", "in-reply-to", "references",
    }
)  # fmt: skip
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|fail|notification|problem|has failed)|returned mail|failure notice"
    r"|mail delivery|could not be delivered|non-?delivery|delivery to the following",
    re.IGNORECASE,
)


def parse_email(
    raw: bytes,
    *,
    source: str,
    received_at: datetime,
    max_body_chars: int = 50_000,
    max_header_chars: int = 4_000,
    max_parse_bytes: int = 20_000_000,
) -> EnquiryIn:
    """Turn one raw mail into an `EnquiryIn` (channel EMAIL).

    `received_at` (aware) is used when the Date header is missing, invalid or implausible. Bodies over
    `max_body_chars`, headers over `max_header_chars` and mails over `max_parse_bytes` are cut and the
    result says `truncated=True`. Auto-replies and bounces come back with `skip_reason` set, not raised.

    Raises:
        SkippableError: the bytes are not a mail at all (empty, no headers, nothing usable).
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be an aware datetime")
    if not raw or not raw.strip():
        raise SkippableError("empty message: no headers and no body")
    truncated = False
    if len(raw) > max_parse_bytes:
        # Beyond this the rest is attachments; MIME parsing of a cut message still works.
        raw = raw[:max_parse_bytes]
        truncated = True
    header_end = check_limits(raw)
    message = read_message(raw)
    if not any(name.lower() in _MAIL_HEADERS for name in message):
        raise SkippableError("not an email: no From, To, Subject, Date or other RFC 5322 header found")
    if raw.find(b"\x00", 0, header_end) >= 0:  # how header smuggling starts; no mail tool writes one
        raise SkippableError("NUL byte in the mail headers")

    header_state = _HeaderReader(message, max_header_chars)
    subject = header_state.text("Subject")
    sender_name, sender_email = _sender(header_state.raw("From") or header_state.raw("Sender"))
    if sender_name is not None:
        sender_name = header_state.cap(sender_name)

    attachments: list[Attachment] = []
    body_state = _BodyState(max_body_chars)
    _collect(message, body_state, attachments, depth=0)
    body = _clean_text("\n\n".join(part for part in body_state.parts if part))
    if len(body) > max_body_chars:
        body = body[:max_body_chars]
        body_state.truncated = True
    truncated = truncated or body_state.truncated or header_state.truncated

    if not subject and not body and sender_email is None and not attachments:
        raise SkippableError("no sender, subject, body or attachment: nothing to make an enquiry of")

    return EnquiryIn(
        channel=Channel.EMAIL,
        source=source,
        message_key=_first_message_id(header_state.raw("Message-ID")),
        in_reply_to=_reply_keys(header_state.raw("In-Reply-To"), header_state.raw("References")),
        received_at=_sent_at(header_state.raw("Date"), received_at),
        sender_email=sender_email,
        sender_name=sender_name,
        subject=subject,
        body=body,
        attributes=_attributes(header_state),
        attachments=tuple(attachments),
        skip_reason=_skip_reason(message, header_state, sender_email, subject),
        truncated=truncated,
    )


def check_limits(raw: bytes) -> int:
    """Refuse a mail over one of the structural limits above, in time linear in its size.

    Each check is one C-speed scan (bytes.count, bytes.find, a compiled pattern); ordinary mail pays a
    few microseconds. Returns where the top-level header block ends; raises SkippableError naming
    the limit.
    """
    end = _RAW_HEADER_END.search(raw, 0, MAX_HEADER_BLOCK_BYTES + 4)
    if end is None and len(raw) > MAX_HEADER_BLOCK_BYTES:
        raise SkippableError(f"mail headers longer than {MAX_HEADER_BLOCK_BYTES:,} bytes")
    header_end = end.start() if end is not None else len(raw)
    if raw.count(b"\n", 0, header_end) >= MAX_HEADER_LINES:
        raise SkippableError(f"more than {MAX_HEADER_LINES:,} header lines")
    if raw.count(b"=?") > MAX_ENCODED_WORDS and _count(_ENCODED_WORD_BYTES, raw) > MAX_ENCODED_WORDS:
        raise SkippableError(f"more than {MAX_ENCODED_WORDS:,} RFC 2047 encoded words")
    if _count(_CONTAINER_HEADER, raw, stop_after=MAX_CONTAINERS) > MAX_CONTAINERS:
        raise SkippableError(f"more than {MAX_CONTAINERS} nested multipart or message parts")
    if raw.count(b"\n--") > MAX_PARTS:
        raise SkippableError(f"more than {MAX_PARTS:,} MIME parts")
    return header_end


def _count(pattern: re.Pattern[bytes], data: bytes, *, stop_after: int | None = None) -> int:
    found = 0
    for _ in pattern.finditer(data):
        found += 1
        if stop_after is not None and found > stop_after:
            break
    return found


def read_message(raw: bytes) -> Message:
    """The same `Message` as `email.message_from_bytes(raw)` (compat32), built faster when it can be.

    Most mail is a single part, and for it the stdlib parser spends most of its time walking the
    header lines in Python. Here regular expressions check and split the header block into the same
    (name, value) pairs compat32's `header_source_parse` makes, stored with the same `set_raw` and
    `set_payload` calls. Anything unusual (multipart, message/*, a bare CR, a stray envelope line, a
    line the stdlib would take for body) goes to the stdlib parser; tests check that both agree on
    every corpus mail.
    """
    return _read_single_part(raw) or email.message_from_bytes(raw)


def html_to_text(html: str) -> str:
    """Reduce HTML to readable plain text: no tags, scripts or styles; entities unescaped; breaks kept.

    Regular expressions rather than `html.parser`: they run in C and are ~10x faster on mail-sized
    HTML, and the result is only ever shown escaped, so a tag that slips through is harmless text.
    """
    text = _HTML_INVISIBLE.sub(" ", html)
    # Source line breaks inside HTML are just spaces; the breaks that count come from block tags.
    text = _HTML_SOURCE_BREAK.sub(" ", text)
    text = _HTML_BLOCK_TAG.sub("\n", text)
    text = _HTML_CELL_TAG.sub(" ", text)
    text = unescape(_HTML_TAG.sub("", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _clean_text(_MANY_NEWLINES.sub("\n\n", "\n".join(lines)))


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, else UTF-8, else cp1252 with replacement: never raises."""
    if charset:
        codec = _codec(charset)
        if codec is not None:
            try:
                return data.decode(codec)
            except (UnicodeError, LookupError, ValueError, TypeError):
                pass  # declared charset is wrong for these bytes: guess below
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return data.decode("cp1252", errors="replace")


def normalise_message_id(value: str) -> str | None:
    """A message id without spaces and angle brackets, or None when nothing is left."""
    cleaned = value.strip().strip("<>").strip()
    if not cleaned or _HAS_SPACE.search(cleaned):
        return None
    return _clean_text(cleaned)[:MAX_MESSAGE_ID_CHARS] or None


def _read_single_part(raw: bytes) -> Message | None:
    # The stdlib's BytesParser decodes like this too: undecodable bytes survive as surrogates.
    text = raw.decode("ascii", "surrogateescape")
    end = _HEADER_END.search(text)
    if end is None:
        block, body = text, ""
    else:
        block, body = text[: end.start() + len(end.group(1))], text[end.end() :]
    if "\r" in block and _LONE_CR.search(block):
        return None  # a bare CR ends a line for the stdlib parser but not for the patterns below
    shape = _HEADER_BLOCK.fullmatch(block)
    if shape is None:
        return None
    message = Message()
    if shape.group(1):
        message.set_unixfrom(shape.group(1).rstrip("\r\n"))
    set_raw = message.set_raw
    for name, value in _HEADER_FIELD.findall(block, shape.end(1)):
        set_raw(name, value.rstrip("\r\n"))
    if message.get_content_maintype() in ("multipart", "message"):
        return None
    message.set_payload(body)
    return message


# --- headers -------------------------------------------------------------------------------------


class _HeaderReader:
    """Decodes header values once, caps their size and remembers whether anything was cut."""

    def __init__(self, message: Message, max_chars: int) -> None:
        # One pass over the raw headers: Message.get scans the whole list on every call, and the
        # policy's fetch step (8-bit check, Header wrapping) is only worth doing for headers we read.
        self._raw: dict[str, str] = {}
        for name, value in message.raw_items():
            self._raw.setdefault(name.lower(), value)
        self._fetch = message.policy.header_fetch_parse
        self._max_chars = max_chars
        self.truncated = False

    def has(self, name: str) -> bool:
        """Whether the header is present at all."""
        return name.lower() in self._raw

    def _value(self, name: str) -> object:
        raw = self._raw.get(name.lower())
        return None if raw is None else self._fetch(name, raw)

    def raw(self, name: str) -> str | None:
        """The header as a string, encoded words still encoded (for address and id parsing)."""
        value = self._value(name)
        if value is None:
            return None
        if isinstance(value, Header):
            # compat32 hands back a Header when the raw value had 8-bit bytes.
            return self.cap(_decode_header_value(value))
        return self.cap(str(value))

    def text(self, name: str) -> str:
        """The header decoded to one line of text."""
        value = self._value(name)
        if value is None:
            return ""
        return self.cap(_WHITESPACE.sub(" ", _decode_header_value(value)).strip())

    def cap(self, value: str) -> str:
        """Cut a value to the header size limit."""
        if len(value) > self._max_chars:
            self.truncated = True
            return value[: self._max_chars]
        return value


def _decode_header_value(value: object) -> str:
    """Decode RFC 2047 words and raw 8-bit bytes, tolerating every malformation, in linear time.

    Not `email.header.decode_header` for text: it joins adjacent words by repeated bytes concatenation,
    quadratic in their number (thousands of encoded words took 72 s). A Header (8-bit raw bytes) still
    goes through it: for a Header it only lists the chunks.
    """
    if not isinstance(value, str):
        try:
            chunks = decode_header(value)  # type: ignore[arg-type]
        except Exception:  # a malformed header must not stop the run
            return _clean_text(str(value))
        return _clean_text(
            "".join(
                chunk if isinstance(chunk, str) else decode_bytes(chunk, charset) for chunk, charset in chunks
            )
        )
    if "=?" not in value:
        return _clean_text(value)
    pieces: list[str] = []
    run = bytearray()  # adjacent words in one charset: decoded together (a character may span two)
    run_charset: str | None = None
    position = 0
    for word in _ENCODED_WORD.finditer(value):
        between = value[position : word.start()]
        charset = word.group(1).split("*", 1)[0].lower()  # RFC 2231 language suffix: charset*lang
        # Whitespace between two encoded words is not part of the text (RFC 2047 §6.2).
        if between and not (between.isspace() and position > 0):
            if run:
                pieces.append(decode_bytes(bytes(run), run_charset))
                run.clear()
            pieces.append(between)
        elif run and charset != run_charset:
            pieces.append(decode_bytes(bytes(run), run_charset))
            run.clear()
        run_charset = charset
        run += _word_bytes(word.group(2), word.group(3))
        position = word.end()
    if run:
        pieces.append(decode_bytes(bytes(run), run_charset))
    pieces.append(value[position:])
    return _clean_text("".join(pieces))


def _word_bytes(encoding: str, text: str) -> bytes:
    data = text.encode("ascii", "surrogateescape")
    if encoding in "bB":
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return data
    return _QP_ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), data.replace(b"_", b" "))


def _sender(from_header: str | None) -> tuple[str | None, str | None]:
    if not from_header:
        return None, None
    simple = _SIMPLE_FROM.match(from_header)
    if simple:  # the common shapes, without the full RFC 5322 address parser
        name, address = (simple.group(1) or "").strip(), simple.group(2) or simple.group(3)
    else:
        name, address = parseaddr(from_header)
    decoded_name = _WHITESPACE.sub(" ", _decode_header_value(name)).strip().strip('"').strip() or None
    address = address.strip().lower()
    if "@" not in address or len(address) > 320 or _HAS_SPACE.search(address):
        return decoded_name, None
    return decoded_name, _clean_text(address)


def _first_message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = _MESSAGE_ID.search(value)
    return normalise_message_id(match.group(1) if match else value)


def _reply_keys(in_reply_to: str | None, references: str | None) -> tuple[str, ...]:
    keys: list[str] = []
    # References lists the oldest first; the newest are the likeliest to be stored already.
    for value, newest_last in ((in_reply_to, False), (references, True)):
        if not value:
            continue
        found = _MESSAGE_ID.findall(value) or value.split()
        for candidate in reversed(found) if newest_last else found:
            key = normalise_message_id(candidate)
            if key is not None and key not in keys:
                keys.append(key)
    return tuple(keys[:MAX_REPLY_KEYS])


def _sent_at(date_header: str | None, received_at: datetime) -> datetime:
    fallback = received_at.astimezone(UTC)
    if not date_header:
        return fallback
    try:
        sent = parsedate_to_datetime(date_header.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return fallback
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)  # "-0000": time zone unknown, RFC 5322 says treat as UTC
    try:
        sent = sent.astimezone(UTC)
    except (OverflowError, ValueError):
        return fallback
    if sent < EARLIEST_PLAUSIBLE_DATE or (sent - fallback).total_seconds() > MAX_DATE_SKEW_SECONDS:
        return fallback
    return sent


def _attributes(headers: _HeaderReader) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for key, name in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To"), ("list_id", "List-Id")):
        value = headers.text(name)
        if value:
            attributes[key] = value[:MAX_ATTRIBUTE_CHARS]
    precedence = headers.text("Precedence").lower()
    if precedence:
        attributes["precedence"] = precedence[:40]
    return attributes


def _skip_reason(message: Message, headers: _HeaderReader, sender: str | None, subject: str) -> str | None:
    auto_submitted = headers.text("Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"auto-reply (Auto-Submitted: {auto_submitted[:40]})"
    if headers.has("X-Autoreply"):
        return "auto-reply (X-Autoreply header)"
    if headers.has("X-Autorespond"):
        return "auto-reply (X-Autorespond header)"
    if headers.text("Precedence").lower() == "auto_reply":
        return "auto-reply (Precedence: auto_reply)"
    if message.get_content_type() == "multipart/report":
        report_type = str(message.get_param("report-type", "") or "").lower()
        if report_type == "delivery-status":
            return "bounce (delivery-status report)"
        if report_type == "disposition-notification":
            return "read receipt (disposition-notification report)"
    if headers.has("X-Failed-Recipients"):
        return "bounce (X-Failed-Recipients header)"
    if sender is not None and _BOUNCE_SENDER.match(sender) and _BOUNCE_SUBJECT.search(subject):
        return f"bounce (from {sender.split('@')[0]}: {subject[:80]})"
    return None


# --- bodies --------------------------------------------------------------------------------------


class _BodyState:
    """Text parts gathered so far; stops gathering once the body limit is reached."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.parts: list[str] = []
        self.length = 0
        self.truncated = False

    @property
    def full(self) -> bool:
        return self.length >= self.max_chars

    def add(self, text: str) -> None:
        if self.full:
            self.truncated = True
            return
        self.parts.append(text)
        self.length += len(text)


_MAX_DEPTH = 20  # nested multiparts deeper than this are hostile, not mail


def _collect(part: Message, body: _BodyState, attachments: list[Attachment], *, depth: int) -> None:
    if depth > _MAX_DEPTH:
        body.truncated = True
        return
    content_type = part.get_content_type()
    if part.is_multipart():
        children = _children(part)
        if content_type == "multipart/alternative":
            chosen = _choose_alternative(children)
            for child in children:
                if child is chosen:
                    _collect(child, body, attachments, depth=depth + 1)
                elif _is_attachment(child, child.get_content_type()):
                    attachments.append(_attachment(child, child.get_content_type()))
            return
        for child in children:
            _collect(child, body, attachments, depth=depth + 1)
        return
    if content_type.startswith("multipart/"):
        # A multipart whose boundary never appears: the parser leaves it as one text blob; keep it.
        body.add(_clean_text(_part_text(part)))
        return
    if _is_attachment(part, content_type):
        attachments.append(_attachment(part, content_type))
        return
    if content_type == "text/html":
        # Bound the work: markup is several times longer than its text, so cut well past the body limit.
        html = _part_text(part)
        if len(html) > MAX_HTML_BYTES:
            raise SkippableError(f"an HTML part of {len(html):,} characters (limit {MAX_HTML_BYTES:,})")
        limit = body.max_chars * 8
        if len(html) > limit:
            html, body.truncated = html[:limit], True
        body.add(html_to_text(html))
    else:
        body.add(_clean_text(_part_text(part)))


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [child for child in payload if isinstance(child, Message)]
    return []


def _choose_alternative(children: list[Message]) -> Message | None:
    """text/plain when it has words, else the richest part (RFC 2046: the last one)."""
    for child in children:
        is_plain = child.get_content_type() == "text/plain" and not _is_attachment(child, "text/plain")
        if is_plain and _part_text(child).strip():
            return child
    for child in reversed(children):
        content_type = child.get_content_type()
        if child.is_multipart() or (
            content_type.startswith("text/") and not _is_attachment(child, content_type)
        ):
            return child
    return None


def _is_attachment(part: Message, content_type: str) -> bool:
    if part.is_multipart():
        return False
    disposition = str(part.get("Content-Disposition", "") or "").split(";")[0].strip().lower()
    if disposition == "attachment":
        return True
    return content_type not in ("text/plain", "text/html")


def _attachment(part: Message, content_type: str) -> Attachment:
    filename: str | None
    try:
        raw_name = part.get_filename()
        filename = _decode_header_value(raw_name)[:255] if raw_name else None
    except Exception:  # odd RFC 2231 parameters must not stop the run
        filename = None
    data = _payload(part)
    if content_type in _ZIP_TYPES or (filename or "").lower().endswith(".zip"):
        _check_zip(data, filename)
    return Attachment(filename=filename or None, content_type=content_type, size=len(data))


def _check_zip(data: bytes, filename: str | None) -> None:
    """Refuse a zip attachment that would expand far beyond its size (a zip bomb), reading only its
    central directory: nothing is ever decompressed."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return  # not a readable zip: kept as an opaque attachment
    expanded = sum(entry.file_size for entry in entries)
    name = (filename or "zip attachment")[:80]
    if len(entries) > MAX_ZIP_ENTRIES:
        raise SkippableError(f"{name}: a zip of {len(entries):,} entries (limit {MAX_ZIP_ENTRIES:,})")
    if expanded > MAX_ZIP_EXPANDED_BYTES or (expanded > 10_000_000 and expanded > MAX_ZIP_RATIO * len(data)):
        raise SkippableError(
            f"{name}: a zip bomb ({len(data):,} bytes declaring {expanded:,} bytes unpacked)"
        )


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # broken transfer encodings fall back to the raw payload
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")  # the original bytes: ASCII plus escaped 8-bit
    return b""


def _part_text(part: Message) -> str:
    # A pattern instead of get_content_charset(): that parses every parameter and is a fifth of the
    # cost of a parse. RFC 2231 forms (charset*=) are rare for charset and fall back to guessing.
    content_type = part.get("Content-Type")
    found = _CHARSET.search(content_type) if isinstance(content_type, str) else None
    return decode_bytes(_payload(part), found.group(1) if found else None)


def _codec(charset: str) -> str | None:
    name = charset.strip().strip("\"'").lower()
    if name in ("unknown-8bit", "x-unknown", "unknown", "default", ""):
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # codecs also knows bytes-to-bytes transforms (base64, zlib, rot13): those are not charsets.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _clean_text(text: str) -> str:
    """Unify line ends and drop what a database or a page cannot hold (NUL, lone surrogates)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.strip()


__all__ = ["decode_bytes", "html_to_text", "normalise_message_id", "parse_email"]
