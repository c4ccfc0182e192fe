"""Web-form submissions: the documented schema, validation, and normalisation into an enquiry.

The same schema serves the web hook (JSON or urlencoded), JSONL files and form tools' CSV exports.
Unknown fields are kept as attributes (UTM tags, plan, seats) so nothing the visitor sent is lost.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.bounded_json import load_json
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

EMAIL_PATTERN = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
HONEYPOT_FIELD = "website"
MAX_MESSAGE_CHARS = 20_000


class FormSubmission(BaseModel):
    """One form post. `website` is a honeypot: hidden from people, so only bots fill it."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    submission_id: str | None = Field(default=None, max_length=200)
    form_id: str | None = Field(default=None, max_length=100)
    submitted_at: datetime | None = None
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=300)
    company: str | None = Field(default=None, max_length=300)
    phone: str | None = Field(default=None, max_length=60)
    subject: str | None = Field(default=None, max_length=500)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    website: str | None = Field(default=None, max_length=500)

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not EMAIL_PATTERN.match(value):
            raise ValueError("not an e-mail address")
        return value.lower()

    @field_validator("submitted_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone offset, e.g. 2026-11-20T10:12:00+01:00")
        return value


def validation_problems(error: ValidationError) -> str:
    """One line naming each field at fault, for people and for 422 responses."""
    return "; ".join(
        f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}" for item in error.errors()
    )


def parse_form_payload(payload: bytes) -> FormSubmission:
    """Validate a stored form record (JSON object bytes) or raise SkippableError saying what is wrong."""
    data = load_json(payload, tool="form record", refuse_long_ints=True)
    if not isinstance(data, dict):
        raise SkippableError(f"form record must be a JSON object, got {type(data).__name__}")
    try:
        return FormSubmission.model_validate(data)
    except ValidationError as error:
        raise SkippableError(f"form record invalid: {validation_problems(error)}") from error


def form_to_enquiry(form: FormSubmission, *, source: str, received_at: datetime) -> EnquiryIn:
    """Normalise a validated form post."""
    extra: dict[str, Any] = form.model_extra or {}
    attributes = {key: str(value)[:500] for key, value in extra.items() if value not in (None, "")}
    if form.form_id:
        attributes["form_id"] = form.form_id
    if form.company:
        attributes["company"] = form.company
    return EnquiryIn(
        channel=Channel.FORM,
        source=source,
        message_key=f"form:{form.submission_id}" if form.submission_id else None,
        received_at=form.submitted_at or received_at,
        sender_email=form.email,
        sender_name=form.name or None,
        company_hint=form.company or None,
        phone=form.phone or None,
        subject=form.subject or (f"Form: {form.form_id}" if form.form_id else "Web form"),
        body=form.message,
        attributes=attributes,
        is_bot=bool(form.website),
    )
