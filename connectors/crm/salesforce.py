"""Salesforce through simple-salesforce: leads upserted by an external id, SDR tasks, one failure table.

How writes go:
- Leads are upserted by `TRIAGE_SALESFORCE__EXTERNAL_ID_FIELD` (default `Enquiry_Id__c`), so a re-send
  updates the lead instead of making a second one. Batches below `crm.bulk_threshold` use sObject
  Collections (`PATCH composite/sobjects/Lead/{field}`, 200 records a request, allOrNone=false); larger
  ones use a Bulk API 2.0 upsert job.
- Tasks are upserted the same way on `Task`, by a custom External ID field (mapping `task.
  idempotency_field`, default `Triage_Key__c`) that holds the write's idempotency key. We chose a field
  over a marker in Description because Description is a long text area Salesforce cannot filter on,
  and an upsert by external id stays exactly-once even when two senders race. WhoId is the lead's Id,
  looked up by external id.

Every failure goes through `classify_failure` (the one table, `FAILURE_TABLE`): an expired session
re-authenticates once and retries; 429, 5xx, timeouts and lost connections become `RetriableError`; a
request-level 400 (a field Salesforce rejects) is isolated by re-sending that chunk one record at a time,
so only the bad record fails, with Salesforce's own message; bad credentials, a missing external-id
field or object become `FatalError` with what to fix.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce.api import Salesforce
from simple_salesforce.bulk2 import SFBulk2Handler
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceOperationError,
)
from simple_salesforce.login import SalesforceLogin

from config.settings import CrmSettings, SalesforceSettings
from connectors.base import CheckResult
from connectors.crm.base import CrmTouch, LeadDelete, LeadWrite, TaskWrite, WriteResult
from connectors.crm.mapping import LeadMapping
from models.errors import FatalError, RetriableError

log = logging.getLogger(__name__)
T = TypeVar("T")

COLLECTION_LIMIT = 200  # records per sObject Collections request (Salesforce's limit)
COMPOSITE_BATCH_LIMIT = 25  # subrequests in one composite/batch request (Salesforce's limit)
QUERY_CHUNK = 100  # external ids per SOQL IN (...) lookup, far below the 100,000-character query limit
Reaction = Literal["reauthenticate", "retry", "record", "fatal"]

# Per-record status codes a later attempt can get past; every other per-record error waits for a person.
RETRIABLE_RECORD_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    }
)


@dataclass(frozen=True, slots=True)
class ErrorFacts:
    """What a failure says, whatever raised it: HTTP status, Salesforce error code, message."""

    status: int | None
    code: str | None
    message: str
    transport: bool = False  # no answer at all: timeout or lost connection
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FailureRule:
    """One row of the failure table."""

    name: str
    matches: Callable[[ErrorFacts], bool]
    reaction: Reaction
    advice: str


# The one table: first matching row wins. `advice` tells a person what to do next.
FAILURE_TABLE: tuple[FailureRule, ...] = (
    FailureRule(
        "no answer",
        lambda f: f.transport,
        "retry",
        "Salesforce did not answer (timeout or lost connection); the writes are retried with backoff.",
    ),
    FailureRule(
        "login refused",
        lambda f: (
            f.code
            in {
                "INVALID_LOGIN",
                "LOGIN_MUST_USE_SECURITY_TOKEN",
                "INVALID_AUTH",
                "INVALID_CLIENT",
                "API_DISABLED_FOR_ORG",
            }
            or (f.status == 401 and f.code is None)
        ),
        "fatal",
        "Salesforce refused the login. Check TRIAGE_SALESFORCE__USERNAME, __PASSWORD and "
        "__SECURITY_TOKEN (Salesforce: Settings → Reset My Security Token), and __DOMAIN (test for a "
        "sandbox) or __INSTANCE_URL (your My Domain URL).",
    ),
    FailureRule(
        "expired session",
        lambda f: f.code == "INVALID_SESSION_ID" or f.status == 401,
        "reauthenticate",
        "The Salesforce session expired or was revoked. With a session id only, set a fresh "
        "TRIAGE_SALESFORCE__SESSION_ID, or set USERNAME, PASSWORD and SECURITY_TOKEN so it can log in again.",
    ),
    FailureRule(
        "throttled",
        lambda f: f.status == 429 or f.code in {"REQUEST_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"},
        "retry",
        "Salesforce is throttling this org's API calls; the writes are retried with backoff.",
    ),
    FailureRule(
        "server error",
        lambda f: f.status is not None and f.status >= 500,
        "retry",
        "Salesforce answered with a server error; the writes are retried with backoff.",
    ),
    FailureRule(
        "locked or busy",
        lambda f: f.code in RETRIABLE_RECORD_CODES,
        "retry",
        "Salesforce was busy with the same records; the writes are retried with backoff.",
    ),
    FailureRule(
        "missing external id field",
        lambda f: f.code in {"NOT_FOUND", "INVALIDJOB"} and "external id" in f.message.lower(),
        "fatal",
        "The external-id field does not exist on the object or is not marked External ID. "
        "Create a Text field (External ID, Unique) named as TRIAGE_SALESFORCE__EXTERNAL_ID_FIELD on Lead "
        "(and the mapping's task.idempotency_field on Activity), then run `triage crm check`.",
    ),
    FailureRule(
        "unknown object",
        lambda f: f.code in {"INVALID_TYPE", "NOT_FOUND", "INVALIDJOB"},
        "fatal",
        "Salesforce does not know this object or resource for this user: check the API version "
        "(TRIAGE_SALESFORCE__API_VERSION) and that the integration user can see Lead and Task.",
    ),
    FailureRule(
        "no permission",
        lambda f: f.status == 403,
        "fatal",
        "The integration user lacks a permission (API Enabled, or edit access to Lead/Task or a "
        "mapped field). Fix its profile or permission set, then `triage crm retry`.",
    ),
    FailureRule(
        "bad batch",
        lambda f: "invalidbatch" in f.message.lower(),
        "record",
        "A Bulk API job was rejected as a whole; its records are re-sent one by one to find the bad one.",
    ),
    FailureRule(
        "rejected field",
        lambda f: f.status == 400,
        "record",
        "Salesforce rejected a field; fix the value or the mapping (crm_mapping.yaml), then "
        "`triage crm retry`.",
    ),
    FailureRule(
        "anything else",
        lambda f: True,
        "retry",
        "An unexpected Salesforce failure; the writes are retried and fail after CRM max_attempts.",
    ),
)


@dataclass(frozen=True, slots=True)
class Failure:
    """How to react to one failure, and the message for people."""

    rule: str
    reaction: Reaction
    message: str


def error_facts(error: BaseException) -> ErrorFacts:
    """Normalise what simple-salesforce or requests raised."""
    if isinstance(error, requests.Timeout | requests.ConnectionError):
        return ErrorFacts(None, None, f"{error.__class__.__name__}: {error}", transport=True)
    if isinstance(error, SalesforceAuthenticationFailed):
        code = error.code
        if isinstance(code, int):
            return ErrorFacts(code, None, error.auth_message[:500])
        return ErrorFacts(401, str(code) if code else None, error.auth_message)
    if isinstance(error, SalesforceError):
        content: Any = error.content
        if isinstance(content, list) and content and isinstance(content[0], dict):
            first = content[0]
            fields = tuple(str(name) for name in first.get("fields") or ())
            return ErrorFacts(
                error.status, first.get("errorCode"), str(first.get("message", "")), fields=fields
            )
        text = content.decode(errors="replace") if isinstance(content, bytes) else str(content)
        return ErrorFacts(error.status, None, text[:500])
    if isinstance(error, SalesforceOperationError):
        return ErrorFacts(None, None, str(error))
    return ErrorFacts(None, None, f"{error.__class__.__name__}: {error}")


def classify_failure(error: BaseException) -> Failure:
    """Look the failure up in `FAILURE_TABLE`."""
    facts = error_facts(error)
    rule = next(rule for rule in FAILURE_TABLE if rule.matches(facts))
    detail = f"{facts.code}: {facts.message}" if facts.code else facts.message
    return Failure(rule.name, rule.reaction, f"{rule.advice} (Salesforce said: {detail})")


class _RecordRejected(Exception):
    """A request-level rejection that belongs to the records in it (a 400): isolate them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    crm_id: str | None = None
    error: str | None = None
    retriable: bool = False
    unavailable: bool = False  # a RetriableError met mid-batch: the CRM, not this record


class _TimeoutAdapter(HTTPAdapter):
    """A default timeout for every request: simple-salesforce's login and Bulk calls take none."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=2, pool_maxsize=4)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class SalesforceCrm:
    """The `salesforce` CRM backend (see the module docstring for how writes and failures go)."""

    name = "salesforce"

    def __init__(
        self,
        settings: SalesforceSettings,
        crm: CrmSettings,
        mapping: LeadMapping,
        session: requests.Session | None = None,
        *,
        bulk_poll_seconds: float = 2.0,
        bulk_timeout_seconds: float = 900.0,
    ) -> None:
        self._settings = settings
        self._crm = crm
        self._mapping = mapping
        self._bulk_poll_seconds = bulk_poll_seconds
        self._bulk_timeout_seconds = bulk_timeout_seconds
        self._session = session or requests.Session()
        if settings.ca_bundle is not None:
            # REQUESTS_CA_BUNDLE in the environment would override `verify` unless trust_env is off.
            self._session.verify = str(settings.ca_bundle)
            self._session.trust_env = False
        self._session.mount("https://", _TimeoutAdapter(settings.timeout_seconds))
        self._client: Salesforce | None = None
        self.logins = 0
        self.lookup_round_trips = 0  # requests made by query_many, pages followed included

    @property
    def external_id_field(self) -> str:
        """The Lead field that holds the enquiry id."""
        return self._settings.external_id_field

    @property
    def lead_status_written(self) -> str | None:
        """The Lead Status the mapping writes on every lead (a constant or a default), if any."""
        lead = self._mapping.lead
        value = lead.constants.get("Status", lead.defaults.get("Status"))
        return None if value is None else str(value)

    # -- connection ------------------------------------------------------------------------------------
    def _can_login(self) -> bool:
        return bool(self._settings.username and self._settings.password)

    def _connect(self) -> Salesforce:
        settings = self._settings
        version = settings.api_version
        if self._can_login():
            assert settings.username is not None and settings.password is not None
            token = settings.security_token.get_secret_value() if settings.security_token else None
            # With INSTANCE_URL set we log in at that (My Domain) URL; otherwise at {DOMAIN}.salesforce.com.
            login_url = settings.instance_url.rstrip("/") if settings.instance_url else None
            session_id, instance = SalesforceLogin(
                username=settings.username,
                password=settings.password.get_secret_value(),
                security_token=token,
                sf_version=version,
                session=self._session,
                domain=settings.domain,
                scratch_url=login_url,
            )
            self.logins += 1
            return Salesforce(
                session_id=session_id, instance=instance, version=version, session=self._session
            )
        if settings.session_id is not None and settings.instance_url:
            return Salesforce(
                session_id=settings.session_id.get_secret_value(),
                instance_url=settings.instance_url,
                version=version,
                session=self._session,
            )
        raise FatalError(
            "Salesforce is not configured: set TRIAGE_SALESFORCE__USERNAME, __PASSWORD and __SECURITY_TOKEN "
            "(and __INSTANCE_URL or __DOMAIN), or __SESSION_ID with __INSTANCE_URL."
        )

    def _call(self, operation: Callable[[Salesforce], T]) -> T:
        """Run one API operation under the failure table, logging in again once if the session expired."""
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._connect()
                return operation(self._client)
            except (FatalError, RetriableError):
                raise
            except (SalesforceError, SalesforceOperationError, requests.RequestException) as error:
                failure = classify_failure(error)
                if failure.reaction == "reauthenticate":
                    self._client = None
                    if attempt == 1 and self._can_login():
                        log.info("Salesforce session expired; logging in again")
                        continue
                    raise FatalError(failure.message) from error
                if failure.reaction == "retry":
                    raise RetriableError(failure.message) from error
                if failure.reaction == "record":
                    raise _RecordRejected(_record_message(error_facts(error))) from error
                raise FatalError(failure.message) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _rest(self, path: str, *, method: str = "GET", **kwargs: Any) -> Any:
        """One REST call (path under /services/data/vXX.X/) under the failure table."""
        return self._call(lambda sf: sf.restful(path, method=method, **kwargs))

    # -- CrmBackend ------------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        """Log in, then verify the external-id fields and every mapped field exist; never raises."""
        ca_bundle = self._settings.ca_bundle
        if ca_bundle is not None and not ca_bundle.is_file():
            return CheckResult(
                False,
                f"TRIAGE_SALESFORCE__CA_BUNDLE is {ca_bundle}, which is not a file: point it at a PEM file.",
            )
        try:
            lead = self._rest("sobjects/Lead/describe") or {}
            task = self._rest("sobjects/Task/describe") or {}
        except (FatalError, RetriableError, _RecordRejected) as error:
            return CheckResult(False, str(error))
        except Exception as error:  # a check reports, whatever went wrong
            return CheckResult(
                False, f"Salesforce check failed unexpectedly: {error.__class__.__name__}: {error}"
            )
        problems = []
        problems += _external_id_problems(
            lead, "Lead", self.external_id_field, "TRIAGE_SALESFORCE__EXTERNAL_ID_FIELD"
        )
        problems += _external_id_problems(
            task,
            "Task",
            self._mapping.task.idempotency_field,
            f"task.idempotency_field in {self._mapping.source_path}",
        )
        for sobject, described, targets in (
            ("Lead", lead, self._mapping.lead_targets()),
            ("Task", task, self._mapping.task_targets()),
        ):
            names = {item["name"] for item in described.get("fields", [])}
            missing = sorted(targets - names - {self.external_id_field, self._mapping.task.idempotency_field})
            if missing:
                problems.append(
                    f"{sobject} has no field(s) {', '.join(missing)} that {self._mapping.source_path} maps "
                    f"to: create them in Salesforce (Setup → Object Manager → {sobject}) or remove them "
                    "from the mapping."
                )
        if problems:
            return CheckResult(False, "\n".join(problems))
        how = (
            "username/password login"
            if self._can_login()
            else "session id (cannot log in again when it expires)"
        )
        return CheckResult(
            True,
            f"Salesforce OK at {self._client.sf_instance if self._client else '?'} ({how}); "
            f"Lead.{self.external_id_field} and Task.{self._mapping.task.idempotency_field} are External ID "
            "fields; all mapped fields exist.",
        )

    def upsert_leads(self, leads: Sequence[LeadWrite]) -> list[WriteResult]:
        """Upsert leads by external id: Collections below `crm.bulk_threshold`, Bulk API 2.0 at or above."""
        if not leads:
            return []
        field = self.external_id_field
        records = [
            self._mapping.lead_record(lead.fields, external_id_field=field, external_id=lead.external_id)
            for lead in leads
        ]
        if len(records) >= self._crm.bulk_threshold:
            outcomes = self._bulk_upsert("Lead", field, records)
        else:
            outcomes = self._collection_upsert("Lead", field, records)
        return [_result(lead.idempotency_key, outcome) for lead, outcome in zip(leads, outcomes, strict=True)]

    def create_tasks(self, tasks: Sequence[TaskWrite]) -> list[WriteResult]:
        """Upsert tasks by their idempotency key on the leads they belong to."""
        if not tasks:
            return []
        lead_ids = self.lead_ids([task.lead_external_id for task in tasks])
        key_field = self._mapping.task.idempotency_field
        sendable = [task for task in tasks if task.lead_external_id in lead_ids]
        records = [
            self._mapping.task_record(
                task.fields, idempotency_key=task.idempotency_key, who_id=lead_ids[task.lead_external_id]
            )
            for task in sendable
        ]
        sent = dict(
            zip(
                (task.idempotency_key for task in sendable),
                self._collection_upsert("Task", key_field, records) if records else [],
                strict=True,
            )
        )
        missing = _Outcome(False, error="the lead is not in Salesforce (deleted or merged there?)")
        return [_result(task.idempotency_key, sent.get(task.idempotency_key, missing)) for task in tasks]

    def delete_leads(self, deletes: Sequence[LeadDelete]) -> list[WriteResult]:
        """Delete leads and their tasks (an erasure request): look up their Ids, then delete them with
        sObject Collections (`DELETE composite/sobjects?ids=...`, 200 a request). A record already gone
        counts as deleted, so a re-sent delete is harmless."""
        if not deletes:
            return []
        lead_ids = self.lead_ids([delete.external_id for delete in deletes])
        task_ids = self._ids_by_field(
            "Task",
            self._mapping.task.idempotency_field,
            [key for delete in deletes for key in delete.task_keys],
        )
        owned: dict[str, list[str]] = {}
        for delete in deletes:
            ids = [task_ids[key] for key in delete.task_keys if key in task_ids]
            if delete.external_id in lead_ids:
                ids.append(lead_ids[delete.external_id])  # tasks first: their lead goes last
            owned[delete.idempotency_key] = ids
        every = [record_id for ids in owned.values() for record_id in ids]
        failed: dict[str, str] = {}
        for start in range(0, len(every), COLLECTION_LIMIT):
            chunk = every[start : start + COLLECTION_LIMIT]
            try:
                answer = self._rest(
                    "composite/sobjects",
                    method="DELETE",
                    params={"ids": ",".join(chunk), "allOrNone": "false"},
                )
            except _RecordRejected as rejected:
                failed.update({record_id: rejected.message for record_id in chunk})
                continue
            for item in answer or []:
                if item.get("success"):
                    continue
                codes = {str(error.get("statusCode")) for error in item.get("errors") or []}
                if codes & {"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"}:
                    continue  # already gone
                failed[str(item.get("id"))] = _collection_outcome(item, "Id").error or "delete failed"
        results = []
        for delete in deletes:
            errors = [failed[record_id] for record_id in owned[delete.idempotency_key] if record_id in failed]
            results.append(WriteResult(delete.idempotency_key, not errors, error="; ".join(errors) or None))
        return results

    def _ids_by_field(self, sobject: str, field: str, values: Sequence[str]) -> dict[str, str]:
        """Salesforce Ids of `sobject` records by the value of an (External ID) field."""
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), QUERY_CHUNK):
            quoted = ", ".join(f"'{_soql_escape(value)}'" for value in unique[start : start + QUERY_CHUNK])
            answer = self._rest(
                "query", params={"q": f"SELECT Id, {field} FROM {sobject} WHERE {field} IN ({quoted})"}
            )
            for record in (answer or {}).get("records", []):
                found[str(record[field])] = str(record["Id"])
        return found

    def lead_ids(self, external_ids: Sequence[str]) -> dict[str, str]:
        """Salesforce Lead Ids by external id, for the ones that exist."""
        field = self.external_id_field
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(external_ids))
        for start in range(0, len(unique), QUERY_CHUNK):
            chunk = unique[start : start + QUERY_CHUNK]
            quoted = ", ".join(f"'{_soql_escape(value)}'" for value in chunk)
            soql = f"SELECT Id, {field} FROM Lead WHERE {field} IN ({quoted})"
            try:
                answer = self._rest("query", params={"q": soql})
            except _RecordRejected as error:
                raise FatalError(f"cannot look up leads by {field}: {error.message}") from error
            for record in (answer or {}).get("records", []):
                found[str(record[field])] = str(record["Id"])
        return found

    # -- first touches (issue 17) ----------------------------------------------------------------------
    def lead_touches(
        self,
        *,
        after: tuple[datetime, str],
        until: datetime,
        open_statuses: Sequence[str],
        owner_ids: Sequence[str],
        limit: int,
    ) -> Iterator[list[CrmTouch]]:
        """Our leads (the external-id field set) modified after `after` (LastModifiedDate, Id) and before
        `until` whose Status left the open statuses, in pages; the touch time is LastModifiedDate."""
        field = self.external_id_field
        conditions = [f"{field} != null"]
        if open_statuses:
            conditions.append(f"Status NOT IN ({_soql_list(open_statuses)})")
        if owner_ids:
            conditions.append(f"OwnerId IN ({_soql_list(owner_ids)})")
        soql = (
            f"SELECT Id, {field}, Status, OwnerId, LastModifiedDate, LastModifiedById FROM Lead "
            f"WHERE {' AND '.join(conditions)} AND {_after_mark(after, until)} "
            f"ORDER BY LastModifiedDate, Id LIMIT {int(limit)}"
        )
        for page in self.query_pages(soql):
            touches = []
            for record in page:
                modified = _sf_datetime(record["LastModifiedDate"])
                touches.append(
                    CrmTouch(
                        kind="status",
                        lead_id=str(record["Id"]),
                        external_id=str(record[field]) if record.get(field) else None,
                        at=modified,
                        by=record.get("LastModifiedById"),
                        detail=f"Salesforce lead {record['Id']} status {record.get('Status')!r}",
                        cursor=(modified, str(record["Id"])),
                    )
                )
            yield touches

    def task_touches(
        self, *, after: tuple[datetime, str], until: datetime, completed_status: str, limit: int
    ) -> Iterator[list[CrmTouch]]:
        """Completed Tasks modified after `after` and before `until`, in pages; the touch time is the
        task's CompletedDateTime (its LastModifiedDate when Salesforce has none)."""
        soql = (
            "SELECT Id, WhoId, Status, OwnerId, CompletedDateTime, LastModifiedDate, LastModifiedById "
            f"FROM Task WHERE Status = '{_soql_escape(completed_status)}' AND WhoId != null "
            f"AND {_after_mark(after, until)} ORDER BY LastModifiedDate, Id LIMIT {int(limit)}"
        )
        for page in self.query_pages(soql):
            touches = []
            for record in page:
                modified = _sf_datetime(record["LastModifiedDate"])
                completed = record.get("CompletedDateTime")
                touches.append(
                    CrmTouch(
                        kind="task",
                        lead_id=str(record["WhoId"]),
                        external_id=None,
                        at=_sf_datetime(completed) if completed else modified,
                        by=record.get("OwnerId") or record.get("LastModifiedById"),
                        detail=f"Salesforce task {record['Id']} completed",
                        cursor=(modified, str(record["Id"])),
                    )
                )
            yield touches

    def query_pages(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        """The records of a SOQL query a page at a time, following nextRecordsUrl (2,000 a page)."""

        def more(url: str) -> Callable[[Salesforce], Any]:
            return lambda sf: sf.query_more(url, identifier_is_url=True)

        try:
            answer: Any = self._call(lambda sf: sf.query(soql))
            while True:
                yield list((answer or {}).get("records") or [])
                next_url = (answer or {}).get("nextRecordsUrl")
                if (answer or {}).get("done", True) or not next_url:
                    return
                answer = self._call(more(str(next_url)))
        except _RecordRejected as error:
            raise FatalError(
                f"Salesforce refused the query: {error.message} (query: {soql[:300]})"
            ) from error

    # -- sObject Collections ---------------------------------------------------------------------------
    def _collection_upsert(self, sobject: str, field: str, records: list[dict[str, Any]]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            body = {
                "allOrNone": False,
                "records": [{"attributes": {"type": sobject}, **record} for record in chunk],
            }
            path = f"composite/sobjects/{sobject}/{field}"
            try:
                answer = self._rest(path, method="PATCH", json=body)
            except _RecordRejected:
                outcomes += self._one_by_one(sobject, field, chunk)
                continue
            except RetriableError as error:
                if not outcomes:
                    raise  # nothing went through: the CRM is down, the whole batch waits
                outcomes += [_Outcome(False, error=str(error), retriable=True, unavailable=True)] * (
                    len(records) - len(outcomes)
                )
                break
            items = answer if isinstance(answer, list) else []
            if len(items) != len(chunk):
                raise RetriableError(f"Salesforce answered {len(items)} results for {len(chunk)} records")
            outcomes += [_collection_outcome(item, field) for item in items]
        return outcomes

    def _one_by_one(self, sobject: str, field: str, records: list[dict[str, Any]]) -> list[_Outcome]:
        """Re-send records singly after a request-level 400, so each gets its own verdict."""
        outcomes: list[_Outcome] = []
        for record in records:
            value = quote(str(record[field]), safe="")
            body = {name: item for name, item in record.items() if name != field}
            path = f"sobjects/{sobject}/{field}/{value}"
            try:
                answer = self._rest(path, method="PATCH", json=body)
            except _RecordRejected as rejected:
                outcomes.append(_Outcome(False, error=rejected.message))
                continue
            except RetriableError as error:
                outcomes += [_Outcome(False, error=str(error), retriable=True, unavailable=True)] * (
                    len(records) - len(outcomes)
                )
                break
            outcomes.append(_Outcome(True, crm_id=str((answer or {}).get("id") or "") or None))
        return outcomes

    # -- Bulk API 2.0 ----------------------------------------------------------------------------------
    def _bulk_upsert(self, sobject: str, field: str, records: list[dict[str, Any]]) -> list[_Outcome]:
        rows = [{name: _csv_value(value) for name, value in record.items()} for record in records]

        def run(sf: Salesforce) -> dict[str, _Outcome]:
            bulk = cast(SFBulk2Handler, sf.bulk2)
            handle = getattr(bulk, sobject)
            # simple-salesforce waits up to 24 h for a job; a stuck job must not hold the drain that long.
            # A job that times out is retried later, which the upsert by external id makes harmless.
            handle._client.DEFAULT_WAIT_TIMEOUT_SECONDS = self._bulk_timeout_seconds
            jobs = handle.upsert(records=rows, external_id_field=field, wait=self._bulk_poll_seconds)
            by_key: dict[str, _Outcome] = {}
            for job in jobs:
                # Records in neither list were not processed: they stay retriable (see below).
                for row in csv.DictReader(io.StringIO(handle.get_successful_records(job["job_id"]))):
                    by_key[row[field]] = _Outcome(True, crm_id=row.get("sf__Id") or None)
                for row in csv.DictReader(io.StringIO(handle.get_failed_records(job["job_id"]))):
                    by_key[row[field]] = _bulk_failure(str(row.get("sf__Error", "")), field)
            return by_key

        try:
            by_key = self._call(run)
        except _RecordRejected as rejected:
            log.warning(
                "Bulk job rejected as a whole (%s); sending through sObject Collections", rejected.message
            )
            return self._collection_upsert(sobject, field, records)
        unprocessed = _Outcome(False, error="not processed by the Bulk API job", retriable=True)
        return [by_key.get(str(record[field]), unprocessed) for record in records]

    # -- reads for account matching (connectors/crm/accounts.py) -------------------------------------
    def describe(self, sobject: str) -> dict[str, Any]:
        """The object's describe (its fields and their attributes)."""
        return cast(dict[str, Any], self._rest(f"sobjects/{sobject}/describe") or {})

    def query_many(self, soqls: Sequence[str]) -> list[dict[str, Any]]:
        """Run up to 25 SOQL queries in one round trip (a composite batch request when several), every
        record of each: Salesforce answers 2,000 records at a time, so the queries not `done` are
        followed by their `nextRecordsUrl`, the next pages of all of them together in one batch."""
        first = self._get_many([("query", {"q": soql}) for soql in soqls])
        records = [list(answer.get("records") or []) for answer in first]
        pending: dict[int, str] = {
            index: url for index, answer in enumerate(first) if (url := _next_url(answer)) is not None
        }
        while pending:
            indexes = list(pending)[:COMPOSITE_BATCH_LIMIT]
            pages = self._get_many([(_data_path(pending[index]), {}) for index in indexes])
            for index, page in zip(indexes, pages, strict=True):
                records[index].extend(page.get("records") or [])
                url = _next_url(page)
                if url:
                    pending[index] = url
                else:
                    del pending[index]
        return [
            {"totalSize": answer.get("totalSize", len(rows)), "done": True, "records": rows}
            for answer, rows in zip(first, records, strict=True)
        ]

    def _get_many(self, paths: Sequence[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
        """GET each (path under /services/data/vXX.X/, query parameters) in one round trip."""
        self.lookup_round_trips += 1
        if len(paths) == 1:
            path, params = paths[0]
            return [cast(dict[str, Any], self._rest(path, params=params or None) or {})]
        version = self._settings.api_version
        urls = [
            f"v{version}/{path}" + (f"?{urlencode(params, quote_via=quote)}" if params else "")
            for path, params in paths
        ]
        answer = self._rest(
            "composite/batch",
            method="POST",
            json={"batchRequests": [{"method": "GET", "url": url} for url in urls]},
        )
        results = []
        for item in (answer or {}).get("results", []):
            if int(item.get("statusCode", 500)) >= 400:
                detail = item.get("result")
                message = detail[0].get("message") if isinstance(detail, list) and detail else detail
                raise FatalError(f"Salesforce refused a lookup query: {message}")
            results.append(cast(dict[str, Any], item.get("result") or {}))
        if len(results) != len(paths):
            raise FatalError(f"Salesforce answered {len(results)} of {len(paths)} lookup queries")
        return results


def _next_url(answer: dict[str, Any]) -> str | None:
    """The next page of a query answer, None when it was the last."""
    url = answer.get("nextRecordsUrl")
    return None if answer.get("done", True) or not url else str(url)


def _data_path(url: str) -> str:
    """`/services/data/v59.0/query/01g...-2000` -> `query/01g...-2000` (a path under the API version)."""
    return re.sub(r"^(?:https://[^/]+)?/services/data/v[\d.]+/", "", url)


# -- helpers -------------------------------------------------------------------------------------------
def _result(key: str, outcome: _Outcome) -> WriteResult:
    return WriteResult(
        key,
        outcome.ok,
        crm_id=outcome.crm_id,
        error=outcome.error,
        retriable=outcome.retriable,
        unavailable=outcome.unavailable,
    )


def _record_message(facts: ErrorFacts) -> str:
    text = f"{facts.code}: {facts.message}" if facts.code else facts.message
    return f"{text} (fields: {', '.join(facts.fields)})" if facts.fields else text


def _collection_outcome(item: dict[str, Any], field: str) -> _Outcome:
    if item.get("success"):
        return _Outcome(True, crm_id=item.get("id"))
    errors = item.get("errors") or [{}]
    messages = []
    retriable = True
    for error in errors:
        code = str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN")
        text = f"{code}: {error.get('message', '')}"
        fields = error.get("fields") or []
        messages.append(f"{text} (fields: {', '.join(fields)})" if fields else text)
        retriable = retriable and _record_retriable(code, str(error.get("message", "")), field)
    return _Outcome(False, error="; ".join(messages), retriable=retriable)


def _bulk_failure(sf_error: str, field: str) -> _Outcome:
    # Bulk API 2.0 writes "STATUS_CODE:message:fields --" in sf__Error.
    code = sf_error.split(":", 1)[0].strip()
    return _Outcome(False, error=sf_error.rstrip(" -"), retriable=_record_retriable(code, sf_error, field))


def _record_retriable(code: str, message: str, field: str) -> bool:
    # Two senders creating the same external id race; the loser's retry updates the winner's lead.
    return code in RETRIABLE_RECORD_CODES or (code == "DUPLICATE_VALUE" and field in message)


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _soql_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _soql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{_soql_escape(value)}'" for value in values)


def _soql_datetime(value: datetime) -> str:
    """A SOQL date-time literal (never quoted), to the second as Salesforce keeps them."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _after_mark(after: tuple[datetime, str], until: datetime) -> str:
    """Records after the (LastModifiedDate, Id) mark and before `until`: keyset paging that never
    skips or repeats a record, however many share one LastModifiedDate."""
    at, record_id = after
    mark = _soql_datetime(at)
    return (
        f"LastModifiedDate < {_soql_datetime(until)} AND (LastModifiedDate > {mark} OR "
        f"(LastModifiedDate = {mark} AND Id > '{_soql_escape(record_id)}'))"
    )


def _sf_datetime(value: str) -> datetime:
    """A REST date-time (2026-03-02T10:00:00.000+0000) as an aware UTC datetime."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _external_id_problems(described: Any, sobject: str, name: str, setting: str) -> list[str]:
    fields = {item["name"]: item for item in (described or {}).get("fields", [])}
    item = fields.get(name)
    if item is None:
        return [
            f"{sobject} has no field {name} (named by {setting}): create a Text field {name} on {sobject}"
            f"{' (Activity)' if sobject == 'Task' else ''} with 'External ID' and 'Unique' ticked "
            f"(Setup → Object Manager → {sobject} → Fields & Relationships → New), or name an existing one."
        ]
    if not item.get("externalId"):
        return [
            f"{sobject}.{name} exists but is not an External ID field: edit it in Setup and tick "
            "'External ID'."
        ]
    return []
