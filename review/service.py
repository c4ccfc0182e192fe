"""What people do in the review queue, as plain functions over a session.

Each action writes one `decisions` audit row; a correction also writes a `corrections` row, the label
the next training run learns from. Only a message to the customer stops the first-response SLA clock:
claiming, accepting, correcting and noting do not (issue 17). A reply written here goes to the reply
outbox (`store/reply_outbox.py`) and the clock stops when the SMTP server accepts it
(`pipeline/replies.py`); `record_touch` stops it by hand for a customer answered elsewhere (a phone
call, a chat without an e-mail address), with a reason. Accepting closes the item and its resolution
clock (the triage work is done) but leaves the first-response clock running until the customer is
answered. Callers own the transaction: these functions flush, never commit.

Who may act: an open item is claimed implicitly by whoever acts on it; an item claimed by someone else
refuses actions (`ItemClaimedError`) unless `override=True` (the web passes it for ops leads and admins).
An item someone else closed takes corrections and replies only with `override=True`: correcting labels the
training data, so reopening another person's finished work is the ops lead's call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from connectors.smtp_outbound import OutboundSettings
from models import live_precision
from models.errors import TriageError
from review.choices import BUNDLED, TaxonomyChoices, intents_with
from review.choices import INTENTS as INTENTS
from review.choices import LANES as LANES
from review.choices import PRIORITIES as PRIORITIES
from review.choices import QUEUES as QUEUES
from review.choices import ROLES as ROLES
from sla import service as sla_service
from store import model_registry, review_repo
from store.common import utcnow
from store.tables import Enquiry, ReviewItem

HUMAN_POLICY_VERSION = "human"
# Only a spot check's review item carries the automated lane (pipeline/spot_checks.py).
SPOT_CHECK_LANE = "automate"
MAX_TEXT_CHARS = 20_000


class ReviewError(TriageError):
    """An action that cannot be done; the message says why, for the person who tried."""


class ItemNotFoundError(ReviewError):
    """No review item with that id."""


class ItemClaimedError(ReviewError):
    """Someone else holds the item."""


class ItemClosedError(ReviewError):
    """The item is done; it can take notes and corrections, not a claim or an accept."""


@dataclass(frozen=True)
class QueueEntry:
    """One line of the queue as people see it: the row plus the time left and whether it breached."""

    item_id: int
    enquiry_id: str
    status: str
    lane: str
    queue: str
    claimed_by: str | None
    due_at: datetime | None
    seconds_left: int | None
    breached: bool
    subject: str
    sender: str
    intent: str
    priority: str
    confidence: float
    owner: str | None = None
    team: str | None = None
    account: str | None = None
    customer: bool = False
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (times as ISO 8601)."""
        return {
            "item_id": self.item_id,
            "enquiry_id": self.enquiry_id,
            "status": self.status,
            "lane": self.lane,
            "queue": self.queue,
            "claimed_by": self.claimed_by,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "seconds_left": self.seconds_left,
            "breached": self.breached,
            "subject": self.subject,
            "sender": self.sender,
            "intent": self.intent,
            "priority": self.priority,
            "confidence": round(self.confidence, 4),
            "owner": self.owner,
            "team": self.team,
            "account": self.account,
            "customer": self.customer,
            "language": self.language,
        }


@dataclass(frozen=True)
class QueuePage:
    entries: list[QueueEntry]
    total: int
    limit: int
    offset: int


def format_time_left(seconds: int | None) -> str:
    """'2h 05m', '12m', 'overdue 1h 03m', or '—' when there is no due time."""
    if seconds is None:
        return "—"
    sign = "overdue " if seconds < 0 else ""
    minutes = abs(seconds) // 60
    days, minutes = divmod(minutes, 60 * 24)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    return f"{sign}{minutes}m"


def list_queue(
    session: Session,
    *,
    queue: str | None = None,
    intent: str | None = None,
    lane: str | None = None,
    claimed_by: str | None = None,
    now: datetime,
    limit: int = 50,
    offset: int = 0,
    owner_first: str | None = None,
    owner: str | None = None,
) -> QueuePage:
    """Open and claimed items ordered by SLA due time, each with the time left and a breached flag
    (`owner_first`: that user's own items first, "My items")."""
    limit = max(1, min(limit, 500))
    offset = max(0, offset)
    rows, total = review_repo.queue_rows(
        session,
        queue=queue,
        intent=intent,
        lane=lane,
        claimed_by=claimed_by,
        limit=limit,
        offset=offset,
        owner_first=owner_first,
        owner=owner,
    )
    entries = []
    for row in rows:
        seconds_left = int((row.due_at - now).total_seconds()) if row.due_at else None
        sender = row.sender_name or row.sender_email or "unknown sender"
        if row.sender_name and row.sender_email:
            sender = f"{row.sender_name} <{row.sender_email}>"
        entries.append(
            QueueEntry(
                item_id=row.item_id,
                enquiry_id=row.enquiry_id,
                status=row.status,
                lane=row.lane,
                queue=row.queue,
                claimed_by=row.claimed_by,
                due_at=row.due_at,
                seconds_left=seconds_left,
                breached=seconds_left is not None and seconds_left < 0,
                subject=row.subject,
                sender=sender,
                intent=row.intent,
                priority=row.priority,
                confidence=row.confidence,
                owner=row.owner,
                team=row.team,
                account=(row.enrichment or {}).get("account"),
                customer=bool((row.enrichment or {}).get("customer")),
                language=row.language,
            )
        )
    return QueuePage(entries=entries, total=total, limit=limit, offset=offset)


@dataclass(frozen=True)
class ItemView:
    """Everything the enquiry page shows."""

    item: ReviewItem
    enquiry: Enquiry
    messages: list[Any]
    audit: list[Any]
    seconds_left: int | None
    proposal: dict[str, str]
    corrected: bool


def item_view(session: Session, item_id: int, *, now: datetime) -> ItemView:
    """The item, its enquiry, the thread and the audit trail."""
    item, enquiry = _load(session, item_id)
    seconds_left = int((item.due_at - now).total_seconds()) if item.due_at else None
    current = {"intent": enquiry.intent, "priority": enquiry.priority, "queue": enquiry.queue}
    first = review_repo.first_correction(session, enquiry.id)
    # Corrections overwrite the enquiry; the model's own proposal survives in the first correction.
    proposal = (
        {key: str(first.previous.get(key, value)) for key, value in current.items()} if first else current
    )
    return ItemView(
        item=item,
        enquiry=enquiry,
        messages=review_repo.thread_messages(session, enquiry.id),
        audit=review_repo.decisions_for(session, enquiry.id),
        seconds_left=seconds_left,
        proposal=proposal,
        corrected=proposal != current,  # an accepted proposal is a confirmation, not a change
    )


def claim(session: Session, item_id: int, *, user: str, now: datetime | None = None) -> bool:
    """Claim an item atomically; False if someone else holds it or it is done. Not a first touch."""
    now = now or utcnow()
    item, _ = _load(session, item_id)
    if item.status == "claimed" and item.claimed_by == user:
        return True
    if not review_repo.claim_item(session, item_id, user=user, now=now):
        return False
    item, enquiry = _load(session, item_id)
    _audit(session, enquiry, actor=user, kind="claim", now=now, reasons=[f"claimed by {user}"])
    return True


def accept(
    session: Session, item_id: int, *, user: str, now: datetime | None = None, override: bool = False
) -> None:
    """Accept the model's proposal as it stands; the item and its resolution clock are done.

    The first-response clock keeps running: accepting answers no customer. The accepted proposal is a
    confirmed label: a `corrections` row whose intent equals its `previous` intent, so retraining
    (`models.retraining`) learns from what people confirm, not only from what they change.
    """
    now = now or utcnow()
    item, enquiry = _take(session, item_id, user=user, now=now, override=override)
    if item.status == "done":
        raise ItemClosedError(f"item {item_id} is already done")
    current = {"intent": enquiry.intent, "priority": enquiry.priority, "queue": enquiry.queue}
    review_repo.add_correction(
        session,
        {
            "enquiry_id": enquiry.id,
            "corrected_by": user,
            **current,
            "previous": current,
            "model_version": enquiry.model_version,
            "created_at": now,
        },
    )
    _audit(session, enquiry, actor=user, kind="accept", now=now, reasons=["proposal accepted"])
    live_precision.after_review(session, enquiry.id, intent=current["intent"], by=user, now=now)
    _close(session, item, by=user, at=now)


def correct(
    session: Session,
    item_id: int,
    *,
    user: str,
    intent: str,
    priority: str,
    queue: str,
    now: datetime | None = None,
    override: bool = False,
    taxonomy: TaxonomyChoices = BUNDLED,
) -> None:
    """Record the right intent, priority and queue: a labelled example for retraining and an audit row.

    The enquiry and the item take the corrected values; the item stays with the person who corrected it.
    Intents: the taxonomy's and the active model's; queues: the taxonomy's and the bundled ones.
    """
    _check_choice("intent", intent, allowed_intents(session, taxonomy))
    _check_choice("priority", priority, PRIORITIES)
    _check_choice("queue", queue, taxonomy.queues)
    now = now or utcnow()
    item, enquiry = _take(session, item_id, user=user, now=now, override=override, allow_done=True)
    previous = {"intent": enquiry.intent, "priority": enquiry.priority, "queue": enquiry.queue}
    review_repo.add_correction(
        session,
        {
            "enquiry_id": enquiry.id,
            "corrected_by": user,
            "intent": intent,
            "priority": priority,
            "queue": queue,
            "previous": previous,
            "model_version": enquiry.model_version,
            "created_at": now,
        },
    )
    enquiry.intent, enquiry.priority, enquiry.queue = intent, priority, queue
    item.queue, item.intent = queue, intent
    changed = [
        f"{key}: {previous[key]} → {value}"
        for key, value in (("intent", intent), ("priority", priority), ("queue", queue))
        if previous[key] != value
    ]
    _audit(session, enquiry, actor=user, kind="correction", now=now, reasons=changed or ["confirmed as is"])
    live_precision.after_review(session, enquiry.id, intent=intent, by=user, now=now)


def reassign(
    session: Session,
    item_id: int,
    *,
    user: str,
    to_user: str | None,
    now: datetime | None = None,
    override: bool = False,
) -> None:
    """Hand the item to another person, or back to the open queue when `to_user` is None."""
    now = now or utcnow()
    item, enquiry = _take(session, item_id, user=user, now=now, override=override, claim_if_open=False)
    if item.status == "done":
        raise ItemClosedError(f"item {item_id} is already done")
    if to_user is not None and review_repo.get_user(session, to_user) is None:
        raise ReviewError(f"no user named {to_user!r}")
    if to_user is None:
        review_repo.set_item_state(session, item, status="open", claimed_by=None, claimed_at=None)
        reason = "released to the queue"
    else:
        review_repo.set_item_state(session, item, status="claimed", claimed_by=to_user, claimed_at=now)
        # The owner moves too, so both people's open-item counts (routing's loads) re-balance at once.
        previous = item.owner
        item.owner, item.assigned_at = to_user, now
        reason = f"reassigned to {to_user}" + (f" (owner was {previous})" if previous else "")
    _audit(session, enquiry, actor=user, kind="reassign", now=now, reasons=[reason])


def send_reply(
    session: Session,
    item_id: int,
    *,
    user: str,
    text: str,
    outbound: OutboundSettings,
    subject: str | None = None,
    template: str | None = None,
    now: datetime | None = None,
    override: bool = False,
) -> int:
    """Write a reply to the customer into the reply outbox; returns its id (the drain sends it).

    Nothing stops here: the first-response clock stops, and the item closes, when the SMTP server
    accepts the reply (`pipeline.replies`). Refused (ReviewError) when the enquiry has no address to
    reply to, a bad or bounce address, or is spam: the message says what to do instead.
    """
    from pipeline.replies import ReplyRefused, enqueue_reply

    now = now or utcnow()
    _, enquiry = _take(session, item_id, user=user, now=now, override=override, allow_done=True)
    try:
        reply_id, new = enqueue_reply(
            session,
            enquiry,
            author=user,
            body=text[:MAX_TEXT_CHARS],
            subject=subject,
            template=template,
            outbound=outbound,
            now=now,
        )
    except ReplyRefused as error:
        raise ReviewError(str(error)) from error
    if new:
        reasons = ["reply queued" + (f" from template {template}" if template else "")]
        _audit(session, enquiry, actor=user, kind="reply_queued", now=now, reasons=reasons)
    return reply_id


def mark_replied(
    session: Session,
    item_id: int,
    *,
    user: str,
    text: str | None = None,
    now: datetime | None = None,
    override: bool = False,
) -> None:
    """Record that the customer was answered elsewhere (a call, a chat, their own mail client).

    The person vouches for it, so it stops the first-response clock now (source `pages`) and closes
    the item; the text, if given, is kept in the thread. Replies sent from here use `send_reply`.
    """
    now = now or utcnow()
    item, enquiry = _take(session, item_id, user=user, now=now, override=override, allow_done=True)
    body = (text or "").strip()
    if body:
        review_repo.add_message(
            session,
            {
                "enquiry_id": enquiry.id,
                "direction": "outbound",
                "author": user,
                "body": body[:MAX_TEXT_CHARS],
                "sent_at": now,
            },
        )
    _audit(
        session,
        enquiry,
        actor=user,
        kind="reply",
        now=now,
        reasons=["replied" + (" (text recorded)" if body else "")],
    )
    _stop_clock(session, enquiry.id, by=user, at=now)
    if item.status != "done":
        _close(session, item, by=user, at=now)


def add_note(session: Session, item_id: int, *, user: str, text: str, now: datetime | None = None) -> None:
    """Add a note to the item's audit trail; anyone may, whoever holds the item."""
    body = text.strip()
    if not body:
        raise ReviewError("a note needs some text")
    now = now or utcnow()
    _, enquiry = _load(session, item_id)
    _audit(session, enquiry, actor=user, kind="note", now=now, reasons=[body[:MAX_TEXT_CHARS]])


# --- helpers ----------------------------------------------------------------------------------------


def allowed_intents(session: Session, taxonomy: TaxonomyChoices = BUNDLED) -> tuple[str, ...]:
    """The taxonomy's intents plus the active model's own (a team's trained labels)."""
    return intents_with(model_registry.active_labels(session), taxonomy)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ReviewError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")


def _load(session: Session, item_id: int) -> tuple[ReviewItem, Enquiry]:
    item = review_repo.get_item(session, item_id)
    if item is None:
        raise ItemNotFoundError(f"no review item {item_id}")
    enquiry = review_repo.get_enquiry(session, item.enquiry_id)
    if enquiry is None:  # pragma: no cover - the foreign key forbids it
        raise ItemNotFoundError(f"review item {item_id} has no enquiry")
    return item, enquiry


def _take(
    session: Session,
    item_id: int,
    *,
    user: str,
    now: datetime,
    override: bool,
    allow_done: bool = False,
    claim_if_open: bool = True,
) -> tuple[ReviewItem, Enquiry]:
    """Load an item for an action: claim it if open, refuse if another person holds it."""
    item, enquiry = _load(session, item_id)
    if item.status == "done":
        if not allow_done:
            raise ItemClosedError(f"item {item_id} is already done")
        if item.claimed_by not in (None, user) and not override:
            # Correcting labels the training data: another person's closed item is the ops lead's call.
            raise ItemClaimedError(
                f"item {item_id} was closed by {item.claimed_by}; only an ops lead can reopen or correct it"
            )
        return item, enquiry
    if item.status == "open" and claim_if_open and not claim(session, item_id, user=user, now=now):
        item, enquiry = _load(session, item_id)  # someone else claimed it a moment ago
    if item.status == "claimed" and item.claimed_by != user and not override:
        raise ItemClaimedError(f"item {item_id} is claimed by {item.claimed_by}")
    return item, enquiry


def _audit(
    session: Session, enquiry: Enquiry, *, actor: str, kind: str, now: datetime, reasons: list[str]
) -> None:
    review_repo.add_decision(
        session,
        {
            "enquiry_id": enquiry.id,
            "created_at": now,
            "actor": actor,
            "kind": kind,
            "lane": enquiry.lane,
            "intent": enquiry.intent,
            "queue": enquiry.queue,
            "priority": enquiry.priority,
            "confidence": enquiry.confidence,
            "task": f"review_{kind}",
            "reasons": reasons,
            "policy_version": HUMAN_POLICY_VERSION,
            "model_version": enquiry.model_version,
        },
    )


def _stop_clock(session: Session, enquiry_id: str, *, by: str, at: datetime) -> bool:
    """Stop the first-response clock (first touch wins; later calls change nothing)."""
    return sla_service.stop_first_response(session, enquiry_id, by=by, at=at, source="pages")


def _close(session: Session, item: ReviewItem, *, by: str, at: datetime) -> None:
    """Mark the item done and stop the enquiry's resolution clock (not a spot check's: its enquiry was
    automated, and its SLA stays as automated)."""
    review_repo.set_item_state(
        session, item, status="done", claimed_by=item.claimed_by, claimed_at=item.claimed_at, closed_at=at
    )
    if item.lane != SPOT_CHECK_LANE:
        sla_service.stop_resolution(session, item.enquiry_id, by=by, at=at)
