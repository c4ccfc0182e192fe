"""Webflow `form_submission` events: `x-webflow-signature` = hex HMAC-SHA256 of "{timestamp}:{body}".

`x-webflow-timestamp` is in milliseconds; requests more than five minutes away are refused, as
Webflow's documentation asks. The fields arrive keyed by their label (`payload.data`); the submission's
`id` dedupes a re-delivery.
"""

from __future__ import annotations

from datetime import datetime

from config.hook_mappings import HookFieldMapping, PayloadField
from connectors.webhooks.base import (
    HookEvent,
    HookRequest,
    as_dict,
    form_enquiry,
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

TOOL = "webflow"


class WebflowAdapter:
    tool = TOOL
    channel = Channel.FORM

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        timestamp = request.header("x-webflow-timestamp")
        require_fresh(timestamp, now, what="x-webflow-timestamp", unit_seconds=0.001)
        expected = hmac_hex(secret, timestamp.encode() + b":" + request.body)
        require_equal(expected, request.header("x-webflow-signature"), "x-webflow-signature")

    def events(self, request: HookRequest) -> list[HookEvent]:
        try:
            submission = as_dict(json_object(request.body, tool=TOOL).get("payload"))
        except SkippableError:
            return one_event(request.body, "")
        return one_event(request.body, str(submission.get("id") or ""))

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        data = json_object(payload, tool=TOOL)
        if data.get("triggerType") != "form_submission":
            raise SkippableError(
                f"{TOOL}: triggerType {str(data.get('triggerType'))[:40]!r} is not a form submission"
            )
        submission = data.get("payload")
        if not isinstance(submission, dict) or not isinstance(submission.get("data"), dict):
            raise SkippableError(f"{TOOL}: payload.data is missing or not an object")
        answers: list[PayloadField] = []
        for label, value in submission["data"].items():
            text = text_value(value)
            if text:
                answers.append(((str(label)[:200],), text))
        return form_enquiry(
            fields.pick(answers),
            tool=TOOL,
            source=source,
            received_at=parse_time(submission.get("submittedAt")) or received_at,
            message_key=f"{TOOL}:{str(submission.get('id') or '')[:200]}",
            form_name=str(submission.get("name") or "") or None,
        )
