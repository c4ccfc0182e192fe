"""The fixed words of the domain: channels, lanes and what became of a raw record.

Plain enums, importable without pydantic, so the CLI can offer them as choices at start-up.
`models.records` uses them in its shapes.
"""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """Where an enquiry came in."""

    EMAIL = "email"
    FORM = "form"
    CHAT = "chat"


class Lane(StrEnum):
    """Who acts on an enquiry: the machine alone, the machine with a person's approval, or people."""

    AUTOMATE = "automate"
    HYBRID = "hybrid"
    HUMAN_ONLY = "human_only"


class RawStatus(StrEnum):
    """What became of one raw record. Every raw record ends in exactly one of these."""

    PENDING = "pending"
    ENQUIRY = "enquiry"  # opened a new enquiry
    DUPLICATE = "duplicate"  # same content as a record already seen
    THREADED = "threaded"  # a follow-up message attached to an existing enquiry
    SKIPPED = "skipped"  # auto-reply, bounce, delivery report: recorded with a reason
    QUARANTINED = "quarantined"  # could not be parsed or validated: a quarantine row says why
