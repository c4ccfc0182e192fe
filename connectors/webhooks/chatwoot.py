"""Chatwoot (self-hosted): `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{ts}.{body}")>`.

`X-Chatwoot-Timestamp` is in seconds and must be within five minutes. `X-Chatwoot-Delivery` stays the
same when Chatwoot retries a delivery, so it is the key that makes a re-delivery a duplicate. Read:
`message_created` for an incoming (customer) message, which opens the conversation's enquiry or threads
onto it, and `conversation_created` with its first customer message. An agent's outgoing message or a
private note is recorded as skipped, with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.hook_mappings import HookFieldMapping
from connectors.webhooks.base import (
    HookEvent,
    HookRequest,
    as_dict,
    as_list,
    chat_enquiry,
    hmac_hex,
    json_object,
    one_event,
    parse_time,
    require_equal,
    require_fresh,
    text_value,
)
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

TOOL = "chatwoot"
EVENTS = ("message_created", "conversation_created")


class ChatwootAdapter:
    tool = TOOL
    channel = Channel.CHAT

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        timestamp = request.header("X-Chatwoot-Timestamp")
        require_fresh(timestamp, now, what="X-Chatwoot-Timestamp", unit_seconds=1)
        expected = "sha256=" + hmac_hex(secret, timestamp.encode() + b"." + request.body)
        require_equal(expected, request.header("X-Chatwoot-Signature"), "X-Chatwoot-Signature")

    def events(self, request: HookRequest) -> list[HookEvent]:
        delivery = request.header("X-Chatwoot-Delivery")
        return one_event(request.body, f"delivery:{delivery}" if delivery else "")

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        data = json_object(payload, tool=TOOL)
        event = data.get("event")
        if event not in EVENTS:
            raise SkippableError(
                f"{TOOL}: event {str(event)[:60]!r} is not one we read ({', '.join(EVENTS)})"
            )
        conversation = as_dict(data.get("conversation")) if event == "message_created" else data
        message = data if event == "message_created" else _first_incoming(conversation)
        if message is None:
            return _skipped(
                source, received_at, "Chatwoot: a conversation opened without a customer message yet"
            )
        if message.get("message_type") not in ("incoming", 0) or message.get("private"):
            return _skipped(
                source, received_at, "Chatwoot: an agent's message or a private note, not the customer's"
            )
        account = str(as_dict(data.get("account")).get("id") or "")[:50]
        conversation_id = str(conversation.get("id") or conversation.get("display_id") or "")[:100]
        if not conversation_id:
            raise SkippableError(f"{TOOL}: the message names no conversation")
        sender = as_dict(message.get("sender")) or as_dict(as_dict(conversation.get("meta")).get("sender"))
        inbox = as_dict(data.get("inbox")) or as_dict(conversation.get("inbox"))
        return chat_enquiry(
            tool=TOOL,
            source=source,
            conversation=f"{account}-{conversation_id}" if account else conversation_id,
            message_id=str(message.get("id") or "first")[:100],
            sent_at=parse_time(message.get("created_at")) or received_at,
            text=text_value(message.get("content")) or "",
            email=text_value(sender.get("email")),
            name=text_value(sender.get("name")),
            subject=None,
            attributes={"event": str(event), "inbox": str(inbox.get("name") or "")[:200]},
        )


def _first_incoming(conversation: dict[str, Any]) -> dict[str, Any] | None:
    messages = as_list(conversation.get("messages"))
    for message in messages:
        if (
            isinstance(message, dict)
            and message.get("message_type") in ("incoming", 0)
            and message.get("content")
        ):
            return message
    return None


def _skipped(source: str, received_at: datetime, reason: str) -> EnquiryIn:
    return EnquiryIn(channel=Channel.CHAT, source=source, received_at=received_at, skip_reason=reason)
