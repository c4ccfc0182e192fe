"""HubSpot: app web hooks signed with `X-HubSpot-Signature-v3`, and the contacts they name by id.

The signature is base64 HMAC-SHA256(client secret, method + URI + body + timestamp), with
`X-HubSpot-Request-Timestamp` in milliseconds and a five-minute window. The URI is the one HubSpot
called: behind a proxy, set `TRIAGE_HOOKS__PUBLIC_URL` so it can be rebuilt. One request carries an
array of events, each with its own `eventId` (the dedupe key). Events carry ids only: a
`contact.creation` event is stored, then `pipeline/hook_fetches.py` reads the contact through
`HubSpotClient` (batched, retried like the CRM) and stores what it read as the record the pipeline maps.
Other subscription types are stored and recorded as skipped, with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from config.hook_mappings import HookFieldMapping, PayloadField
from connectors.webhooks.base import (
    HookEvent,
    HookRequest,
    as_dict,
    body_key,
    canonical,
    form_enquiry,
    hmac_base64,
    json_object,
    load_json,
    parse_time,
    require_equal,
    require_fresh,
    text_value,
)
from models.errors import FatalError, RetriableError, SkippableError
from models.records import Channel, EnquiryIn

TOOL = "hubspot"
FETCHED_TYPES = ("contact.creation",)
MAX_EVENTS_PER_REQUEST = 100  # HubSpot sends at most 100 events in one request
DEFAULT_PROPERTIES = ("email", "firstname", "lastname", "company", "phone", "message", "jobtitle", "website")


class HubSpotAdapter:
    tool = TOOL
    channel = Channel.FORM

    def verify(self, request: HookRequest, secret: str, now: datetime) -> None:
        timestamp = request.header("X-HubSpot-Request-Timestamp")
        require_fresh(timestamp, now, what="X-HubSpot-Request-Timestamp", unit_seconds=0.001)
        message = request.method.upper().encode() + request.url.encode() + request.body + timestamp.encode()
        require_equal(
            hmac_base64(secret, message), request.header("X-HubSpot-Signature-v3"), "X-HubSpot-Signature-v3"
        )

    def events(self, request: HookRequest) -> list[HookEvent]:
        try:
            data = load_json(request.body, tool=TOOL)
        except SkippableError:
            data = None
        if not isinstance(data, list) or not data or len(data) > MAX_EVENTS_PER_REQUEST:
            return [HookEvent(key=body_key(request.body), payload=request.body)]
        events = []
        for event in data:
            payload = canonical(event)
            event_id = str(event.get("eventId") or "")[:100] if isinstance(event, dict) else ""
            fetch = isinstance(event, dict) and event.get("subscriptionType") in FETCHED_TYPES
            events.append(
                HookEvent(
                    key=f"event:{event_id}" if event_id else body_key(payload),
                    payload=payload,
                    needs_fetch=bool(fetch and event_id and event.get("objectId")),
                )
            )
        return events

    def to_enquiry(
        self, payload: bytes, fields: HookFieldMapping, *, source: str, received_at: datetime
    ) -> EnquiryIn:
        data = load_json(payload, tool=TOOL)
        if isinstance(data, dict) and "subscriptionType" in data:  # an event stored as it came
            kind = str(data.get("subscriptionType"))[:60]
            return EnquiryIn(
                channel=Channel.FORM,
                source=source,
                received_at=received_at,
                skip_reason=f"HubSpot: a {kind} event; only {', '.join(FETCHED_TYPES)} opens an enquiry",
            )
        if not isinstance(data, dict) or not isinstance(data.get("event"), dict):
            raise SkippableError(f"{TOOL}: the payload is neither an event nor a fetched contact")
        event, contact = data["event"], data.get("contact")
        if not isinstance(contact, dict):
            raise SkippableError(
                f"{TOOL}: contact {str(event.get('objectId'))[:30]} could not be read: "
                f"{str(data.get('error') or 'not found')[:300]}"
            )
        properties = as_dict(contact.get("properties"))
        answers: list[PayloadField] = [
            ((str(name)[:100],), text) for name, value in properties.items() if (text := text_value(value))
        ]
        return form_enquiry(
            fields.pick(answers),
            tool=TOOL,
            source=source,
            received_at=parse_time(event.get("occurredAt")) or received_at,
            message_key=f"{TOOL}:contact:{str(contact.get('id') or event.get('objectId'))[:50]}",
            form_name="HubSpot contact",
        )


def fetched_payload(event: bytes, contact: dict[str, Any] | None, error: str | None = None) -> bytes:
    """What the fetch stores for an event: the event, and the contact read (or why it could not be)."""
    return canonical({"event": json_object(event, tool=TOOL), "contact": contact, "error": error})


class HubSpotClient:
    """HubSpot's CRM API, only as far as the hooks need it: read contacts by id, in batches of 100."""

    def __init__(
        self,
        *,
        access_token: str,
        base_url: str,
        properties: Sequence[str] = DEFAULT_PROPERTIES,
        timeout_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._properties = list(properties)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=timeout_seconds,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def read_contacts(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Contact id → the contact, for the ids HubSpot knows (a missing one is left out, not an error).

        Raises RetriableError on a timeout, a refused connection, 429 or 5xx, FatalError when the token
        is refused: the events wait in either case, and `triage status` shows why."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            chunk = list(dict.fromkeys(ids[start : start + 100]))
            try:
                response = self._http.post(
                    "/crm/v3/objects/contacts/batch/read",
                    json={"properties": self._properties, "inputs": [{"id": i} for i in chunk]},
                )
            except httpx.TransportError as error:
                raise RetriableError(f"HubSpot unreachable: {error.__class__.__name__}: {error}") from error
            if response.status_code in (401, 403):
                raise FatalError(
                    f"HubSpot refused the access token ({response.status_code}): {response.text[:300]}"
                )
            if response.status_code == 429 or response.status_code >= 500:
                raise RetriableError(f"HubSpot answered {response.status_code}: {response.text[:300]}")
            if response.status_code not in (200, 207):
                raise FatalError(f"HubSpot answered {response.status_code}: {response.text[:300]}")
            for result in response.json().get("results", []):
                if isinstance(result, dict) and result.get("id") is not None:
                    found[str(result["id"])] = result
        return found
