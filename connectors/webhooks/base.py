"""The small interface every form or chat tool's web hook follows, and the parts they share.

An adapter does three things, each on its own: verify a request over its raw bytes (the tool's own
signature scheme, a constant-time compare, the tool's timestamp window), split it into events each named
by the key that dedupes it, and, later and in a worker, map one stored event to an `EnquiryIn`. The hook
route stores the events before it answers; mapping happens when the pipeline reads them, so a payload
that verifies but cannot be mapped is quarantined with the reason instead of lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from config.hook_mappings import HookFieldMapping, MappedFields
from connectors.bounded_json import load_json
from connectors.forms import EMAIL_PATTERN
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

# Every tool here that signs a timestamp tells receivers to refuse requests older than five minutes.
REPLAY_WINDOW = timedelta(minutes=5)
MAX_TEXT_CHARS = 20_000


class SignatureRejected(Exception):
    """The request is not from the tool (wrong or missing signature), or is a stale replay."""


@dataclass(frozen=True, slots=True)
class HookRequest:
    """What a signature can cover: the method, the URL the tool called, the headers and the raw body."""

    method: str
    url: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "").strip()


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One event of a request: the bytes to store and the key that makes a re-delivery a duplicate."""

    key: str
    payload: bytes
    needs_fetch: bool = False  # the event names a record by id only (HubSpot): fetched before mapping


class WebhookAdapter(Protocol):
    """One form or chat tool's web hook."""

    @property
    def tool(self) -> str:
        """The tool's name in the route and the secret's key: /hooks/{tool}/{source}."""
        ...

    @property
    def channel(self) -> Channel: ...

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        """Raise SignatureRejected unless the tool signed this request with `secret` (within its window)."""
        ...

    def events(self, request: HookRequest) -> list[HookEvent]:
        """The events a verified request carries; raise SkippableError when it carries none we can key."""
        ...

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        """Map one stored event; raise SkippableError naming the tool when it cannot be mapped."""
        ...


def one_event(body: bytes, key: str) -> list[HookEvent]:
    """A request that is one event: keyed by the tool's id, or by the body's hash when it names none."""
    return [HookEvent(key=key[:200] or body_key(body), payload=body)]


def body_key(body: bytes) -> str:
    return "body:" + hashlib.sha256(body).hexdigest()[:32]


def hmac_hex(secret: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, digest).hexdigest()


def hmac_base64(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def require_equal(expected: str, given: str, what: str) -> None:
    """Constant-time compare of a computed signature with the one the request carries."""
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureRejected(f"missing or wrong {what}")


def require_fresh(timestamp: str, now: datetime, *, what: str, unit_seconds: float) -> None:
    """Refuse a timestamp outside the replay window (either side: a clock ahead is as suspect)."""
    if not timestamp.isdigit() or len(timestamp) > 16:
        raise SignatureRejected(f"missing or malformed {what}")
    sent = datetime.fromtimestamp(int(timestamp) * unit_seconds, tz=UTC)
    if abs(now - sent) > REPLAY_WINDOW:
        raise SignatureRejected(f"{what} is more than 5 minutes from now: a stale or replayed request")


def json_object(data: bytes, *, tool: str) -> dict[str, Any]:
    value = load_json(data, tool=tool)
    if not isinstance(value, dict):
        raise SkippableError(f"{tool}: payload must be a JSON object, got {type(value).__name__}")
    return value


def as_dict(value: Any) -> dict[str, Any]:
    """The value if it is a JSON object, else an empty one: payloads are untrusted, any field may be wrong."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text_value(value: Any) -> str | None:
    """A field's value as text for an enquiry: lists joined, objects left out, length capped."""
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, list):
        parts = [text_value(item) for item in value]
        value = ", ".join(part for part in parts if part)
    text = str(value).strip()
    return text[:MAX_TEXT_CHARS] or None


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string or a Unix time (seconds or, when large, milliseconds), as an aware datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 10**11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def canonical(value: Any) -> bytes:
    """Stable bytes for one event cut out of a request that carries several (HubSpot sends arrays)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def form_enquiry(
    fields: MappedFields,
    *,
    tool: str,
    source: str,
    received_at: datetime,
    message_key: str | None,
    form_name: str | None,
) -> EnquiryIn:
    """The enquiry a form tool's submission becomes, once its fields are mapped."""
    if not fields.message and not fields.email:
        raise SkippableError(
            f"{tool}: the submission has neither a message nor an e-mail field this source's mapping "
            f"recognises (fields: {', '.join(sorted(fields.extra)) or 'none'})"
        )
    attributes = {key: value[:500] for key, value in fields.extra.items()}
    attributes["tool"] = tool
    if form_name:
        attributes["form_id"] = form_name[:200]
    if fields.company:
        attributes["company"] = fields.company[:300]
    return EnquiryIn(
        channel=Channel.FORM,
        source=source,
        message_key=message_key,
        received_at=received_at,
        sender_email=valid_email(fields.email),
        sender_name=fields.name,
        company_hint=fields.company,
        phone=fields.phone,
        subject=fields.subject or (f"Form: {form_name}" if form_name else f"{tool} form"),
        body=fields.message or "",
        attributes=attributes,
    )


def valid_email(value: str | None) -> str | None:
    if value and len(value) <= 320 and EMAIL_PATTERN.match(value.strip()):
        return value.strip().lower()
    return None


def chat_enquiry(
    *,
    tool: str,
    source: str,
    conversation: str,
    message_id: str,
    sent_at: datetime,
    text: str,
    email: str | None,
    name: str | None,
    subject: str | None,
    attributes: dict[str, str],
) -> EnquiryIn:
    """One customer message of a chat tool's conversation; later ones thread on by `thread_key`."""
    if not text.strip():
        raise SkippableError(f"{tool}: the customer's message has no text")
    key = f"{tool}:{conversation}#{message_id}"
    first_line = text.strip().splitlines()[0]
    return EnquiryIn(
        channel=Channel.CHAT,
        source=source,
        message_key=key,
        thread_key=f"{tool}:{conversation}",
        received_at=sent_at,
        sender_email=valid_email(email),
        sender_name=name,
        subject=(subject or first_line)[:120],
        body=text[:MAX_TEXT_CHARS],
        attributes={
            **attributes,
            "tool": tool,
            "conversation_id": conversation,
            "message_keys": json.dumps(
                [[key, sent_at.isoformat(), text[:MAX_TEXT_CHARS]]], ensure_ascii=False
            ),
        },
    )
