"""Web hooks: the tools' own (Typeform, Webflow, HubSpot, Intercom, Chatwoot) and our documented JSON.

`POST /hooks/{tool}/{source}` takes a tool's web hook as that tool sends and signs it
(connectors/webhooks/): the signature is checked over the raw bytes, the events it carries are stored
under their dedupe keys, and only then does it answer 200. Mapping the payload to an enquiry happens in
the pipeline, so a verified payload that cannot be mapped is quarantined with the reason, never lost.
The secret is `TRIAGE_HOOKS__SECRETS='{"typeform:website-demo": "..."}'`.

For our own shapes, each source has its own HMAC-SHA256 secret
(`TRIAGE_HOOKS__SECRETS='{"form:contact": "...", "chat:webchat": "..."}'`); the sender sends
`X-Triage-Timestamp: <unix seconds>` and `X-Triage-Signature: sha256=<hex HMAC of "{timestamp}." + the
exact body bytes>`, so a captured request replays for 5 minutes at most. The record is stored before we
answer, and the intake flow processes it; the same submission delivered twice is stored once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from config.settings import Settings
from connectors.chat import ChatTranscript
from connectors.forms import FormSubmission, validation_problems
from connectors.webhooks import ADAPTERS
from connectors.webhooks.base import (
    HookRequest,
    SignatureRejected,
    hmac_hex,
    load_json,
    require_equal,
    require_fresh,
)
from models.errors import SkippableError
from models.records import Channel, RawRecordIn
from store.deliveries import Delivery, DeliveryWriter

router = APIRouter(prefix="/hooks", tags=["hooks"])
SIGNATURE_HEADER = "X-Triage-Signature"
TIMESTAMP_HEADER = "X-Triage-Timestamp"


def sign(secret: str, body: bytes, timestamp: str) -> str:
    """The signature header value a sender must send for `body` sent at `timestamp` (unix seconds)."""
    return "sha256=" + hmac_hex(secret, timestamp.encode() + b"." + body)


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """Both headers a sender of our own format adds: what a client library of ours would do."""
    timestamp = str(int(now.timestamp()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, body, timestamp)}


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
    return bytes(body)


def _verify(request: Request, source_key: str, body: bytes) -> None:
    settings: Settings = request.app.state.settings
    secret = settings.hooks.secrets.get(source_key)
    if secret is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no hook configured for {source_key!r}")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    try:
        require_fresh(timestamp, request.app.state.clock(), what=TIMESTAMP_HEADER, unit_seconds=1)
        require_equal(sign(secret.get_secret_value(), body, timestamp), signature.strip(), SIGNATURE_HEADER)
    except SignatureRejected as error:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{source_key}: {error}") from error


def _store(request: Request, delivery: Delivery) -> int:
    """Store the delivery (in a worker thread: a commit never holds up the event loop); returns how many
    of its records are new (0: all were stored before, a re-delivery)."""
    writer: DeliveryWriter = request.app.state.delivery_writer
    return writer.store(delivery)


def _accepted(source: str, key: str, stored: bool) -> JSONResponse:
    return JSONResponse(
        {"accepted": True, "duplicate": not stored, "source": source, "key": key},
        status_code=status.HTTP_202_ACCEPTED,
    )


def _problem(error: HTTPException) -> JSONResponse:
    # Hook callers are programs: always JSON, whatever the page routes do with errors.
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)


@router.post("/forms/{form_id}", status_code=status.HTTP_202_ACCEPTED)
async def form_hook(form_id: str, request: Request) -> JSONResponse:
    """A form post as JSON or application/x-www-form-urlencoded (schema: connectors.forms.FormSubmission)."""
    try:
        return await _form(form_id, request)
    except HTTPException as error:
        return _problem(error)


@router.post("/chat/{chat_source}", status_code=status.HTTP_202_ACCEPTED)
async def chat_hook(chat_source: str, request: Request) -> JSONResponse:
    """A chat transcript as JSON (schema: connectors.chat.ChatTranscript); later deliveries thread on."""
    try:
        return await _chat(chat_source, request)
    except HTTPException as error:
        return _problem(error)


async def _form(form_id: str, request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    body = await _read_capped(request, settings.hooks.max_body_bytes)
    _verify(request, f"form:{form_id}", body)
    data = _decode_form(request.headers.get("content-type", ""), body)
    data.setdefault("form_id", form_id)
    try:
        submission = FormSubmission.model_validate(data)
    except ValidationError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, validation_problems(error)) from error
    payload = json.dumps(submission.model_dump(mode="json", exclude_none=True), ensure_ascii=False).encode()
    key = submission.submission_id or hashlib.sha256(payload).hexdigest()[:32]
    return await _store_one(request, f"hook:form:{form_id}", Channel.FORM, key, payload)


async def _chat(chat_source: str, request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    body = await _read_capped(request, settings.hooks.max_body_bytes)
    _verify(request, f"chat:{chat_source}", body)
    data = _json_body(body)
    try:
        transcript = ChatTranscript.model_validate(data)
    except ValidationError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, validation_problems(error)) from error
    payload = json.dumps(transcript.model_dump(mode="json"), ensure_ascii=False).encode()
    # The same conversation with more messages is a new record (it threads); an identical resend is not.
    key = f"{transcript.conversation_id}:{hashlib.sha256(payload).hexdigest()[:16]}"
    return await _store_one(request, f"hook:chat:{chat_source}", Channel.CHAT, key, payload)


async def _store_one(
    request: Request, source: str, channel: Channel, key: str, payload: bytes
) -> JSONResponse:
    record = RawRecordIn(
        source=source,
        channel=channel,
        external_key=key,
        payload=payload,
        received_at=request.app.state.clock(),
    )
    delivery = Delivery(source=source, records=[record], fetches=[], received_at=record.received_at)
    return _accepted(source, key, await run_in_threadpool(_store, request, delivery) == 1)


def _json_body(body: bytes) -> Any:
    """Bounded JSON (nesting and integer digits capped, as for the tools' hooks): a 422, never a 500."""
    try:
        return load_json(body, tool="body")
    except SkippableError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error


@router.post("/{tool}/{source_name}")
async def tool_hook(tool: str, source_name: str, request: Request) -> JSONResponse:
    """A form or chat tool's own web hook, e.g. /hooks/typeform/website-demo (docs/sources/)."""
    try:
        return await _tool_hook(tool, source_name, request)
    except HTTPException as error:
        return _problem(error)


async def _tool_hook(tool: str, source_name: str, request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    adapter = ADAPTERS.get(tool)
    if adapter is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no such tool {tool[:40]!r} (tools: {', '.join(sorted(ADAPTERS))})"
        )
    secret = settings.hooks.secrets.get(f"{tool}:{source_name}")
    if secret is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no hook configured for {tool}:{source_name[:100]!r}")
    body = await _read_capped(request, settings.hooks.max_body_bytes)
    hook_request = HookRequest(
        method=request.method,
        url=_called_url(settings, request),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
    )
    now = request.app.state.clock()
    try:
        adapter.verify(hook_request, secret.get_secret_value(), now)
    except SignatureRejected as error:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{tool}:{source_name}: {error}") from error
    events = adapter.events(hook_request)
    source = f"hook:{tool}:{source_name}"
    direct = [
        RawRecordIn(
            source=source, channel=adapter.channel, external_key=e.key, payload=e.payload, received_at=now
        )
        for e in events
        if not e.needs_fetch
    ]
    to_fetch = [(e.key, e.payload) for e in events if e.needs_fetch]
    delivery = Delivery(source=source, records=direct, fetches=to_fetch, received_at=now)
    new = await run_in_threadpool(_store, request, delivery)
    return JSONResponse(
        {"accepted": len(events), "new": new, "duplicates": len(events) - new, "source": source},
        status_code=status.HTTP_200_OK,
    )


def _called_url(settings: Settings, request: Request) -> str:
    """The URL as the tool called it: the public base when a proxy rewrote scheme and host."""
    if settings.hooks.public_url:
        query = f"?{request.url.query}" if request.url.query else ""
        return settings.hooks.public_url.rstrip("/") + request.url.path + query
    return str(request.url)


def _decode_form(content_type: str, body: bytes) -> dict[str, Any]:
    if content_type.startswith("application/x-www-form-urlencoded"):
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError as error:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body: not UTF-8") from error
    data = _json_body(body)
    if not isinstance(data, dict):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body: must be a JSON object")
    return data
