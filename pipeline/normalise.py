"""Raw record → normalised enquiry, whatever the channel; plus the keys dedupe and threading use."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from config.hook_mappings import HookMappings
from connectors.chat import parse_chat_payload, transcript_to_enquiry
from connectors.forms import form_to_enquiry, parse_form_payload
from connectors.mime import parse_email
from connectors.webhooks import adapter_for_source
from models.records import Channel, EnquiryIn
from store.raw import PendingRecord

_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|rif|tr|r)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
ENQUIRY_NAMESPACE = uuid.UUID("5b1f3f0e-7f0a-4d5e-9a43-2f1d2b7e9c11")


class RawPayload(NamedTuple):
    """What normalising needs of a raw record: small and picklable, for worker processes."""

    channel: str
    payload: bytes
    source: str
    received_at: datetime
    time_shift_seconds: int | None = None


def normalise_payload(
    item: RawPayload, *, max_body_chars: int, hook_mappings: HookMappings | None = None
) -> EnquiryIn:
    """Interpret a stored raw record. Raises SkippableError (→ quarantine) with the reason."""
    channel = Channel(item.channel)
    adapter = adapter_for_source(item.source)
    if adapter is not None:  # a form or chat tool's own web hook: 'hook:{tool}:{source}'
        _, tool, name = item.source.split(":", 2)
        enquiry = adapter.to_enquiry(
            item.payload,
            (hook_mappings or HookMappings()).for_source(tool, name),
            source=item.source,
            received_at=item.received_at,
        )
    elif channel is Channel.EMAIL:
        enquiry = parse_email(
            item.payload, source=item.source, received_at=item.received_at, max_body_chars=max_body_chars
        )
    elif channel is Channel.FORM:
        enquiry = form_to_enquiry(
            parse_form_payload(item.payload), source=item.source, received_at=item.received_at
        )
    else:
        enquiry = transcript_to_enquiry(
            parse_chat_payload(item.payload), source=item.source, received_at=item.received_at
        )
    if item.time_shift_seconds:
        return shifted(enquiry, timedelta(seconds=item.time_shift_seconds))
    return enquiry


def shifted(enquiry: EnquiryIn, delta: timedelta) -> EnquiryIn:
    """The enquiry with every date it carries moved by `delta` (the demo sample, dated relative to now)."""
    attributes = dict(enquiry.attributes)
    if "message_keys" in attributes:  # a chat's messages: [key, sent_at, text]
        attributes["message_keys"] = json.dumps(
            [
                [key, (datetime.fromisoformat(sent_at) + delta).isoformat(), text]
                for key, sent_at, text in json.loads(attributes["message_keys"])
            ],
            ensure_ascii=False,
        )
    return enquiry.model_copy(update={"received_at": enquiry.received_at + delta, "attributes": attributes})


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY_PREFIX.match(subject))


def normalise_subject(subject: str) -> str:
    """Subject without reply/forward prefixes, whitespace collapsed, lower case: the fallback thread key."""
    return _WHITESPACE.sub(" ", _REPLY_PREFIX.sub("", subject)).strip().lower()[:300]


def content_hash(enquiry: EnquiryIn) -> str:
    """What makes two records 'the same message': sender, subject and text, whitespace-insensitive."""
    parts = (
        enquiry.channel.value,
        (enquiry.sender_email or "").lower(),
        " ".join(enquiry.subject.split()),
        " ".join(enquiry.body.split()),  # str.split is several times faster than a regex here
    )
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def enquiry_id_for(raw: PendingRecord) -> str:
    """A deterministic id from the raw record: a re-run derives the same id, never a new one.

    32 hex characters: the raw record's id (12), then the uuid5 of its source and key from the 13th
    character on (the version nibble '5' stays there). Ids grow with intake, so every index keyed by an
    enquiry id (enquiries, decisions, review items, timers, the outbox, raw records) takes new rows at
    one end. Fully random ids put each new row on a random page of each of those indexes: at 1M stored
    enquiries a batch dirtied thousands of scattered pages, and ingest fell to 0.68-0.74 of the empty
    store's rate (ordered ids: 0.89-0.98; docs/benchmarks.md)."""
    digest = uuid.uuid5(ENQUIRY_NAMESPACE, f"{raw.source}\x1f{raw.external_key}").hex
    return f"{raw.id:012x}{digest[12:]}"
