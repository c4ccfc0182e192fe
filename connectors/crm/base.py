"""The contract every CRM backend follows, and the canonical lead the pipeline hands it.

The pipeline writes canonical payloads (our own field names, see `LEAD_FIELDS`) into the outbox; each
backend maps them onto its own fields. Every write carries an idempotency key derived from the enquiry
id, so sending the same outbox row twice updates instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from connectors.base import CheckResult

# Canonical lead fields the pipeline fills (values may be None). Backends map these to their own.
LEAD_FIELDS = (
    "external_id",
    "email",
    "first_name",
    "last_name",
    "company",
    "phone",
    "domain",
    "industry",
    "employees",
    "arr_estimate",
    "segment",
    "intent",
    "queue",
    "priority",
    "lane",
    "confidence",
    "channel",
    "source",
    "subject",
    "description",
    "received_at",
    "model_version",
    "policy_version",
    "campaign",
    "lead_source",
    "owner",  # the user owner routing chose (pipeline/routing.py)
    "owner_crm_id",  # that user's CRM id (`--crm-user-id`): OwnerId on Salesforce
)
TASK_FIELDS = ("subject", "description", "due_at", "queue", "priority", "owner_queue")


@dataclass(frozen=True, slots=True)
class LeadWrite:
    """Create the lead with this external id, or update it if it exists."""

    idempotency_key: str
    external_id: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskWrite:
    """A follow-up task for a person on the lead with this external id."""

    idempotency_key: str
    lead_external_id: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LeadDelete:
    """Delete the lead with this external id and the tasks with these keys (an erasure request)."""

    idempotency_key: str
    external_id: str
    task_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one write. A failed write that is not retriable waits for a person (crm failures)."""

    idempotency_key: str
    ok: bool
    crm_id: str | None = None
    error: str | None = None
    retriable: bool = False
    # The CRM was unavailable for this write (503, 429, timeout) rather than refusing this record:
    # such writes retry without limit (pipeline.crm_sync).
    unavailable: bool = False


class CrmBackend(Protocol):
    """A CRM the outbox drains into.

    Per-record problems (a rejected field) come back as a failed `WriteResult`; a problem with the
    whole call raises `models.errors.RetriableError` (outage, 429, timeout: the batch is retried later)
    or `models.errors.FatalError` (bad credentials, missing external-id field: a person must act).
    """

    name: str

    def check(self) -> CheckResult:
        """Verify credentials and configuration; never raises."""
        ...

    def upsert_leads(self, leads: Sequence[LeadWrite]) -> list[WriteResult]:
        """Upsert leads by external id; one result per input, in order."""
        ...

    def create_tasks(self, tasks: Sequence[TaskWrite]) -> list[WriteResult]:
        """Create tasks idempotently (by idempotency key); one result per input, in order."""
        ...

    def delete_leads(self, deletes: Sequence[LeadDelete]) -> list[WriteResult]:
        """Delete leads (and their tasks) by external id; one already gone counts as deleted."""
        ...


@dataclass(frozen=True, slots=True)
class CrmTouch:
    """A sign in the CRM that someone reached the customer (issue 17).

    `kind` is `status` (the lead left the open statuses) or `task` (a completed Task on the lead).
    `cursor` is the record's (LastModifiedDate, Id): the poll's high-water mark once it is handled.
    """

    kind: Literal["status", "task"]
    lead_id: str  # the CRM's id of the lead (the crm_id stored when the lead was written)
    external_id: str | None  # our enquiry id on the lead, where the record carries it
    at: datetime  # when the touch happened
    by: str | None  # the CRM user who made it
    detail: str
    cursor: tuple[datetime, str]


class TouchFeed(Protocol):
    """A CRM that can be polled for first touches, in pages, after a (LastModifiedDate, Id) mark."""

    def lead_touches(
        self,
        *,
        after: tuple[datetime, str],
        until: datetime,
        open_statuses: Sequence[str],
        owner_ids: Sequence[str],
        limit: int,
    ) -> Iterator[list[CrmTouch]]:
        """Leads modified after `after` and before `until` whose Status is none of `open_statuses`
        (and, if `owner_ids` is not empty, owned by one of them), oldest first, at most `limit`."""
        ...

    def task_touches(
        self, *, after: tuple[datetime, str], until: datetime, completed_status: str, limit: int
    ) -> Iterator[list[CrmTouch]]:
        """Completed Tasks on leads modified after `after` and before `until`, oldest first."""
        ...
