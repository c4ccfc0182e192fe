"""Replies to customers: write them to the reply outbox, then send them over SMTP exactly once.

`enqueue_reply` refuses what must never be sent (no address, an address that fails validation, a
bounce or no-reply sender, spam, the team's own domains) and writes one `reply_outbox` row whose
Message-ID is fixed there and then. `drain_replies` sends due rows:

1. claim one row and commit it as `sending` (with a lease), before any SMTP conversation;
2. a row found `sending` after its lease is in doubt (the process died between the server's
   acceptance and the commit): if the Sent folder shows its Message-ID it is recorded as sent
   without sending; otherwise it is sent once more, with the same Message-ID, so the customer's mail
   client folds the copies. A second doubt on the same row is not re-sent: it fails, asking a person
   to look at the Sent folder;
3. a 4xx reply or a timeout waits with exponential backoff; a 5xx fails the row with the server's
   words, shown on the review item;
4. acceptance is committed with its consequences: the outbound message in the enquiry's thread
   (its Message-ID is a message key, so the customer's answer threads back), an audit row, the
   first-response clock stopped at the acceptance instant (source `pages`, or `automated` for an
   automated acknowledgement), and for a person's reply the review item closed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from connectors.smtp_outbound import OutboundSettings, OutgoingReply, build_reply
from models.errors import FatalError, RetriableError, TriageError
from sla import service as sla_service
from store import flags, reply_outbox, review_repo
from store.common import Clock, utcnow
from store.db import transaction
from store.reply_outbox import ClaimedReply
from store.tables import Enquiry, EnquiryMessage

log = logging.getLogger(__name__)

MESSAGE_ID_NAMESPACE = uuid.UUID("0b7c4c52-5f0e-4d43-9a55-6a1f3c1e7a17")
# Local parts of addresses that never read a reply: bounces, system senders, no-reply robots.
NO_REPLY_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply", "do-not-reply", "bounce", "bounces"}
)
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
SPAM_INTENT = "spam"
MAX_REFERENCES = 10
RATE_WINDOW = timedelta(hours=1)
KILL_SWITCH_RECHECK = timedelta(minutes=5)


class ReplyRefused(TriageError):
    """A reply that must not be sent; the message says why and what to do instead."""


class ReplySender(Protocol):
    """What the drain needs from the outside world (`connectors.smtp_outbound.SmtpReplySender`)."""

    def send(self, message: EmailMessage) -> None:
        """Return once the SMTP server accepted the message; raise RetriableError or FatalError."""
        ...

    def already_sent(self, message_id: str) -> bool | None:
        """Whether the Sent folder holds this Message-ID; None without a Sent folder."""
        ...


class ReplyTarget(Protocol):
    """The facts of an enquiry a reply needs (an `Enquiry` row, or the batch's row before it is one)."""

    @property
    def id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def sender_email(self) -> str | None: ...
    @property
    def subject(self) -> str: ...
    @property
    def intent(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def message_key(self) -> str | None: ...


def refusal(enquiry: ReplyTarget, *, team_domains: frozenset[str] = frozenset()) -> str | None:
    """Why no reply may go to this enquiry's sender, or None when one may."""
    address = enquiry.sender_email
    if not address:
        return (
            f"this {enquiry.channel} enquiry gave no e-mail address: answer it where it came from, "
            "then record the touch by hand"
        )
    if not _ADDRESS.match(address) or len(address) > 254:
        return f"the sender's address {address!r} failed validation: no reply is sent to it"
    local, _, domain = address.lower().rpartition("@")
    if local in NO_REPLY_LOCAL_PARTS or local.startswith("bounce"):
        return f"{address} is a bounce or no-reply sender: no reply is sent to it"
    if enquiry.intent == SPAM_INTENT or enquiry.queue == SPAM_INTENT:
        return "this enquiry is marked spam: no reply is sent"
    if domain in team_domains:
        return f"{address} is one of the team's own addresses: no reply is sent"
    return None


def reply_subject(enquiry: ReplyTarget) -> str:
    """'Re: <subject>' (once), or a plain one for enquiries without a subject."""
    subject = " ".join(enquiry.subject.split())
    if not subject:
        return "Your enquiry"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def _thread_keys(session: Session, enquiry: Enquiry) -> tuple[str | None, list[str]]:
    """In-Reply-To (the original Message-ID of an e-mail enquiry) and References (the thread so far)."""
    if enquiry.channel != "email" or not enquiry.message_key:
        return None, []
    keys = [enquiry.message_key]
    for message in review_repo.thread_messages(session, enquiry.id):
        if message.message_key and message.message_key not in keys:
            keys.append(message.message_key)
    return enquiry.message_key, keys[:1] + keys[1:][-(MAX_REFERENCES - 1) :]


def idempotency_key(enquiry_id: str, *, kind: str, author: str, subject: str, body: str) -> str:
    """One key per reply: the same text by the same person to the same enquiry is one reply."""
    if kind == "auto_reply":
        return f"auto_reply:{enquiry_id}"
    digest = hashlib.sha256("\0".join((enquiry_id, author, subject, body)).encode()).hexdigest()[:40]
    return f"reply:{enquiry_id}:{digest}"


def enqueue_reply(
    session: Session,
    enquiry: Enquiry,
    *,
    author: str,
    body: str,
    outbound: OutboundSettings,
    now: datetime,
    subject: str | None = None,
    kind: str = "reply",
    template: str | None = None,
) -> tuple[int, bool]:
    """Write a reply to the outbox with its Message-ID; returns (row id, whether it is new).

    Raises ReplyRefused when it must not be sent (see `refusal`) or cannot be (no from address).
    """
    in_reply_to, references = _thread_keys(session, enquiry)
    row = outbox_row(
        enquiry,
        author=author,
        body=body,
        outbound=outbound,
        now=now,
        subject=subject,
        kind=kind,
        template=template,
        references=references,
    )
    row["in_reply_to"] = in_reply_to
    new = reply_outbox.add(session, row)
    stored = reply_outbox.by_key(session, row["idempotency_key"])
    assert stored is not None
    return stored.id, new


def outbox_row(
    enquiry: ReplyTarget,
    *,
    author: str,
    body: str,
    outbound: OutboundSettings,
    now: datetime,
    subject: str | None = None,
    kind: str = "reply",
    template: str | None = None,
    references: Sequence[str] = (),
) -> dict[str, Any]:
    """The reply_outbox row of one reply, its Message-ID fixed (uuid5 of the idempotency key).

    The from address is the enquiry's mailbox's own, when it has an override.
    """
    outbound = outbound.for_source(enquiry.source)
    reason = refusal(enquiry, team_domains=outbound.domains)
    if reason is not None:
        raise ReplyRefused(reason)
    text = body.strip()
    if not text:
        raise ReplyRefused("a reply needs some text")
    if not outbound.from_address or "@" not in outbound.from_address:
        raise ReplyRefused("no address to send from: set TRIAGE_OUTBOUND__FROM_ADDRESS")
    subject_line = " ".join((subject or reply_subject(enquiry)).split())
    key = idempotency_key(enquiry.id, kind=kind, author=author, subject=subject_line, body=text)
    domain = outbound.from_address.rsplit("@", 1)[1]
    assert enquiry.sender_email is not None  # refusal() checked it
    threaded = enquiry.channel == "email" and bool(enquiry.message_key)
    return {
        "idempotency_key": key,
        "enquiry_id": enquiry.id,
        "kind": kind,
        "author": author,
        "template": template,
        "from_address": outbound.from_address,
        "to_address": enquiry.sender_email,
        "subject": subject_line,
        "body": text,
        "message_id": f"{uuid.uuid5(MESSAGE_ID_NAMESPACE, key).hex}.reply@{domain}",
        "in_reply_to": enquiry.message_key if threaded else None,
        "reference_ids": " ".join(references or ([enquiry.message_key or ""] if threaded else [])) or None,
        "status": "pending",
        "attempts": 0,
        "in_doubt": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


@dataclass(frozen=True, slots=True)
class _BatchEnquiry:
    id: str
    channel: str
    source: str
    sender_email: str | None
    subject: str
    intent: str
    queue: str
    message_key: str | None


@dataclass
class AutoReplier:
    """The automated lane's acknowledgements: a decision-matrix task's `auto_reply` template.

    Called by the batch for its automated enquiries. An enquiry gets its task's template when the
    template suits its intent and a reply may go to it (`refusal`: no address, bounce, spam, the
    team's own); bots and auto-replies never reach here (the lane engine and the parser set them
    aside), and the kill switch keeps enquiries out of the automated lane. Each queued reply writes
    an audit row; the drain holds automated replies back while the kill switch is on.
    """

    tasks: dict[str, str | None]  # matrix task → template name
    templates: dict[str, Any]  # name → review.reply_templates.TemplateSpec
    outbound: OutboundSettings
    promise: Any  # Callable[[dict, Decision], str]: the SLA promise in words

    def __call__(
        self, session: Session, candidates: Sequence[tuple[dict[str, Any], Any]], now: datetime
    ) -> int:
        from review.reply_templates import render
        from store import enquiries as enquiry_store

        rows: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for row, decision in candidates:
            name = self.tasks.get(decision.task)
            spec = self.templates.get(name) if name else None
            if spec is None or not spec.suits(decision.intent):
                continue
            target = _BatchEnquiry(
                row["id"], row["channel"], row["source"], row["sender_email"], row["subject"], row["intent"],
                row["queue"], row["message_key"],
            )  # fmt: skip
            sender_name = (row.get("sender_name") or "").strip()
            values = {
                "first_name": sender_name.split()[0] if sender_name else "there",
                "company": str((row.get("enrichment") or {}).get("company") or ""),
                "intent": decision.intent,
                "owner": self.outbound.from_name or "the team",
                "sla_promise": self.promise(row, decision),
            }
            rendered = render(spec, values)
            try:
                reply = outbox_row(
                    target,
                    author="system",
                    body=rendered.body,
                    subject=rendered.subject,
                    outbound=self.outbound,
                    now=now,
                    kind="auto_reply",
                    template=spec.name,
                )
            except ReplyRefused as refused:
                log.info("no automated reply to %s: %s", row["id"], refused)
                continue
            rows.append(reply)
            audits.append(
                {
                    "enquiry_id": row["id"],
                    "created_at": now,
                    "actor": "system",
                    "kind": "auto_reply_queued",
                    "lane": row["lane"],
                    "intent": row["intent"],
                    "queue": row["queue"],
                    "priority": row["priority"],
                    "confidence": row["confidence"],
                    "task": decision.task,
                    "reasons": [f"automated reply {spec.name} queued for {reply['to_address']}"],
                    "policy_version": decision.policy_version,
                    "model_version": row["model_version"],
                }
            )
        added = [audit for reply, audit in zip(rows, audits, strict=True) if reply_outbox.add(session, reply)]
        enquiry_store.add_decisions(session, added)
        return len(added)


@dataclass
class ReplySummary:
    """What one drain pass did."""

    sent: int = 0
    found_in_sent_folder: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "replies_sent": self.sent,
            "replies_found_in_sent_folder": self.found_in_sent_folder,
            "replies_retrying": self.retried,
            "replies_failed": self.failed,
            "replies_deferred": self.deferred,
            "reply_errors": list(self.errors),
        }


def drain_replies(
    factory: sessionmaker[Session],
    sender: ReplySender,
    outbound: OutboundSettings,
    *,
    clock: Clock = utcnow,
    only_ids: Sequence[int] | None = None,
    max_replies: int = 1_000,
    from_name: str | None = None,
    automated_counts: bool = False,
    sender_for: Callable[[str], ReplySender] | None = None,
) -> ReplySummary:
    """Send due replies one at a time (claim and commit, send, commit the outcome).

    `sender_for(source)`: the sender for replies to an enquiry from that source (a mailbox with its
    own SMTP server); `sender` for every reply without it.

    `automated_counts`: an automated acknowledgement also stops the human first-response clock
    (`TRIAGE_SLA__AUTOMATED_REPLY_COUNTS_AS_FIRST_RESPONSE`); by default it does not.
    """
    summary = ReplySummary()
    lease = timedelta(seconds=outbound.lease_seconds)
    for _ in range(max_replies):
        with transaction(factory) as session:
            claimed = reply_outbox.claim_next(session, now=clock(), lease=lease, only_ids=only_ids)
        if claimed is None:
            break
        mailbox = outbound.for_source(claimed.source)
        _send_one(
            factory,
            sender_for(claimed.source) if sender_for is not None else sender,
            mailbox,
            claimed,
            summary,
            clock,
            from_name or mailbox.from_name,
            automated_counts,
        )
    return summary


def _send_one(
    factory: sessionmaker[Session],
    sender: ReplySender,
    outbound: OutboundSettings,
    claimed: ClaimedReply,
    summary: ReplySummary,
    clock: Clock,
    from_name: str | None,
    automated_counts: bool,
) -> None:
    if claimed.kind == "auto_reply":
        with transaction(factory) as session:
            paused, _ = flags.automation_paused(session)
            if paused:  # the kill switch holds automated replies; a person's reply still goes
                reply_outbox.defer(
                    session,
                    claimed.id,
                    until=clock() + KILL_SWITCH_RECHECK,
                    error="held: automation is paused",
                    undo_claim=True,
                )
                summary.deferred += 1
                return
    if claimed.in_doubt:
        if claimed.in_doubt > 1:
            error = (
                "delivery uncertain: sending was interrupted twice; look for Message-ID "
                f"<{claimed.message_id}> in the Sent folder before sending it again"
            )
            _fail(factory, claimed, error, summary, at=clock())
            return
        try:
            found = sender.already_sent(claimed.message_id)
        except TriageError as error:
            log.warning("Sent folder unavailable, re-sending reply %s once: %s", claimed.id, error)
            found = None
        if found:
            with transaction(factory) as session:
                _record_accepted(
                    session,
                    claimed,
                    at=clock(),
                    note="found in the Sent folder",
                    automated_counts=automated_counts,
                )
            summary.found_in_sent_folder += 1
            return
    else:
        now = clock()
        with transaction(factory) as session:
            total, per_domain = reply_outbox.accepted_since(session, since=now - RATE_WINDOW)
            domain = claimed.to_address.rsplit("@", 1)[1].lower()
            if total >= outbound.total_per_hour or per_domain.get(domain, 0) >= outbound.per_domain_per_hour:
                reply_outbox.defer(
                    session, claimed.id, until=now + RATE_WINDOW / 6, error=None, undo_claim=True
                )
                summary.deferred += 1
                return
    message = build_reply(
        OutgoingReply(
            from_address=claimed.from_address,
            from_name=from_name,
            to_address=claimed.to_address,
            subject=claimed.subject,
            body=claimed.body,
            message_id=claimed.message_id,
            in_reply_to=claimed.in_reply_to,
            references=claimed.references,
            date=clock(),
        )
    )
    try:
        sender.send(message)
    except RetriableError as error:
        if claimed.attempts >= outbound.max_attempts:
            _fail(
                factory, claimed, f"gave up after {claimed.attempts} attempts: {error}", summary, at=clock()
            )
            return
        delay = timedelta(seconds=outbound.backoff_seconds * 2 ** (claimed.attempts - 1))
        with transaction(factory) as session:
            reply_outbox.defer(session, claimed.id, until=clock() + delay, error=str(error), undo_claim=False)
        summary.retried += 1
        summary.errors.append(str(error))
        return
    except FatalError as error:
        _fail(factory, claimed, str(error), summary, at=clock())
        return
    with transaction(factory) as session:
        _record_accepted(session, claimed, at=clock(), automated_counts=automated_counts)
    summary.sent += 1


def _fail(
    factory: sessionmaker[Session], claimed: ClaimedReply, error: str, summary: ReplySummary, *, at: datetime
) -> None:
    with transaction(factory) as session:
        reply_outbox.mark_failed(session, claimed.id, error=error)
        _audit(session, claimed, kind="reply_failed", reasons=[f"reply not sent: {error}"], at=at)
    summary.failed += 1
    summary.errors.append(error)


def _record_accepted(
    session: Session,
    claimed: ClaimedReply,
    *,
    at: datetime,
    note: str | None = None,
    automated_counts: bool = False,
) -> None:
    """The server accepted the reply: thread it, audit it, stop the clock, close a person's item."""
    if not reply_outbox.mark_sent(session, claimed.id, at=at, note=note):
        return
    session.add(
        EnquiryMessage(
            enquiry_id=claimed.enquiry_id,
            direction="outbound",
            author=claimed.author,
            message_key=claimed.message_id,
            body=claimed.body,
            sent_at=at,
        )
    )
    reasons = [f"reply sent to {claimed.to_address} as <{claimed.message_id}>"] + ([note] if note else [])
    _audit(session, claimed, kind="reply_sent", reasons=reasons, at=at)
    if claimed.kind == "auto_reply":
        if automated_counts:
            sla_service.stop_first_response(
                session, claimed.enquiry_id, by="system", at=at, source="automated"
            )
    else:
        sla_service.stop_first_response(session, claimed.enquiry_id, by=claimed.author, at=at, source="pages")
        item = review_repo.item_for_enquiry(session, claimed.enquiry_id)
        if item is not None and item.status != "done":
            review_repo.set_item_state(
                session,
                item,
                status="done",
                claimed_by=item.claimed_by or claimed.author,
                claimed_at=item.claimed_at or at,
                closed_at=at,
            )
            sla_service.stop_resolution(session, claimed.enquiry_id, by=claimed.author, at=at)
    session.flush()


def _audit(session: Session, claimed: ClaimedReply, *, kind: str, reasons: list[str], at: datetime) -> None:
    enquiry = review_repo.get_enquiry(session, claimed.enquiry_id)
    if enquiry is None:  # pragma: no cover - the foreign key forbids it
        return
    review_repo.add_decision(
        session,
        {
            "enquiry_id": enquiry.id,
            "created_at": at,
            "actor": claimed.author,
            "kind": kind,
            "lane": enquiry.lane,
            "intent": enquiry.intent,
            "queue": enquiry.queue,
            "priority": enquiry.priority,
            "confidence": enquiry.confidence,
            "task": claimed.kind,
            "reasons": reasons,
            "policy_version": "human" if claimed.kind == "reply" else "automated",
            "model_version": enquiry.model_version,
        },
    )
