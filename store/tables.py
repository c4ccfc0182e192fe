"""The schema: every table the product keeps. Alembic migrations in store/migrations mirror this file.

Times are stored as UTC. SQLite drops time zones, so `UTCDateTime` re-attaches UTC on the way out:
code above the store only ever sees aware datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


class RawRecord(Base):
    """Every record exactly as a source delivered it; stored before anything else happens."""

    __tablename__ = "raw_records"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_key", name="uq_raw_source_key"),
        sa.Index("ix_raw_status", "status", "id"),
        sa.Index("ix_raw_prune", "payload_pruned_at", "imported_at"),
        sa.Index("ix_raw_channel_status", "channel", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(sa.String(200))
    channel: Mapped[str] = mapped_column(sa.String(10))
    external_key: Mapped[str] = mapped_column(sa.String(500))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    received_at: Mapped[datetime]
    imported_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    enquiry_id: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    # Only the bundled demo sample sets this: its dates move to the last few business days when it is
    # imported (the bytes stay as they are; normalising applies the shift, the audit row says so).
    time_shift_seconds: Mapped[int | None]
    # Retention emptied `payload` at this time (the key, status and enquiry stay: dedupe needs them).
    payload_pruned_at: Mapped[datetime | None]
    # Batches that failed because of this record (pipeline.process): at the limit it is quarantined.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")


class SourceCheckpoint(Base):
    """Where each source stopped reading; written in the transaction that stores the records."""

    __tablename__ = "source_checkpoints"

    source: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class SourceStatus(Base):
    """Each configured source's last attempt to read, and its last error: what `triage status` and
    /metrics show, so a mailbox that refuses the login is seen, not only logged."""

    __tablename__ = "source_status"

    source: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(sa.String(10))
    last_attempt_at: Mapped[datetime]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_error_at: Mapped[datetime | None]
    errors_total: Mapped[int] = mapped_column(default=0)
    consecutive_errors: Mapped[int] = mapped_column(default=0)
    last_stored: Mapped[int] = mapped_column(default=0)


class HookFetch(Base):
    """A web-hook event that names its record by id only (HubSpot): stored when it arrives, then read
    from the tool's API and stored as a raw record. It waits, with the error, while the API is down."""

    __tablename__ = "hook_fetches"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_key", name="uq_hook_fetch_source_key"),
        sa.Index("ix_hook_fetch_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(sa.String(200))
    external_key: Mapped[str] = mapped_column(sa.String(500))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(20))  # waiting | fetched
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    fetched_at: Mapped[datetime | None]


class Quarantine(Base):
    """A raw record that could not be parsed or validated, with the reason. Re-playable."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    raw_id: Mapped[int] = mapped_column(sa.ForeignKey("raw_records.id"), unique=True)
    source: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime]
    replayed_at: Mapped[datetime | None] = mapped_column(index=True)


class Enquiry(Base):
    """One enquiry: the first message of a conversation, enriched, classified and decided."""

    __tablename__ = "enquiries"
    __table_args__ = (
        sa.Index("ix_enq_message_key", "message_key"),
        sa.Index("ix_enq_content_hash", "content_hash"),
        sa.Index("ix_enq_thread_key", "source", "thread_key"),
        sa.Index("ix_enq_sender_subject", "sender_email", "subject_norm"),
        sa.Index("ix_enq_thread_key_only", "thread_key"),
        sa.Index("ix_enq_lane", "lane"),
        # Covers drift's last week of one model and the confidence histogram: no pass over the rows.
        sa.Index("ix_enq_model_created", "model_version", "created_at", "confidence", "intent"),
        sa.Index("ix_enq_prune", "body_pruned_at", "received_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    raw_id: Mapped[int] = mapped_column(sa.ForeignKey("raw_records.id"), unique=True)
    channel: Mapped[str] = mapped_column(sa.String(10))
    source: Mapped[str] = mapped_column(sa.String(200))
    message_key: Mapped[str | None] = mapped_column(sa.String(500))
    thread_key: Mapped[str | None] = mapped_column(sa.String(500))
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    received_at: Mapped[datetime]
    sender_email: Mapped[str | None] = mapped_column(sa.String(320))
    sender_name: Mapped[str | None] = mapped_column(sa.String(300))
    phone: Mapped[str | None] = mapped_column(sa.String(60))
    subject: Mapped[str] = mapped_column(sa.Text)
    subject_norm: Mapped[str] = mapped_column(sa.String(300))
    body: Mapped[str] = mapped_column(sa.Text)
    attributes: Mapped[dict[str, Any]]
    attachments: Mapped[list[Any]]
    enrichment: Mapped[dict[str, Any]]
    intent: Mapped[str] = mapped_column(sa.String(80))
    queue: Mapped[str] = mapped_column(sa.String(80))
    priority: Mapped[str] = mapped_column(sa.String(10))
    lane: Mapped[str] = mapped_column(sa.String(20))
    confidence: Mapped[float]
    explanation: Mapped[list[Any]]
    model_version: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[datetime]
    # Retention emptied the body (and kept what retraining reads, per retention.yaml) at this time.
    body_pruned_at: Mapped[datetime | None]
    language: Mapped[str | None] = mapped_column(sa.String(8))  # ISO 639-1, detected (migration 0013)


class EnquiryMessage(Base):
    """A later message in an enquiry's conversation: a customer's reply or a staff reply."""

    __tablename__ = "enquiry_messages"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), index=True)
    raw_id: Mapped[int | None] = mapped_column(sa.ForeignKey("raw_records.id"), unique=True)
    direction: Mapped[str] = mapped_column(sa.String(10))  # inbound | outbound
    author: Mapped[str | None] = mapped_column(sa.String(320))
    message_key: Mapped[str | None] = mapped_column(sa.String(500), index=True)
    content_hash: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    body: Mapped[str] = mapped_column(sa.Text)
    sent_at: Mapped[datetime]


class DecisionRow(Base):
    """The append-only audit trail: one row per decision, by the model or by a person."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(sa.String(100))  # "system" or a user name
    kind: Mapped[str] = mapped_column(sa.String(30))  # triage | correction | accept | reassign | ...
    lane: Mapped[str] = mapped_column(sa.String(20))
    intent: Mapped[str] = mapped_column(sa.String(80))
    queue: Mapped[str] = mapped_column(sa.String(80))
    priority: Mapped[str] = mapped_column(sa.String(10))
    confidence: Mapped[float]
    task: Mapped[str] = mapped_column(sa.String(80))
    reasons: Mapped[list[Any]]
    policy_version: Mapped[str] = mapped_column(sa.String(64))
    model_version: Mapped[str] = mapped_column(sa.String(64))


class ShadowPrediction(Base):
    """What a shadow model would have said; never acted on."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (sa.UniqueConstraint("enquiry_id", "model_version", name="uq_shadow_enquiry_model"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    intent: Mapped[str] = mapped_column(sa.String(80))
    confidence: Mapped[float]
    abstained: Mapped[bool]
    created_at: Mapped[datetime]


class CrmOutbox(Base):
    """CRM writes waiting to be sent, keyed so a re-run can never send one twice."""

    __tablename__ = "crm_outbox"
    __table_args__ = (
        sa.Index("ix_outbox_status_next", "status", "next_attempt_at"),
        sa.Index("ix_outbox_op_status", "operation", "status"),
        sa.Index("ix_outbox_prune", "payload_pruned_at", "sent_at"),
        sa.Index("ix_outbox_crm_id", "crm_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), index=True)
    operation: Mapped[str] = mapped_column(sa.String(30))  # upsert_lead | create_task | delete_lead
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[datetime]
    crm_id: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # Retention emptied the payload of this sent write at this time (the row and its CRM id stay).
    payload_pruned_at: Mapped[datetime | None]


class LocalLead(Base):
    """The embedded CRM's leads (the `local` backend)."""

    __tablename__ = "crm_leads"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    fields: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LocalTask(Base):
    """The embedded CRM's follow-up tasks for SDRs."""

    __tablename__ = "crm_tasks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    lead_external_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    fields: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


# Which review items the queue shows, as SQL: the predicate of the partial queue indexes.
OPEN_ITEMS = "status IN ('open', 'claimed')"
OPEN_QUEUE_INDEXES: dict[str, tuple[str, ...]] = {
    "due": (),
    "intent_due": ("intent",),
    "queue_due": ("queue",),
    "lane_due": ("lane",),
    "owner_due": ("claimed_by",),
}


class ReviewItem(Base):
    """An enquiry waiting for a person."""

    __tablename__ = "review_items"
    __table_args__ = (
        sa.Index("ix_review_status_due", "status", "due_at"),
        sa.Index("ix_review_status_intent_due", "status", "intent", "due_at"),
        sa.Index("ix_review_status_queue", "status", "queue"),
        sa.Index("ix_review_owner_status", "owner", "status"),
        # The queue page: open items only (closed ones, most of a year's rows, are not in these), in
        # due order per filter, so a page is an index range read in order, never a sort of every
        # open item. The predicate is written literally in review_repo (partial indexes need that).
        *(
            sa.Index(
                f"ix_review_open_{name}",
                *columns,
                "due_at",
                "id",
                sqlite_where=sa.text(OPEN_ITEMS),
                postgresql_where=sa.text(OPEN_ITEMS),
            )
            for name, columns in OPEN_QUEUE_INDEXES.items()
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), unique=True)
    lane: Mapped[str] = mapped_column(sa.String(20))
    queue: Mapped[str] = mapped_column(sa.String(80), index=True)
    status: Mapped[str] = mapped_column(sa.String(20))  # open | claimed | done
    claimed_by: Mapped[str | None] = mapped_column(sa.String(100))
    claimed_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    # The enquiry's intent, kept here so the queue filtered by intent needs no join (a correction
    # updates both).
    intent: Mapped[str | None] = mapped_column(sa.String(80))
    # Whom owner routing gave it to, from which team (migration 0013); claimed_by is who works it now.
    owner: Mapped[str | None] = mapped_column(sa.String(100))
    team: Mapped[str | None] = mapped_column(sa.String(80))
    assigned_at: Mapped[datetime | None]


class Correction(Base):
    """A person's correction of the model: a labelled example for the next training run."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), index=True)
    corrected_by: Mapped[str] = mapped_column(sa.String(100))
    intent: Mapped[str] = mapped_column(sa.String(80))
    priority: Mapped[str] = mapped_column(sa.String(10))
    queue: Mapped[str] = mapped_column(sa.String(80))
    previous: Mapped[dict[str, Any]]
    model_version: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]


class SlaTimer(Base):
    """One SLA clock of one enquiry (first response or resolution)."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        sa.UniqueConstraint("enquiry_id", "kind", name="uq_timer_enquiry_kind"),
        sa.Index("ix_timer_status_due", "status", "due_at"),
        sa.Index("ix_timer_kind_status", "kind", "status"),
        sa.Index("ix_timer_kind_source", "kind", "touch_source"),
        # The SLA report reads one period's first-response timers, in start order.
        sa.Index("ix_timer_kind_started", "kind", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"))
    kind: Mapped[str] = mapped_column(sa.String(20))  # first_response | resolution
    policy: Mapped[str] = mapped_column(sa.String(80))
    target_minutes: Mapped[int]
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(20))  # running | paused | met | breached
    paused_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    stopped_by: Mapped[str | None] = mapped_column(sa.String(100))
    breached_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)
    # Where the touch that stopped the clock came from: pages | mailbox | crm | automated (issue 17).
    touch_source: Mapped[str | None] = mapped_column(sa.String(20))


class ReplyOutbox(Base):
    """A reply to a customer, waiting to be sent over SMTP or sent (issue 17).

    The Message-ID is fixed when the row is written, so a re-send after a crash carries the same id
    and the customer's mail client folds the copies. `status`: pending → sending (the claim, committed
    before the SMTP conversation) → sent | failed; a row found in `sending` by the next pass is in doubt
    (the server may have accepted it): `in_doubt` counts those, and only one re-send is ever allowed.
    """

    __tablename__ = "reply_outbox"
    __table_args__ = (
        sa.Index("ix_reply_outbox_status_next", "status", "next_attempt_at"),
        sa.Index("ix_reply_outbox_kind_status", "kind", "status", "attempts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))  # reply | auto_reply
    author: Mapped[str] = mapped_column(sa.String(100))
    template: Mapped[str | None] = mapped_column(sa.String(80))
    from_address: Mapped[str] = mapped_column(sa.String(320))
    to_address: Mapped[str] = mapped_column(sa.String(320))
    subject: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text)
    message_id: Mapped[str] = mapped_column(sa.String(500), unique=True)
    in_reply_to: Mapped[str | None] = mapped_column(sa.String(500))
    reference_ids: Mapped[str | None] = mapped_column(sa.Text)  # the References header, space-separated
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    in_doubt: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]


class SlaEvent(Base):
    """Escalations and clock changes; an escalation tier fires once per timer (unique key)."""

    __tablename__ = "sla_events"
    __table_args__ = (sa.UniqueConstraint("timer_id", "event_key", name="uq_sla_event_key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    timer_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_timers.id"), index=True)
    event_key: Mapped[str] = mapped_column(sa.String(80))  # e.g. "escalation:1", "pause:3"
    action: Mapped[str] = mapped_column(sa.String(80))
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class User(Base):
    """A person who logs in to the review pages."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))  # sdr | ops_lead | admin
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    # What owner routing needs (issue 12): teams as a comma-separated list of team names, the number of
    # open items the user may hold, a relative share for least-loaded assignment, working-hours zone.
    teams: Mapped[str] = mapped_column(sa.String(500), default="", server_default="")
    capacity: Mapped[int] = mapped_column(default=25, server_default="25")
    weight: Mapped[int] = mapped_column(default=1, server_default="1")
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC", server_default="UTC")
    email: Mapped[str | None] = mapped_column(sa.String(320))
    crm_user_id: Mapped[str | None] = mapped_column(sa.String(64))
    away: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # The user's own working hours in `timezone`, as `config.routing.format_hours` writes them
    # ("Mon-Fri 09:00-17:00"); None: the team's hours from routing.yaml (migration 0018).
    working_hours: Mapped[str | None] = mapped_column(sa.String(200))


class WebSession(Base):
    """A login to the review pages. The cookie holds a random token; only its SHA-256 is stored here.

    Logout deletes the row; a password change or disabling the user deletes all of the user's rows;
    `review.auth.current_user` refuses a row past its idle or absolute lifetime.
    """

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(sa.String(100), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class LoginThrottle(Base):
    """Failed logins per account (`user:NAME`) and per client address (`addr:IP`): the next allowed try."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime]
    next_allowed_at: Mapped[datetime]


class ModelVersion(Base):
    """A registered model: artifact location, provenance and its place in the lifecycle."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(20))  # candidate | active | shadow | retired
    artifact_path: Mapped[str] = mapped_column(sa.Text)
    provenance: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(sa.String(100))
    promoted_at: Mapped[datetime | None]


class ModelEvent(Base):
    """Append-only history of promotions, shadowing and rollbacks: who did what to which model."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(sa.ForeignKey("model_versions.version"))
    action: Mapped[str] = mapped_column(sa.String(20))  # register | shadow | promote | rollback
    actor: Mapped[str] = mapped_column(sa.String(100))
    previous_active: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]


class Flag(Base):
    """Operational switches such as the automation kill switch, with who set them and why."""

    __tablename__ = "flags"

    key: Mapped[str] = mapped_column(sa.String(60), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_by: Mapped[str] = mapped_column(sa.String(100))
    updated_at: Mapped[datetime]


class FlowRun(Base):
    """One pass of a flow or source, for `triage status` and the metrics."""

    __tablename__ = "flow_runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(100), index=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    summary: Mapped[dict[str, Any]]


class Erasure(Base):
    """The tombstone of one erasure request: who asked, when, how many rows of each kind were erased,
    and a keyed hash of the address (never the address itself), so a repeat request can be recognised."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    subject_hmac: Mapped[str] = mapped_column(sa.String(64), index=True)
    requested_by: Mapped[str] = mapped_column(sa.String(100))
    requested_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    counts: Mapped[dict[str, Any]]


class CrmAccount(Base):
    """An account of the local CRM (`triage crm accounts import`): what it pays and who owns it."""

    __tablename__ = "crm_accounts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(sa.String(253), unique=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    arr: Mapped[float | None]
    owner: Mapped[str | None] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(40), default="", server_default="")
    contacts: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CrmContact(Base):
    """A known contact of a local CRM account, matched by exact e-mail address."""

    __tablename__ = "crm_contacts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(sa.String(320), unique=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("crm_accounts.id"), index=True)
    created_at: Mapped[datetime]


class RoutingCursor(Base):
    """Where a team's round robin stands: shared by every worker and run, locked while assigning."""

    __tablename__ = "routing_cursors"

    team: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    position: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime]


class SpotCheck(Base):
    """An automated enquiry also sent to people to check the automated lane (issue 13): the customer was
    handled as automated; the reviewer's label (set when they accept or correct) scores the model."""

    __tablename__ = "spot_checks"
    __table_args__ = (
        sa.Index("ix_spot_task_selected", "task", "selected_at"),
        sa.Index("ix_spot_task_reviewed", "task", "reviewed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    enquiry_id: Mapped[str] = mapped_column(sa.ForeignKey("enquiries.id"), unique=True)
    task: Mapped[str] = mapped_column(sa.String(80))
    model_version: Mapped[str] = mapped_column(sa.String(64))
    intent: Mapped[str] = mapped_column(sa.String(80))  # what the automated lane acted on
    reason: Mapped[str] = mapped_column(sa.String(20))  # share | daily_minimum
    selected_at: Mapped[datetime]
    reviewed_intent: Mapped[str | None] = mapped_column(sa.String(80))
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(100))
    reviewed_at: Mapped[datetime | None]
    correct: Mapped[bool | None]


class Counter(Base):
    """Folded counts for /metrics and `triage status`, one row per family and key (store/counters.py)."""

    __tablename__ = "counters"

    family: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    k1: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    k2: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    k3: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    n: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[float] = mapped_column(sa.Float)


class CounterDelta(Base):
    """A change to a counter, appended by a trigger in the transaction that changed the counted row;
    folded into `counters` after each intake pass. Append-only, so concurrent writers never wait."""

    __tablename__ = "counter_deltas"

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    family: Mapped[str] = mapped_column(sa.String(40))
    k1: Mapped[str] = mapped_column(sa.String(200))
    k2: Mapped[str] = mapped_column(sa.String(200))
    k3: Mapped[str] = mapped_column(sa.String(200))
    n: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[float] = mapped_column(sa.Float)
