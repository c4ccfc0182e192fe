"""Enquiries, their conversation, the audit trail, shadow predictions and review items."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.common import insert_ignore
from store.tables import (
    DecisionRow,
    Enquiry,
    EnquiryMessage,
    ReviewItem,
    ShadowPrediction,
    SlaTimer,
    SpotCheck,
)


def seen_content(session: Session, content_hashes: Iterable[str]) -> set[tuple[str | None, str]]:
    """(message key, content hash) pairs already stored, as enquiries or as thread messages."""
    hashes = list(set(content_hashes))
    if not hashes:
        return set()
    found: set[tuple[str | None, str]] = set()
    for model in (Enquiry, EnquiryMessage):
        rows = session.execute(
            sa.select(model.message_key, model.content_hash).where(model.content_hash.in_(hashes))
        )
        found.update((key, digest) for key, digest in rows if digest is not None)
    return found


def enquiries_by_message_key(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Message key → enquiry id, for keys that are an enquiry's first message or a later one."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    found: dict[str, str] = {}
    rows = session.execute(sa.select(Enquiry.message_key, Enquiry.id).where(Enquiry.message_key.in_(wanted)))
    found.update({key: enquiry_id for key, enquiry_id in rows if key})
    rows = session.execute(
        sa.select(EnquiryMessage.message_key, EnquiryMessage.enquiry_id).where(
            EnquiryMessage.message_key.in_(wanted)
        )
    )
    for key, enquiry_id in rows:
        if key:
            found.setdefault(key, enquiry_id)
    return found


def enquiries_by_thread_key(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Conversation key → the enquiry it opened (the earliest, if several)."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(Enquiry.thread_key, Enquiry.id)
        .where(Enquiry.thread_key.in_(wanted))
        .order_by(Enquiry.received_at.desc())
    )
    return {key: enquiry_id for key, enquiry_id in rows if key}


def enquiries_by_sender_subject(
    session: Session, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(sender, normalised subject) → the sender's latest enquiry with that subject (threading fallback)."""
    wanted = list(set(pairs))
    if not wanted:
        return {}
    senders = {sender for sender, _ in wanted}
    rows = session.execute(
        sa.select(Enquiry.sender_email, Enquiry.subject_norm, Enquiry.id)
        .where(Enquiry.sender_email.in_(senders))
        .order_by(Enquiry.received_at)
    )
    wanted_set = set(wanted)
    found: dict[tuple[str, str], str] = {}
    for sender, subject, enquiry_id in rows:
        if sender and (sender, subject) in wanted_set:
            found[(sender, subject)] = enquiry_id  # later rows win: the latest enquiry
    return found


def known_chat_keys(session: Session, enquiry_ids: Iterable[str]) -> dict[str, set[str]]:
    """Chat message keys an enquiry already holds (its first transcript and threaded messages)."""
    ids = list(set(enquiry_ids))
    result: dict[str, set[str]] = {enquiry_id: set() for enquiry_id in ids}
    if not ids:
        return result
    for enquiry_id, attributes in session.execute(
        sa.select(Enquiry.id, Enquiry.attributes).where(Enquiry.id.in_(ids))
    ):
        keys = json.loads(attributes.get("message_keys", "[]"))
        result[enquiry_id].update(item[0] for item in keys)
    rows = session.execute(
        sa.select(EnquiryMessage.enquiry_id, EnquiryMessage.message_key).where(
            EnquiryMessage.enquiry_id.in_(ids)
        )
    )
    for enquiry_id, key in rows:
        if key:
            result[enquiry_id].add(key)
    return result


def add_enquiries(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    return insert_ignore(session, Enquiry, rows, conflict=["id"])


def add_messages(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(sa.insert(EnquiryMessage), list(rows))


def add_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append audit rows; the table is never updated or deleted from."""
    if rows:
        session.connection().execute(sa.insert(DecisionRow), list(rows))


def add_shadow_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    return insert_ignore(session, ShadowPrediction, rows, conflict=["enquiry_id", "model_version"])


def add_review_items(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    return insert_ignore(session, ReviewItem, rows, conflict=["enquiry_id"])


def get_enquiry(session: Session, enquiry_id: str) -> Enquiry | None:
    return session.get(Enquiry, enquiry_id)


def _count(session: Session, statement: sa.Select[Any]) -> int:
    return int(session.scalar(statement) or 0)


def totals(session: Session) -> dict[str, Any]:
    """Counts across the whole database, for summaries and status screens."""
    spot_checks = _count(session, sa.select(sa.func.count()).select_from(SpotCheck))
    rows = session.execute(sa.select(Enquiry.lane, sa.func.count()).group_by(Enquiry.lane))
    lanes: dict[str, int] = {str(lane): int(count) for lane, count in rows}
    return {
        "enquiries": sum(int(v) for v in lanes.values()),
        "lanes": {str(k): int(v) for k, v in lanes.items()},
        "spam_discarded": _count(
            session,
            sa.select(sa.func.count())
            .select_from(Enquiry)
            .where(Enquiry.intent == "spam", Enquiry.lane == "automate"),
        ),
        "threaded_messages": _count(session, sa.select(sa.func.count()).select_from(EnquiryMessage)),
        # The pipeline's decisions (one per enquiry), and what people did since (claims, replies, ...).
        "audit_rows": _count(
            session, sa.select(sa.func.count()).select_from(DecisionRow).where(DecisionRow.kind == "triage")
        ),
        "people_actions": _count(
            session, sa.select(sa.func.count()).select_from(DecisionRow).where(DecisionRow.kind != "triage")
        ),
        # Spot checks (automated enquiries also reviewed) are counted apart: their enquiry was automated.
        "review_items": _count(session, sa.select(sa.func.count()).select_from(ReviewItem)) - spot_checks,
        "spot_checks": spot_checks,
        "review_open": _count(
            session, sa.select(sa.func.count()).select_from(ReviewItem).where(ReviewItem.status != "done")
        ),
        "sla_timers": _count(session, sa.select(sa.func.count()).select_from(SlaTimer)),
    }
