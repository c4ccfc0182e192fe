"""Erasure on request: remove or empty everything the store holds of one person, keep a tombstone.

The person is found by e-mail address (case-insensitive): the enquiries they sent, the messages they
wrote in any thread, and every raw record or waiting web-hook fetch whose bytes name the address.

What happens to each kind of row:
- enquiries they sent: kept as rows (decisions, SLA timers and review items point at them, and the SLA
  report and the audit count them), with every personal field emptied: address, name, phone,
  subject, body, attributes (chat transcripts), attachments, explanation, enrichment (all but the
  segment). The content hash stays, so a re-delivered copy is recognised as a duplicate.
- their threads' messages and messages they wrote elsewhere: body and author emptied.
- raw records and quarantine reasons: bytes emptied (`payload_pruned_at` set), reason replaced.
- web-hook fetches naming the address: deleted.
- review notes and replies on their enquiries, and any audit row whose text names them: text
  replaced by "[erased]" (the row, its actor and time stay).
- corrections of their enquiries: deleted (a label without its text trains nothing).
- CRM: local leads and tasks deleted; outbox payloads emptied, writes not yet sent cancelled
  (`erased`); with the Salesforce backend a `delete_lead` write per lead is queued, which the drain
  sends (it deletes the lead and its tasks there).
- a tombstone row in `erasures`: who asked, when, row counts and an HMAC of the address (the key is a
  secret setting), never the address.

All of it is one transaction: an erasure interrupted half-way has changed nothing, and a re-run does
it whole. A dry run does the same work and rolls it back, so its counts are exact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from store.common import Clock, insert_ignore, utcnow
from store.tables import (
    Correction,
    CrmOutbox,
    DecisionRow,
    Enquiry,
    EnquiryMessage,
    Erasure,
    HookFetch,
    LocalLead,
    LocalTask,
    Quarantine,
    RawRecord,
)

ERASED = "[erased]"
TEXT_KINDS = ("note", "reply")


def subject_hmac(key: bytes, email: str) -> str:
    """The tombstone's keyed hash of an address: recognises a repeat request, reveals nothing."""
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


@dataclass
class ErasureResult:
    dry_run: bool
    subject_hmac: str
    counts: dict[str, int] = field(default_factory=dict)
    tombstone_id: int | None = None

    @property
    def found(self) -> bool:
        return any(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "found": self.found,
            "subject_hmac": self.subject_hmac,
            "tombstone_id": self.tombstone_id,
            "counts": self.counts,
        }


def _payload_names(session: Session, column: Any, needle: str) -> Any:
    """`column` (bytes) contains `needle`, case-insensitively, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        # 'escape' encoding keeps ASCII as it is, so an address is found whatever the other bytes are.
        return sa.func.strpos(sa.func.lower(sa.func.encode(column, "escape")), needle) > 0
    return sa.func.instr(sa.func.lower(sa.cast(column, sa.Text)), needle) > 0


def _names_them(text: str, needles: list[str]) -> bool:
    lowered = text.lower()
    return any(needle in lowered for needle in needles)


def erase_person(
    factory: sessionmaker[Session],
    email: str,
    *,
    requested_by: str,
    key: bytes,
    crm_backend: str = "local",
    dry_run: bool = False,
    clock: Clock = utcnow,
) -> ErasureResult:
    """Erase what the store holds of the person with this address (see the module docstring)."""
    address = email.strip().lower()
    if "@" not in address:
        raise ValueError(f"not an e-mail address: {email!r}")
    now = clock()
    result = ErasureResult(dry_run=dry_run, subject_hmac=subject_hmac(key, address))
    counts = result.counts
    session = factory()
    try:
        session.begin()
        rows = session.execute(
            sa.select(Enquiry.id, Enquiry.raw_id, Enquiry.sender_name, Enquiry.enrichment).where(
                sa.func.lower(Enquiry.sender_email) == address
            )
        ).all()
        ids = [row.id for row in rows]
        needles = [address, *sorted({row.sender_name.strip().lower() for row in rows if row.sender_name})]

        # Messages: every message of their threads, and what they wrote in anyone else's.
        message_rows = session.execute(
            sa.select(EnquiryMessage.id, EnquiryMessage.raw_id).where(
                sa.or_(EnquiryMessage.enquiry_id.in_(ids), sa.func.lower(EnquiryMessage.author) == address)
            )
        ).all()
        message_ids = [row.id for row in message_rows]
        # Raw bytes: their enquiries' and messages' records, and any record whose bytes name the address.
        # Found before the first write: on SQLite the scan then runs without holding the write lock.
        linked = {row.raw_id for row in rows} | {row.raw_id for row in message_rows if row.raw_id is not None}
        raw_ids = set(
            session.scalars(
                sa.select(RawRecord.id).where(
                    sa.or_(
                        RawRecord.id.in_(linked),
                        RawRecord.enquiry_id.in_(ids),
                        _payload_names(session, RawRecord.payload, address),
                    )
                )
            )
        )
        fetch_ids = list(
            session.scalars(
                sa.select(HookFetch.id).where(_payload_names(session, HookFetch.payload, address))
            )
        )
        if message_ids:
            session.execute(
                sa.update(EnquiryMessage)
                .where(EnquiryMessage.id.in_(message_ids))
                .values(body="", author=None)
            )
        counts["messages"] = len(message_ids)

        for row in rows:
            segment = (row.enrichment or {}).get("segment")
            session.execute(
                sa.update(Enquiry)
                .where(Enquiry.id == row.id)
                .values(
                    sender_email=None,
                    sender_name=None,
                    phone=None,
                    subject=ERASED,
                    subject_norm="",
                    body="",
                    attributes={},
                    attachments=[],
                    explanation=[],
                    enrichment={"segment": segment} if segment else {},
                    body_pruned_at=now,
                )
            )
            thread_key = session.scalar(sa.select(Enquiry.thread_key).where(Enquiry.id == row.id))
            if thread_key and address in thread_key.lower():
                pseudonym = "erased:" + subject_hmac(key, thread_key)[:32]
                session.execute(sa.update(Enquiry).where(Enquiry.id == row.id).values(thread_key=pseudonym))
        counts["enquiries"] = len(ids)

        # The audit trail: notes and replies on their enquiries, and any row whose text names them.
        scrubbed = 0
        for decision_id, kind, reasons in session.execute(
            sa.select(DecisionRow.id, DecisionRow.kind, DecisionRow.reasons).where(
                DecisionRow.enquiry_id.in_(ids)
            )
        ):
            if kind in TEXT_KINDS or _names_them(json.dumps(reasons), needles):
                session.execute(
                    sa.update(DecisionRow).where(DecisionRow.id == decision_id).values(reasons=[ERASED])
                )
                scrubbed += 1
        counts["audit_texts"] = scrubbed
        counts["corrections"] = _rowcount(
            session.execute(sa.delete(Correction).where(Correction.enquiry_id.in_(ids)))
        )

        # CRM: the local tables go; the outbox keeps its rows (idempotency) without payloads.
        counts["crm_tasks"] = _rowcount(
            session.execute(sa.delete(LocalTask).where(LocalTask.lead_external_id.in_(ids)))
        )
        counts["crm_leads"] = _rowcount(
            session.execute(sa.delete(LocalLead).where(LocalLead.external_id.in_(ids)))
        )
        counts["crm_writes_cancelled"] = _rowcount(
            session.execute(
                sa.update(CrmOutbox)
                .where(
                    CrmOutbox.enquiry_id.in_(ids),
                    CrmOutbox.status.in_(["pending", "failed"]),
                    CrmOutbox.operation != "delete_lead",
                )
                .values(status="erased", last_error="erased on request")
            )
        )
        counts["crm_payloads"] = _rowcount(
            session.execute(
                sa.update(CrmOutbox)
                .where(CrmOutbox.enquiry_id.in_(ids), CrmOutbox.operation != "delete_lead")
                .values(payload={}, payload_pruned_at=now, last_error=None)
            )
        )
        counts["crm_deletes_queued"] = 0
        if crm_backend != "local":
            with_leads = list(
                session.scalars(
                    sa.select(CrmOutbox.enquiry_id)
                    .where(CrmOutbox.enquiry_id.in_(ids), CrmOutbox.operation == "upsert_lead")
                    .distinct()
                )
            )
            deletes = []
            for enquiry_id in with_leads:
                task_keys = list(
                    session.scalars(
                        sa.select(CrmOutbox.idempotency_key).where(
                            CrmOutbox.enquiry_id == enquiry_id, CrmOutbox.operation == "create_task"
                        )
                    )
                )
                deletes.append(
                    {
                        "idempotency_key": f"erase:{enquiry_id}",
                        "enquiry_id": enquiry_id,
                        "operation": "delete_lead",
                        "payload": {"task_keys": task_keys},
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
            counts["crm_deletes_queued"] = insert_ignore(
                session, CrmOutbox, deletes, conflict=["idempotency_key"]
            )

        if raw_ids:
            session.execute(
                sa.update(RawRecord)
                .where(RawRecord.id.in_(raw_ids))
                .values(payload=b"", payload_pruned_at=now, status_reason=None)
            )
            session.execute(sa.update(Quarantine).where(Quarantine.raw_id.in_(raw_ids)).values(reason=ERASED))
        counts["raw_records"] = len(raw_ids)
        if fetch_ids:
            session.execute(sa.delete(HookFetch).where(HookFetch.id.in_(fetch_ids)))
        counts["hook_fetches"] = len(fetch_ids)

        if not dry_run:
            tombstone = Erasure(
                subject_hmac=result.subject_hmac,
                requested_by=requested_by,
                requested_at=now,
                completed_at=now,
                counts=dict(counts),
            )
            session.add(tombstone)
            session.flush()
            result.tombstone_id = tombstone.id
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    return result


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def tombstones(session: Session, *, limit: int = 100) -> list[Erasure]:
    """Erasure requests, newest first."""
    return list(session.scalars(sa.select(Erasure).order_by(Erasure.id.desc()).limit(limit)))
