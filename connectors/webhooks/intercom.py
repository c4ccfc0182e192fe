"""Intercom: notifications signed `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>`.

Topics read: `conversation.user.created` (a customer opens a conversation), `conversation.user.replied`
(they write again: threads onto the enquiry the conversation opened) and `contact.lead.created` (a new
lead in the Messenger). Every notification has its own `id`, which Intercom keeps when it retries, so a
re-delivery is a duplicate. Intercom signs no timestamp, so it has no replay window; a replayed body is
still only a duplicate. Message bodies are HTML and are reduced to text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.hook_mappings import HookFieldMapping
from connectors.mime import html_to_text
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
    text_value,
)
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

TOOL = "intercom"
CUSTOMER_AUTHORS = {"user", "lead", "contact"}
TOPICS = ("conversation.user.created", "conversation.user.replied", "contact.lead.created")


def _text(html: Any) -> str:
    return html_to_text(str(html)[:200_000]) if html else ""


class IntercomAdapter:
    tool = TOOL
    channel = Channel.CHAT

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        expected = "sha1=" + hmac_hex(secret, request.body, "sha1")
        require_equal(expected, request.header("X-Hub-Signature"), "X-Hub-Signature")

    def events(self, request: HookRequest) -> list[HookEvent]:
        try:
            notification = json_object(request.body, tool=TOOL)
        except SkippableError:
            return one_event(request.body, "")
        return one_event(request.body, str(notification.get("id") or ""))

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        data = json_object(payload, tool=TOOL)
        topic = data.get("topic")
        item = as_dict(data.get("data")).get("item")
        if topic not in TOPICS:
            raise SkippableError(
                f"{TOOL}: topic {str(topic)[:60]!r} is not one we read ({', '.join(TOPICS)})"
            )
        if not isinstance(item, dict):
            raise SkippableError(f"{TOOL}: data.item is missing or not an object")
        if topic == "contact.lead.created":
            return self._lead(item, source=source, received_at=received_at)
        conversation = str(item.get("id") or "")[:200]
        if not conversation:
            raise SkippableError(f"{TOOL}: the conversation has no id")
        first = as_dict(item.get("source"))
        author = as_dict(first.get("author"))
        if topic == "conversation.user.created":
            message_id, body, sent = (
                str(first.get("id") or "source"),
                first.get("body"),
                item.get("created_at"),
            )
        else:
            part = _last_customer_part(item)
            message_id, body, sent = str(part.get("id") or ""), part.get("body"), part.get("created_at")
            if isinstance(part.get("author"), dict):
                author = part["author"]
        return chat_enquiry(
            tool=TOOL,
            source=source,
            conversation=conversation,
            message_id=message_id[:200],
            sent_at=parse_time(sent) or received_at,
            text=_text(body),
            email=text_value(author.get("email")),
            name=text_value(author.get("name")),
            subject=text_value(_text(first.get("subject"))),
            attributes={"topic": str(topic)},
        )

    def _lead(self, item: dict[str, Any], *, source: str, received_at: datetime) -> EnquiryIn:
        contact = str(item.get("id") or "")[:200]
        custom = as_dict(item.get("custom_attributes"))
        details = [f"{key}: {text_value(value)}" for key, value in custom.items() if text_value(value)]
        return chat_enquiry(
            tool=TOOL,
            source=source,
            conversation=f"contact-{contact}",
            message_id="lead",
            sent_at=parse_time(item.get("created_at")) or received_at,
            text="\n".join(["A new lead in the Intercom Messenger.", *details]),
            email=text_value(item.get("email")),
            name=text_value(item.get("name")),
            subject="New Intercom lead",
            attributes={"topic": "contact.lead.created", "intercom_contact_id": contact},
        )


def _last_customer_part(item: dict[str, Any]) -> dict[str, Any]:
    parts_list = as_dict(item.get("conversation_parts"))
    parts = as_list(parts_list.get("conversation_parts"))
    for part in reversed(parts):
        fields = as_dict(part)
        if as_dict(fields.get("author")).get("type") in CUSTOMER_AUTHORS and fields.get("body"):
            return fields
    raise SkippableError(f"{TOOL}: conversation.user.replied carries no customer message part")
