"""Typeform: `form_response` events, signed `Typeform-Signature: sha256=<base64 HMAC-SHA256(body)>`.

Answers are matched to our fields by their field's `ref`, then the question's title (a form built
without readable refs still maps by its labels). Hidden fields (UTM tags and the like) are kept as
attributes. Typeform re-sends an event until it gets a 2xx; the response token names the submission,
so a re-delivery is a duplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from config.hook_mappings import HookFieldMapping, PayloadField
from connectors.webhooks.base import (
    HookEvent,
    HookRequest,
    as_dict,
    form_enquiry,
    hmac_base64,
    json_object,
    one_event,
    parse_time,
    require_equal,
    text_value,
)
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

TOOL = "typeform"


def _answer_value(answer: dict[str, Any]) -> str | None:
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) else None
    if kind == "choice" and isinstance(value, dict):
        return text_value(value.get("label") or value.get("other"))
    if kind == "choices" and isinstance(value, dict):
        labels = value.get("labels") or []
        return text_value([*labels, value["other"]] if value.get("other") else labels)
    return text_value(value)


class TypeformAdapter:
    tool = TOOL
    channel = Channel.FORM

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        require_equal(
            "sha256=" + hmac_base64(secret, request.body),
            request.header("Typeform-Signature"),
            "Typeform-Signature",
        )

    def events(self, request: HookRequest) -> list[HookEvent]:
        try:
            data = json_object(request.body, tool=TOOL)
        except SkippableError:
            return one_event(request.body, "")
        response = as_dict(data.get("form_response"))
        return one_event(request.body, str(response.get("token") or data.get("event_id") or ""))

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        data = json_object(payload, tool=TOOL)
        if data.get("event_type") != "form_response":
            raise SkippableError(
                f"{TOOL}: event_type {str(data.get('event_type'))[:40]!r} is not a form response"
            )
        response = data.get("form_response")
        if not isinstance(response, dict) or not isinstance(response.get("answers", []), list):
            raise SkippableError(f"{TOOL}: form_response.answers is missing or not a list")
        definition = as_dict(response.get("definition"))
        titles = {
            str(field.get("id")): str(field.get("title") or "")
            for field in definition.get("fields", [])
            if isinstance(field, dict)
        }
        answers: list[PayloadField] = []
        for answer in response.get("answers") or []:
            if not isinstance(answer, dict) or not isinstance(answer.get("field"), dict):
                continue
            field = answer["field"]
            value = _answer_value(answer)
            if value is None:
                continue
            names = tuple(n for n in (str(field.get("ref") or ""), titles.get(str(field.get("id")), "")) if n)
            answers.append((names or (str(field.get("id")),), value))
        hidden = as_dict(response.get("hidden"))
        for name, value in hidden.items():
            text = text_value(value)
            if text:
                answers.append(((f"hidden.{name}",), text))
        token = str(response.get("token") or data.get("event_id") or "")[:200]
        return form_enquiry(
            fields.pick(answers),
            tool=TOOL,
            source=source,
            received_at=parse_time(response.get("submitted_at")) or received_at,
            message_key=f"{TOOL}:{token}",
            form_name=str(definition.get("title") or response.get("form_id") or "") or None,
        )
