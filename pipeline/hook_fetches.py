"""Read the records that web-hook events name by id only (HubSpot contacts), and store them as raw.

An event waits in `hook_fetches` until its contact is read. Each pass reads the due events in one
batched API call per 100, stores each contact with its event as a raw record under the event's key
(so a re-run adds nothing), and marks the events fetched. The API call runs outside any transaction:
the claim leases the events (their next attempt moves `LEASE` ahead) and commits, so no lock is held
while the API answers or times out (on SQLite, web hooks would wait for it). A contact HubSpot does
not know is stored too, with the reason, and quarantined by the pipeline: nothing is dropped. While
the API is down the events wait with capped backoff and the error, which `triage status` shows.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from connectors.webhooks.hubspot import fetched_payload
from models.errors import TriageError
from models.records import Channel, RawRecordIn
from store import hook_fetches, raw, source_status
from store.common import Clock, utcnow
from store.db import transaction
from store.tables import HookFetch

log = logging.getLogger(__name__)
STATUS_SOURCE = "hubspot:contacts"
# How long claimed events are another pass's to skip: past it (this process died mid-call), they are
# claimed again; their raw records' keys make a second store add nothing.
LEASE = timedelta(minutes=10)


class ContactReader(Protocol):
    def read_contacts(self, ids: list[str]) -> dict[str, dict[str, object]]: ...


@dataclass
class FetchSummary:
    fetched: int = 0
    missing: int = 0
    error: str | None = None


def fetch_waiting(
    factory: sessionmaker[Session], reader: ContactReader, *, clock: Clock = utcnow, limit: int = 100
) -> FetchSummary:
    """One pass over the due events; the API's failure is recorded, never raised."""
    summary = FetchSummary()
    with transaction(factory) as session:
        now = clock()
        rows = hook_fetches.claim_due(session, now=now, limit=limit)
        if not rows:
            return summary
        claimed = [row.id for row in rows]
        ids = [str(json.loads(row.payload).get("objectId")) for row in rows]
        hook_fetches.lease(rows, until=now + LEASE)
    contacts: dict[str, dict[str, object]] = {}
    try:
        contacts = reader.read_contacts(ids)
    except Exception as error:  # the API down, or the token refused: the events wait
        message = str(error) if isinstance(error, TriageError) else f"{error.__class__.__name__}: {error}"
        log.warning("HubSpot contacts could not be read (%d events wait): %s", len(ids), message)
        summary.error = message
    with transaction(factory) as session:
        rows = hook_fetches.waiting_with_ids(session, claimed)
        ids = [str(json.loads(row.payload).get("objectId")) for row in rows]
        if summary.error is not None:
            hook_fetches.mark_retry(rows, error=summary.error, now=now)
        else:
            _store(session, rows, ids, contacts, now=now, summary=summary)
            hook_fetches.mark_fetched(rows, now=now)
        source_status.record_attempt(
            session,
            source=STATUS_SOURCE,
            channel=Channel.FORM.value,
            now=now,
            stored=summary.fetched + summary.missing,
            error=summary.error,
        )
    return summary


def _store(
    session: Session,
    rows: list[HookFetch],
    ids: list[str],
    contacts: dict[str, dict[str, object]],
    *,
    now: datetime,
    summary: FetchSummary,
) -> None:
    by_source: dict[str, list[RawRecordIn]] = defaultdict(list)
    for row, contact_id in zip(rows, ids, strict=True):
        contact = contacts.get(contact_id)
        if contact is None:
            summary.missing += 1
        else:
            summary.fetched += 1
        payload = fetched_payload(
            row.payload, contact, None if contact else f"HubSpot has no contact {contact_id}"
        )
        by_source[row.source].append(
            RawRecordIn(
                source=row.source,
                channel=Channel.FORM,
                external_key=row.external_key,
                payload=payload,
                received_at=row.received_at,
            )
        )
    for source, records in by_source.items():
        raw.save_batch(session, records, source=source, state={"last_fetched_at": str(now)}, now=now)
