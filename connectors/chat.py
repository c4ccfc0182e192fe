"""Chat transcripts: the documented schema, validation, and normalisation into an enquiry.

A transcript is one conversation: participants and their messages. The visitor's messages are the
enquiry's text; a later delivery of the same conversation with more messages threads onto it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.bounded_json import load_json
from connectors.forms import EMAIL_PATTERN, validation_problems
from models.errors import SkippableError
from models.records import Channel, EnquiryIn

MAX_MESSAGES = 500


class ChatParticipant(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200)
    role: Literal["visitor", "agent", "bot"]
    name: str | None = Field(default=None, max_length=300)
    email: str | None = Field(default=None, max_length=320)


class ChatMessage(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200)
    author: str = Field(min_length=1, max_length=200)
    sent_at: datetime
    text: str = Field(max_length=20_000)


class ChatTranscript(BaseModel):
    """One conversation, as chat tools export it."""

    conversation_id: str = Field(min_length=1, max_length=200)
    source: str | None = Field(default=None, max_length=100)
    started_at: datetime | None = None
    participants: list[ChatParticipant] = Field(min_length=1, max_length=50)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)

    @model_validator(mode="after")
    def _authors_are_participants(self) -> ChatTranscript:
        known = {participant.id for participant in self.participants}
        for index, message in enumerate(self.messages):
            if message.author not in known:
                raise ValueError(f"messages.{index}.author {message.author!r} is not a participant")
            if message.sent_at.tzinfo is None:
                raise ValueError(f"messages.{index}.sent_at needs a time zone offset")
        if not any(p.role == "visitor" for p in self.participants):
            raise ValueError("participants: no visitor in the conversation")
        return self

    def visitor_messages(self) -> list[ChatMessage]:
        visitors = {p.id for p in self.participants if p.role == "visitor"}
        return [message for message in self.messages if message.author in visitors and message.text]


def parse_chat_payload(payload: bytes) -> ChatTranscript:
    """Validate a stored transcript (JSON object bytes) or raise SkippableError saying what is wrong."""
    data = load_json(payload, tool="chat transcript", refuse_long_ints=True)
    try:
        return ChatTranscript.model_validate(data)
    except ValidationError as error:
        raise SkippableError(f"chat transcript invalid: {validation_problems(error)}") from error


def chat_message_key(conversation_id: str, message_id: str) -> str:
    return f"chat:{conversation_id}#{message_id}"


def transcript_to_enquiry(transcript: ChatTranscript, *, source: str, received_at: datetime) -> EnquiryIn:
    """Normalise a transcript; `attributes['message_keys']` lists the visitor messages it carries."""
    visitor = next(p for p in transcript.participants if p.role == "visitor")
    messages = transcript.visitor_messages()
    if not messages:
        raise SkippableError("chat transcript has no visitor text")
    email = visitor.email.lower() if visitor.email and EMAIL_PATTERN.match(visitor.email) else None
    first = messages[0].text.strip().splitlines()[0]
    return EnquiryIn(
        channel=Channel.CHAT,
        source=source,
        message_key=chat_message_key(transcript.conversation_id, messages[-1].id),
        thread_key=f"chat:{transcript.conversation_id}",
        received_at=transcript.started_at or messages[0].sent_at or received_at,
        sender_email=email,
        sender_name=visitor.name,
        subject=first[:120],
        body="\n".join(message.text for message in messages),
        attributes={
            "conversation_id": transcript.conversation_id,
            "chat_source": transcript.source or "",
            "message_keys": json.dumps(
                [
                    [chat_message_key(transcript.conversation_id, m.id), m.sent_at.isoformat(), m.text]
                    for m in messages
                ]
            ),
        },
    )
