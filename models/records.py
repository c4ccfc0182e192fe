"""What an enquiry is, at each step of its path.

Input, stored and public shapes are separate models so that storage fields never leak into an API
or a page (see docs/architecture.md). Everything here is plain data: no I/O.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Re-exported: most code imports the vocabulary with the shapes that use it.
from models.vocabulary import Channel as Channel
from models.vocabulary import Lane as Lane
from models.vocabulary import RawStatus as RawStatus


class RawRecordIn(BaseModel):
    """A record as a source delivered it, before any interpretation. Stored before anything else."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="Configured source name, e.g. 'imap:sales' or 'file:leads.jsonl'.")
    channel: Channel
    external_key: str = Field(description="Stable key of the record inside its source (UID, offset, id).")
    payload: bytes = Field(description="The bytes exactly as received (RFC 822 mail, JSON, CSV row as JSON).")
    received_at: datetime
    time_shift_seconds: int = Field(
        default=0,
        description="Seconds added to every date of the record when it is read: the bundled demo sample "
        "only (it is dated relative to the run); always 0 for a real source.",
    )


class Attachment(BaseModel):
    """Attachment metadata only; attachment bytes are never stored."""

    model_config = ConfigDict(frozen=True)

    filename: str | None
    content_type: str
    size: int


class EnquiryIn(BaseModel):
    """One message normalised from any channel: the common shape the pipeline works on."""

    model_config = ConfigDict(frozen=True)

    channel: Channel
    source: str
    message_key: str | None = Field(
        default=None, description="Message-ID for mail, submission id for forms, message id for chat."
    )
    thread_key: str | None = Field(
        default=None, description="Conversation id for chat; lets later messages thread onto the enquiry."
    )
    in_reply_to: tuple[str, ...] = Field(default=(), description="Message keys this one replies to.")
    received_at: datetime
    sender_email: str | None = None
    sender_name: str | None = None
    company_hint: str | None = None
    phone: str | None = None
    subject: str = ""
    body: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    is_bot: bool = Field(default=False, description="A honeypot field was filled: a bot posted this.")
    skip_reason: str | None = Field(default=None, description="Auto-reply or bounce: do not open an enquiry.")
    truncated: bool = False


class Enrichment(BaseModel):
    """What we learn from the sender's domain."""

    model_config = ConfigDict(frozen=True)

    domain: str | None
    free_mail: bool
    company: str | None
    industry: str | None
    employees: int | None
    arr_estimate: float | None = Field(description="Estimated annual recurring revenue of the deal, in USD.")
    segment: str = Field(description="smb | mid_market | enterprise | unknown")
    country: str | None = None  # the bundled firmographics' country of the domain's company
    language: str | None = Field(default=None, description="ISO 639-1 code of the text, when detected.")
    # Set by account matching (pipeline/accounts.py) when the CRM knows the sender; None otherwise.
    account: str | None = Field(default=None, description="The CRM account's name.")
    account_id: str | None = None
    account_match: str | None = Field(
        default=None, description="Which rule matched: contact_email | lead_email | account_domain."
    )
    account_owner: str | None = Field(default=None, description="The account owner's user name.")
    customer: bool = False
    arr_source: str = Field(default="estimate", description="estimate | crm: where arr_estimate came from.")


class Prediction(BaseModel):
    """What the model says about one enquiry."""

    model_config = ConfigDict(frozen=True)

    intent: str
    confidence: float = Field(ge=0.0, le=1.0, description="Calibrated probability of `intent`.")
    threshold: float = Field(ge=0.0, le=1.0, description="The per-class threshold for the automated lane.")
    abstained: bool = Field(description="Below threshold or out of scope: people decide.")
    explanation: tuple[tuple[str, float], ...] = Field(
        default=(), description="The features that pushed the prediction most, with their weights."
    )
    model_version: str


class Decision(BaseModel):
    """The lane chosen for one enquiry, with every reason: this is what the audit row records."""

    model_config = ConfigDict(frozen=True)

    lane: Lane
    intent: str
    queue: str
    priority: str
    reasons: tuple[str, ...]
    task: str = Field(description="The decision-matrix task that was applied, e.g. 'create_lead'.")
    policy_version: str
    model_version: str
    confidence: float
