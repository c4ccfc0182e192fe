"""An HTTPS test double of the parts of Salesforce this product uses, with fault injection.

It follows Salesforce's documented request and response shapes (REST API Developer Guide, Bulk API 2.0
Developer Guide, SOAP `login()`), including their error bodies, for:

- SOAP `login()` at `/services/Soap/u/{version}` (what simple-salesforce sends for username/password/token);
  a refused login is the documented `sf:LoginFault` with `INVALID_LOGIN`.
- `GET  /services/data/vXX.X/sobjects/{Object}/describe` (fields, `externalId`, `nillable`...).
- `PATCH /services/data/vXX.X/composite/sobjects/{Object}/{ExternalIdField}` — upsert up to 200 records
  with sObject Collections (per-record results carry `statusCode`/`message`/`fields`).
- `PATCH /services/data/vXX.X/sobjects/{Object}/{ExternalIdField}/{value}` — upsert one record
  (201 created / 200 updated, errors as `[{"message", "errorCode", "fields"}]`).
- `POST /services/data/vXX.X/sobjects/{Object}` — create one record.
- `GET  /services/data/vXX.X/query?q=` — the SOQL subset
  `SELECT f, g FROM Object [WHERE f IN (...) | f = '...'] [LIMIT n]`; a query with more than that
  (AND/OR, `>`/`>=` on datetimes, ORDER BY) goes to `tests/support/soql.py`, and every answer of more
  than `query_batch_size` records is paged with `nextRecordsUrl` (`GET .../query/{locator}`), as
  Salesforce pages at 2,000.
- System fields: every write stamps `LastModifiedDate`, `SystemModstamp` and `LastModifiedById` (and
  `CreatedDate`, `CreatedById`, `OwnerId` on create) from the double's `clock`; a Task whose Status
  becomes 'Completed' gets `CompletedDateTime`. `edit_record` and `add_task` make the changes a person
  makes in Salesforce's pages (a lead's Status, a completed Task), stamped with their user and time.
- Bulk API 2.0 ingest: create job, `PUT .../batches` (CSV), `PATCH` state `UploadComplete`/`Aborted`, poll,
  `successfulResults`, `failedResults`, `unprocessedrecords`.

Request-level errors are `[{"message": ..., "errorCode": ...}]` bodies with the documented status codes
(400 INVALID_FIELD for a field the object does not have, 401 INVALID_SESSION_ID, 404 NOT_FOUND for a
missing external-id field). Faults: fail the next N requests (503, 429, 500...), delay them past the
client's timeout (the write still happens, as it may in Salesforce), expire every session, reject
records matching a rule with a field error. Records live in memory keyed by Id, with an index per
external-id field, and every create is counted so tests can assert "exactly once".
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

import trustme

from config.settings import SalesforceSettings
from tests.support import soql

ID_PREFIXES = {"Lead": "00Q", "Task": "00T", "Account": "001", "Contact": "003"}
MAX_COLLECTION_RECORDS = 200
API_USER_ID = "005000000000001AAA"  # the integration user the double logs in as
QUERY_BATCH_SIZE = 2000  # records per query answer before nextRecordsUrl (Salesforce's default)
# Stamped by the org on every write, never by the client (read-only in Salesforce).
SYSTEM_FIELDS = ("CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp")


def _field(
    name: str,
    kind: str = "string",
    *,
    length: int = 255,
    nillable: bool = True,
    external_id: bool = False,
    unique: bool = False,
) -> dict[str, Any]:
    """One entry of a describe's `fields` list (the attributes clients look at)."""
    return {
        "name": name,
        "label": name.replace("__c", "").replace("_", " "),
        "type": kind,
        "length": length,
        "nillable": nillable,
        "createable": name != "Id",
        "updateable": name != "Id",
        "externalId": external_id,
        "unique": unique,
        "idLookup": external_id or name == "Id",
        "custom": name.endswith("__c"),
    }


def default_objects(external_id_field: str, task_key_field: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Lead and Task with their standard fields and the product's custom external-id fields."""
    lead = [
        _field("Id", "id", length=18, nillable=False),
        _field("FirstName", length=40),
        _field("LastName", length=80, nillable=False),
        _field("Company", nillable=False),
        _field("Email", "email", length=80),
        _field("Phone", "phone", length=40),
        _field("Industry", "picklist"),
        _field("NumberOfEmployees", "int"),
        _field("AnnualRevenue", "currency"),
        _field("Description", "textarea", length=32000),
        _field("Status", "picklist", nillable=False),
        _field("LeadSource", "picklist"),
        _field("Triage_Intent__c"),
        _field("Triage_Campaign__c"),
        _field(external_id_field, length=64, external_id=True, unique=True),
        *_system_fields(),
    ]
    task = [
        _field("Id", "id", length=18, nillable=False),
        _field("WhoId", "reference", length=18),
        _field("Subject", "combobox"),
        _field("Description", "textarea", length=32000),
        _field("ActivityDate", "date"),
        _field("Priority", "picklist", nillable=False),
        _field("Status", "picklist", nillable=False),
        _field(task_key_field, length=120, external_id=True, unique=True),
        _field("CompletedDateTime", "datetime"),
        *_system_fields(),
    ]
    return {"Lead": {f["name"]: f for f in lead}, "Task": {f["name"]: f for f in task}}


def _system_fields() -> list[dict[str, Any]]:
    """OwnerId and the audit fields every object has."""
    return [
        _field("OwnerId", "reference", length=18),
        _field("CreatedDate", "datetime"),
        _field("CreatedById", "reference", length=18),
        _field("LastModifiedDate", "datetime"),
        _field("LastModifiedById", "reference", length=18),
        _field("SystemModstamp", "datetime"),
    ]


def account_objects(domain_field: str = "Domain__c") -> dict[str, dict[str, dict[str, Any]]]:
    """Account and Contact for account matching (issue 12), and the Lead fields it reads."""
    account = [
        _field("Id", "id", length=18, nillable=False),
        _field("Name", nillable=False),
        _field(domain_field, length=255, external_id=True),
        _field("Website", "url"),
        _field("AnnualRevenue", "currency"),
        _field("OwnerId", "reference", length=18, nillable=False),
        _field("Type", "picklist"),
        _field("CreatedDate", "datetime", nillable=False),
    ]
    contact = [
        _field("Id", "id", length=18, nillable=False),
        _field("LastName", length=80, nillable=False),
        _field("Email", "email", length=80),
        _field("AccountId", "reference", length=18),
    ]
    return {"Account": {f["name"]: f for f in account}, "Contact": {f["name"]: f for f in contact}}


REQUIRED_ON_CREATE = {"Lead": ("LastName", "Company"), "Task": ()}


@dataclass
class FieldErrorRule:
    """Reject records of `sobject` for which `matches(record)` is true, with this error.

    `request_level=True` rejects the whole request carrying such a record with a 400, as Salesforce
    does for a value it cannot deserialise (e.g. JSON_PARSER_ERROR, a text in a number field).
    """

    sobject: str
    matches: Callable[[dict[str, Any]], bool]
    status_code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    message: str = "Email: invalid email address"
    fields: list[str] = field(default_factory=lambda: ["Email"])
    request_level: bool = False


@dataclass
class _RequestFault:
    after: int  # requests to let through first
    count: int
    status: int = 503
    error_code: str = "SERVER_UNAVAILABLE"
    message: str = "Service temporarily unavailable"
    delay_seconds: float = 0.0  # >0: sleep instead of failing, then answer normally


@dataclass
class BulkJob:
    """An ingest job and its outcome."""

    info: dict[str, Any]
    csv_text: str = ""
    successful: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    unprocessed: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


class ApiError(Exception):
    """A request-level error, answered as Salesforce's `[{"message", "errorCode"}]` body."""

    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: list[dict[str, Any]] = [{"message": message, "errorCode": error_code}]
        if fields is not None:
            self.body[0]["fields"] = fields


class SalesforceDouble:
    """Start with `with SalesforceDouble() as sf:`; point the client at `sf.settings()`."""

    def __init__(
        self,
        *,
        username: str = "integration@example.com",
        password: str = "correct-horse",
        security_token: str = "TOKEN123",
        api_version: str = "62.0",
        external_id_field: str = "Enquiry_Id__c",
        task_key_field: str = "Triage_Key__c",
    ) -> None:
        self.username = username
        self.password = password
        self.security_token = security_token
        self.api_version = api_version
        self.external_id_field = external_id_field
        self.task_key_field = task_key_field
        self.objects = default_objects(external_id_field, task_key_field)
        self.objects.update(account_objects())
        self.objects["Lead"].setdefault("OwnerId", _field("OwnerId", "reference", length=18))
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.objects}
        self.created: Counter[tuple[str, str]] = Counter()  # (object, external id value) → creates
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API request answered
        self.logins = 0
        self.field_error_rules: list[FieldErrorRule] = []
        self.jobs: dict[str, BulkJob] = {}
        self.hold_bulk_jobs = False  # True: closed jobs stay InProgress (a stuck job)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # stamps LastModifiedDate
        self.query_batch_size = QUERY_BATCH_SIZE
        self.queries: list[str] = []  # every SOQL query answered, in order
        self._locators: dict[str, tuple[list[dict[str, Any]], int]] = {}  # locator → (records left, total)
        self._faults: list[_RequestFault] = []
        self._indexes: dict[tuple[str, str], dict[str, str]] = {}
        self._sessions: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._tmp = Path(tempfile.mkdtemp(prefix="sf-double-"))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.ca_bundle = self._tmp / "ca.pem"

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> SalesforceDouble:
        """Serve HTTPS on 127.0.0.1 with a throwaway CA (written to `ca_bundle`)."""
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        double = self

        class Handler(_Handler):
            owner = double

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and remove the CA files."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> SalesforceDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def instance_url(self) -> str:
        """`https://127.0.0.1:PORT`: both the login (My Domain) URL and the instance URL."""
        assert self._server is not None, "start() the double first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def settings(self, **overrides: Any) -> SalesforceSettings:
        """Client settings that log in to this double with username, password and token."""
        values: dict[str, Any] = {
            "instance_url": self.instance_url,
            "username": self.username,
            "password": self.password,
            "security_token": self.security_token,
            "ca_bundle": self.ca_bundle,
            "api_version": self.api_version,
            "external_id_field": self.external_id_field,
            "timeout_seconds": 5.0,
        }
        values.update(overrides)
        return SalesforceSettings(**values)

    # -- fault injection -------------------------------------------------------------------------------
    def fail_requests(
        self,
        count: int,
        *,
        after: int = 0,
        status: int = 503,
        error_code: str = "SERVER_UNAVAILABLE",
        message: str = "Service temporarily unavailable",
    ) -> None:
        """Let `after` API requests through, then answer the next `count` with `status`."""
        with self._lock:
            self._faults.append(_RequestFault(after, count, status, error_code, message))

    def delay_requests(self, count: int, seconds: float, *, after: int = 0) -> None:
        """Hold the next `count` API requests for `seconds` (past the client's timeout), then do them."""
        with self._lock:
            self._faults.append(_RequestFault(after, count, delay_seconds=seconds))

    def expire_sessions(self) -> None:
        """Every session id issued so far answers 401 INVALID_SESSION_ID from now on."""
        with self._lock:
            self._sessions.clear()

    def issue_session(self) -> str:
        """A valid session id, as if from an OAuth flow (for session-id login)."""
        token = f"00D000000000001!AQ{next(self._ids):010d}"
        with self._lock:
            self._sessions.add(token)
        return token

    def reject_records(self, rule: FieldErrorRule) -> None:
        """Add a per-record field error (a validation rule in the org)."""
        with self._lock:
            self.field_error_rules.append(rule)

    def clear_rules(self) -> None:
        """Remove the field error rules (the admin fixed the org or the mapping)."""
        with self._lock:
            self.field_error_rules.clear()

    def remove_field(self, sobject: str, name: str) -> None:
        """Make a field not exist (e.g. the external-id field was never created)."""
        with self._lock:
            self.objects[sobject].pop(name, None)

    # -- what tests look at ----------------------------------------------------------------------------
    def leads_by_external_id(self) -> dict[str, dict[str, Any]]:
        """Every Lead, keyed by the external-id field (a Lead without one is keyed by its Id)."""
        with self._lock:
            return {
                str(record.get(self.external_id_field) or record["Id"]): dict(record)
                for record in self.records["Lead"].values()
            }

    def lead_count(self) -> int:
        """Every Lead record, whatever its keys (duplicates would show here)."""
        with self._lock:
            return len(self.records["Lead"])

    def tasks(self) -> list[dict[str, Any]]:
        """Every Task."""
        with self._lock:
            return [dict(record) for record in self.records["Task"].values()]

    def api_request_count(self) -> int:
        """Requests answered under /services/data (logins excluded)."""
        with self._lock:
            return sum(1 for _, path in self.requests if path.startswith("/services/data"))

    # -- request handling (called by the handler threads) ----------------------------------------------
    def _take_fault(self) -> _RequestFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.after > 0:
                    fault.after -= 1
                    return None
                if fault.count > 0:
                    fault.count -= 1
                    return fault
            self._faults = [fault for fault in self._faults if fault.count > 0]
            return None

    def _check_session(self, authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        with self._lock:
            if token not in self._sessions:
                raise ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def _login(self, body: bytes) -> tuple[int, str]:
        namespaces = {"urn": "urn:partner.soap.sforce.com", "n1": "urn:partner.soap.sforce.com"}
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return 500, _soap_fault("INVALID_LOGIN", "Invalid request")
        username = root.findtext(".//urn:username", namespaces=namespaces) or ""
        password = root.findtext(".//urn:password", namespaces=namespaces) or ""
        if username != self.username or password != self.password + self.security_token:
            return 500, _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        with self._lock:
            self.logins += 1
        session_id = self.issue_session()
        server_url = f"{self.instance_url}/services/Soap/u/{self.api_version}/00D000000000001"
        return 200, _login_response(session_id, server_url, self.username)

    def _object(self, name: str) -> dict[str, dict[str, Any]]:
        if name not in self.objects:
            raise ApiError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'")
        return self.objects[name]

    def _external_field(self, sobject: str, name: str) -> None:
        described = self._object(sobject).get(name)
        if described is None or not described["externalId"]:
            raise ApiError(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}"
            )

    def _check_columns(self, sobject: str, record: dict[str, Any]) -> None:
        fields = self._object(sobject)
        for name in record:
            if name != "attributes" and name not in fields:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")

    def _check_request_rules(self, sobject: str, record: dict[str, Any]) -> None:
        for rule in self.field_error_rules:
            if rule.request_level and rule.sobject == sobject and rule.matches(record):
                raise ApiError(400, rule.status_code, rule.message, list(rule.fields))

    def _new_id(self, sobject: str) -> str:
        return f"{ID_PREFIXES.get(sobject, 'a00')}{next(self._ids):012d}AAA"

    def _upsert_one(
        self, sobject: str, external_field: str | None, record: dict[str, Any]
    ) -> tuple[str, bool] | dict[str, Any]:
        """Create or update one record; returns (Id, created) or an error {statusCode, message, fields}."""
        values = {name: value for name, value in record.items() if name != "attributes"}
        for rule in self.field_error_rules:
            if rule.sobject == sobject and rule.matches(values):
                return {"statusCode": rule.status_code, "message": rule.message, "fields": list(rule.fields)}
        with self._lock:
            table = self.records[sobject]
            key = values.get(external_field) if external_field else None
            if external_field and not key:
                return {
                    "statusCode": "MISSING_ARGUMENT",
                    "message": f"{external_field} not specified",
                    "fields": [external_field],
                }
            existing = self._index_lookup(sobject, external_field, key)
            who = values.get("WhoId")
            if who and who not in self.records["Lead"]:
                return {
                    "statusCode": "INVALID_CROSS_REFERENCE_KEY",
                    "message": "invalid cross reference id",
                    "fields": ["WhoId"],
                }
            if existing is not None:
                table[existing].update(values)
                self._stamp(sobject, table[existing], created=False)
                return existing, False
            missing = [name for name in REQUIRED_ON_CREATE.get(sobject, ()) if not values.get(name)]
            if missing:
                return {
                    "statusCode": "REQUIRED_FIELD_MISSING",
                    "message": f"Required fields are missing: [{', '.join(missing)}]",
                    "fields": missing,
                }
            # A plain create (not an upsert) of a value a Unique field already holds is refused.
            unique = [
                name for name, item in self.objects[sobject].items() if item["unique"] and values.get(name)
            ]
            for name in unique:
                holder = self._index(sobject, name).get(str(values[name]))
                if holder is not None:
                    return {
                        "statusCode": "DUPLICATE_VALUE",
                        "message": f"duplicate value found: {name} duplicates value on record with id: "
                        f"{holder}",
                        "fields": [name],
                    }
            new_id = self._new_id(sobject)
            table[new_id] = {"Id": new_id, **values}
            self._stamp(sobject, table[new_id], created=True)
            for name in unique:
                self._index(sobject, name)[str(values[name])] = new_id
                self.created[(sobject, str(values[name]))] += 1
            return new_id, True

    def _stamp(
        self,
        sobject: str,
        record: dict[str, Any],
        *,
        created: bool,
        by: str = API_USER_ID,
        at: datetime | None = None,
    ) -> None:
        """What the org sets on every write: LastModifiedDate and friends, CompletedDateTime on Tasks."""
        # Salesforce keeps date-times to the second (the API writes .000 milliseconds).
        stamp = soql.format_datetime((at or self.clock()).replace(microsecond=0))
        record.update(LastModifiedDate=stamp, SystemModstamp=stamp, LastModifiedById=by)
        if created:
            record.update(CreatedDate=stamp, CreatedById=by)
            record.setdefault("OwnerId", by)
        if sobject == "Task":
            if record.get("Status") == "Completed":
                if not record.get("CompletedDateTime"):
                    record["CompletedDateTime"] = stamp
            else:
                record["CompletedDateTime"] = None

    # -- what a person does in Salesforce's own pages --------------------------------------------------
    def edit_record(
        self, sobject: str, record_id: str, values: dict[str, Any], *, by: str, at: datetime
    ) -> dict[str, Any]:
        """Change a record as user `by` at `at` (a lead's Status set to 'Working - Contacted')."""
        with self._lock:
            record = self.records[sobject][record_id]
            record.update(values)
            self._stamp(sobject, record, created=False, by=by, at=at)
            return dict(record)

    def add_task(self, values: dict[str, Any], *, by: str, at: datetime) -> str:
        """Create a Task as user `by` at `at` (a logged call: Status 'Completed'); returns its Id."""
        with self._lock:
            new_id = self._new_id("Task")
            record = {"Id": new_id, "Priority": "Normal", "Status": "Not Started", **values}
            record.setdefault("OwnerId", by)
            self.records["Task"][new_id] = record
            self._stamp("Task", record, created=True, by=by, at=at)
            return new_id

    def _index(self, sobject: str, external_field: str) -> dict[str, str]:
        # An index per (object, external-id field) keeps upserts O(1) for the 500-lead and bench runs.
        return self._indexes.setdefault((sobject, external_field), {})

    def _index_lookup(self, sobject: str, external_field: str | None, key: Any) -> str | None:
        if not external_field or key is None:
            return None
        return self._index(sobject, external_field).get(str(key))

    # -- endpoints -------------------------------------------------------------------------------------
    def _describe(self, sobject: str) -> dict[str, Any]:
        fields = list(self._object(sobject).values())
        return {"name": sobject, "label": sobject, "createable": True, "updateable": True, "fields": fields}

    def _collection_upsert(self, sobject: str, external_field: str, body: Any) -> list[dict[str, Any]]:
        self._external_field(sobject, external_field)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Unexpected parameter encountered during deserialization"
            )
        records: list[dict[str, Any]] = body["records"]
        if len(records) > MAX_COLLECTION_RECORDS:
            raise ApiError(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        for record in records:
            if (record.get("attributes") or {}).get("type") != sobject:
                raise ApiError(
                    400, "INVALID_TYPE", "Records of this type are not allowed: missing attributes.type"
                )
            self._check_columns(sobject, record)
            self._check_request_rules(sobject, record)
        all_or_none = bool(body.get("allOrNone"))
        results: list[dict[str, Any]] = []
        for record in records:
            outcome = self._upsert_one(sobject, external_field, record)
            if isinstance(outcome, dict):
                results.append({"success": False, "errors": [outcome]})
            else:
                results.append({"id": outcome[0], "success": True, "errors": [], "created": outcome[1]})
        if all_or_none and not all(result["success"] for result in results):
            # The documented shape when allOrNone rolls back: failed ones keep their error, others say so.
            return [
                result
                if not result["success"]
                else {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                            "message": "Record rolled back because not all records were valid and the "
                            "request was using AllOrNone header",
                            "fields": [],
                        }
                    ],
                }
                for result in results
            ]
        return results

    def _single_upsert(self, sobject: str, external_field: str, value: str, body: Any) -> tuple[int, Any]:
        self._external_field(sobject, external_field)
        if not isinstance(body, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Unexpected parameter encountered during deserialization"
            )
        self._check_columns(sobject, body)
        if external_field in body and str(body[external_field]) != value:
            raise ApiError(400, "INVALID_FIELD", f"{external_field} in the body does not match the URL")
        outcome = self._upsert_one(sobject, external_field, {**body, external_field: value})
        if isinstance(outcome, dict):
            error = {
                "message": outcome["message"],
                "errorCode": outcome["statusCode"],
                "fields": outcome["fields"],
            }
            return 400, [error]
        return (201 if outcome[1] else 200), {
            "id": outcome[0],
            "success": True,
            "errors": [],
            "created": outcome[1],
        }

    def _create(self, sobject: str, body: Any) -> tuple[int, Any]:
        self._object(sobject)
        if not isinstance(body, dict):
            raise ApiError(
                400, "JSON_PARSER_ERROR", "Unexpected parameter encountered during deserialization"
            )
        self._check_columns(sobject, body)
        outcome = self._upsert_one(sobject, None, body)
        if isinstance(outcome, dict):
            return 400, [
                {
                    "message": outcome["message"],
                    "errorCode": outcome["statusCode"],
                    "fields": outcome["fields"],
                }
            ]
        return 201, {"id": outcome[0], "success": True, "errors": []}

    def _collection_delete(self, ids: str) -> list[dict[str, Any]]:
        """sObject Collections delete: each Id is looked up in every object; a missing one fails."""
        results = []
        with self._lock:
            for record_id in [part for part in ids.split(",") if part]:
                for records in self.records.values():
                    if record_id in records:
                        del records[record_id]
                        for index in self._indexes.values():
                            for key in [k for k, v in index.items() if v == record_id]:
                                del index[key]
                        results.append({"id": record_id, "success": True, "errors": []})
                        break
                else:
                    error = {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}
                    results.append({"id": record_id, "success": False, "errors": [error]})
        return results

    def _query(self, soql: str) -> dict[str, Any]:
        match = re.fullmatch(
            r"\s*SELECT\s+(?P<fields>[\w\s,.]+?)\s+FROM\s+(?P<object>\w+)"
            r"(?:\s+WHERE\s+(?P<where>\w+)\s*(?P<op>=|IN)\s*(?P<values>\(.*\)|'(?:[^'\\]|\\.)*'))?"
            r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
            soql,
            flags=re.IGNORECASE | re.DOTALL,
        )
        if match is None:
            raise ApiError(400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:80]}")
        sobject = match["object"]
        described = self._object(sobject)
        fields = [name.strip() for name in match["fields"].split(",")]
        for name in fields + ([match["where"]] if match["where"] else []):
            if not self._known_path(sobject, name):
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"\n{soql[:60]}\n^\nERROR at Row:1:Column:1\nNo such column "
                    f"'{name}' on entity '{sobject}'.",
                )
        wanted = set(re.findall(r"'((?:[^'\\]|\\.)*)'", match["values"] or ""))
        wanted = {re.sub(r"\\(.)", r"\1", value) for value in wanted}
        with self._lock:
            rows = list(self.records[sobject].values())
        if match["where"]:
            where = match["where"]
            if described[where]["type"] == "email":  # SOQL compares text without regard to case
                lowered = {value.lower() for value in wanted}
                rows = [row for row in rows if str(row.get(where)).lower() in lowered]
            else:
                rows = [row for row in rows if str(row.get(where)) in wanted]
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        records = [self._record(sobject, row, fields) for row in rows]
        return {"totalSize": len(records), "done": True, "records": records}

    def _soql(self, text: str) -> dict[str, Any]:
        """The SOQL the simple `_query` does not take (tests/support/soql.py)."""
        try:
            parsed = soql.parse(text, self._object)
        except soql.SoqlError as error:
            raise ApiError(400, error.code, error.message) from error
        types = {name: str(item.get("type")) for name, item in self.objects[parsed.sobject].items()}
        with self._lock:
            rows = [dict(row) for row in self.records[parsed.sobject].values() if parsed.matches(row)]
        rows = parsed.sort(rows, types)
        if parsed.limit is not None:
            rows = rows[: parsed.limit]
        records = [
            {
                "attributes": {
                    "type": parsed.sobject,
                    "url": f"/services/data/v{self.api_version}/sobjects/{parsed.sobject}/{row['Id']}",
                },
                **{name: row.get(name) for name in parsed.fields},
            }
            for row in rows
        ]
        return {"totalSize": len(records), "done": True, "records": records}

    def _page(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Cut an answer at `query_batch_size` records; the rest waits behind a nextRecordsUrl."""
        records = answer["records"]
        if len(records) <= self.query_batch_size:
            return answer
        return self._cut(records, answer["totalSize"])

    def _cut(self, records: list[dict[str, Any]], total: int) -> dict[str, Any]:
        size = self.query_batch_size
        page, rest = records[:size], records[size:]
        answer: dict[str, Any] = {"totalSize": total, "done": not rest, "records": page}
        if rest:
            locator = f"01g{next(self._ids):015d}-{size}"
            with self._lock:
                self._locators[locator] = (rest, total)
            answer["nextRecordsUrl"] = f"/services/data/v{self.api_version}/query/{locator}"
        return answer

    def _more(self, locator: str) -> dict[str, Any]:
        with self._lock:
            left = self._locators.pop(locator, None)
        if left is None:
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._cut(*left)

    def _known_path(self, sobject: str, name: str) -> bool:
        """A field, or a parent's field through a lookup (`Account.Name` from Contact's AccountId)."""
        if "." not in name:
            return name in self._object(sobject)
        relation, rest = name.split(".", 1)
        return (
            f"{relation}Id" in self._object(sobject)
            and relation in self.objects
            and "." not in rest
            and (rest in self.objects[relation])
        )

    def _record(self, sobject: str, row: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        """A query result record: plain fields, and a parent's fields as a nested record (or null)."""
        record: dict[str, Any] = {
            "attributes": {
                "type": sobject,
                "url": f"/services/data/v{self.api_version}/sobjects/{sobject}/{row['Id']}",
            }
        }
        for name in fields:
            if "." not in name:
                record[name] = row.get(name)
                continue
            relation, child = name.split(".", 1)
            parent_id = row.get(f"{relation}Id")
            with self._lock:
                parent = self.records.get(relation, {}).get(str(parent_id)) if parent_id else None
            if parent is None:
                record[relation] = None
                continue
            nested = record.get(relation) or {
                "attributes": {
                    "type": relation,
                    "url": f"/services/data/v{self.api_version}/sobjects/{relation}/{parent['Id']}",
                }
            }
            nested[child] = parent.get(child)
            record[relation] = nested
        return record

    def _composite_batch(self, body: Any, headers: dict[str, str]) -> dict[str, Any]:
        """`POST composite/batch`: up to 25 subrequests in one round trip (GET queries are enough here)."""
        if not isinstance(body, dict) or not isinstance(body.get("batchRequests"), list):
            raise ApiError(400, "JSON_PARSER_ERROR", "batchRequests is required")
        requests = body["batchRequests"]
        if len(requests) > 25:
            raise ApiError(400, "INVALID_BATCH_REQUEST", "A batch cannot contain more than 25 requests")
        results = []
        for request in requests:
            url = str(request.get("url") or "")
            path, _, query_string = url.partition("?")
            try:
                status, result = self._route(
                    str(request.get("method") or "GET").upper(),
                    "/services/data/" + path.lstrip("/"),
                    parse_qs(query_string),
                    headers,
                    json.dumps(request.get("richInput")).encode() if "richInput" in request else b"",
                )
            except ApiError as error:
                status, result = error.status, error.body
            results.append({"statusCode": status, "result": result})
        return {"hasErrors": any(item["statusCode"] >= 400 for item in results), "results": results}

    def add_record(self, sobject: str, **values: Any) -> str:
        """Put a record straight into the org (accounts, contacts, leads a test needs); returns its Id."""
        with self._lock:
            new_id = self._new_id(sobject)
            self.records[sobject][new_id] = {"Id": new_id, **values}
        return new_id

    # Bulk API 2.0 ingest
    def _job_info(self, job: BulkJob) -> dict[str, Any]:
        return dict(job.info)

    def _create_job(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("operation") not in {"insert", "upsert", "update"}:
            raise ApiError(400, "INVALIDJOB", "InvalidJob : operation must be insert, upsert or update")
        sobject = str(body.get("object"))
        if sobject not in self.objects:
            raise ApiError(400, "INVALIDJOB", f"InvalidJob : Unable to find object: {sobject}")
        external_field = body.get("externalIdFieldName")
        if body["operation"] == "upsert":
            described = self.objects[sobject].get(str(external_field))
            if described is None or not described["externalId"]:
                raise ApiError(
                    400,
                    "INVALIDJOB",
                    f"InvalidJob : Field name provided, {external_field} does not "
                    f"match an External ID, Salesforce Id, or indexed field for {sobject}",
                )
        job_id = f"7505e{next(self._ids):013d}"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        info = {
            "id": job_id,
            "operation": body["operation"],
            "object": sobject,
            "createdById": "005000000000001AAA",
            "createdDate": now,
            "systemModstamp": now,
            "state": "Open",
            "externalIdFieldName": external_field,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "contentUrl": f"services/data/v{self.api_version}/jobs/ingest/{job_id}/batches",
            "lineEnding": body.get("lineEnding", "LF"),
            "columnDelimiter": body.get("columnDelimiter", "COMMA"),
            "numberRecordsProcessed": 0,
            "numberRecordsFailed": 0,
            "retries": 0,
            "totalProcessingTime": 0,
        }
        with self._lock:
            self.jobs[job_id] = BulkJob(info)
        return info

    def _job(self, job_id: str) -> BulkJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    def _upload(self, job_id: str, body: bytes) -> None:
        job = self._job(job_id)
        if job.info["state"] != "Open":
            raise ApiError(409, "INVALIDJOBSTATE", "Job is not in Open state")
        job.csv_text += body.decode("utf-8")

    def _set_state(self, job_id: str, body: Any) -> dict[str, Any]:
        job = self._job(job_id)
        state = (body or {}).get("state")
        if state == "Aborted":
            job.info["state"] = "Aborted"
        elif state == "UploadComplete":
            if job.info["state"] != "Open":
                raise ApiError(409, "INVALIDJOBSTATE", "Job is not in Open state")
            job.info["state"] = "UploadComplete"
            if self.hold_bulk_jobs:
                job.info["state"] = "InProgress"
            else:
                self._process(job)
        else:
            raise ApiError(400, "INVALIDJOBSTATE", f"Invalid state: {state}")
        return self._job_info(job)

    def _process(self, job: BulkJob) -> None:
        """Run the job at once; the first poll after UploadComplete sees it finished."""
        rows = list(csv.DictReader(io.StringIO(job.csv_text)))
        sobject = job.info["object"]
        columns = list(rows[0].keys()) if rows else []
        job.columns = columns
        unknown = [name for name in columns if name not in self.objects[sobject]]
        if unknown:
            job.info.update(
                state="Failed", errorMessage=f"InvalidBatch : Field name not found : {unknown[0]}"
            )
            job.unprocessed = rows
            return
        for row in rows:
            # Empty CSV cells leave a field unchanged in Bulk API 2.0; only non-empty ones are written.
            values = {name: value for name, value in row.items() if value != ""}
            outcome = self._upsert_one(sobject, job.info.get("externalIdFieldName"), values)
            if isinstance(outcome, dict):
                fields = ",".join(outcome["fields"])
                job.failed.append(
                    {
                        "sf__Id": "",
                        "sf__Error": f"{outcome['statusCode']}:{outcome['message']}:{fields} --",
                        **row,
                    }
                )
            else:
                job.successful.append({"sf__Id": outcome[0], "sf__Created": str(outcome[1]).lower(), **row})
        job.info.update(
            state="JobComplete",
            numberRecordsProcessed=len(rows),
            numberRecordsFailed=len(job.failed),
        )

    def _results_csv(self, job_id: str, kind: str) -> str:
        job = self._job(job_id)
        if kind == "successfulresults":
            header, rows = ["sf__Id", "sf__Created", *job.columns], job.successful
        elif kind == "failedresults":
            header, rows = ["sf__Id", "sf__Error", *job.columns], job.failed
        else:
            header, rows = list(job.columns), job.unprocessed
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """Answer one request: (status, content type, body)."""
        parts = urlsplit(raw_path)
        path = parts.path
        if path.startswith("/services/Soap/u/") and method == "POST":
            status, xml = self._login(body)
            return status, "text/xml; charset=utf-8", xml.encode()
        fault = self._take_fault()
        if fault is not None and fault.delay_seconds > 0:
            time.sleep(fault.delay_seconds)
        elif fault is not None:
            payload = [{"message": fault.message, "errorCode": fault.error_code}]
            return fault.status, "application/json", json.dumps(payload).encode()
        with self._lock:
            self.requests.append((method, path))
        try:
            self._check_session(headers.get("authorization"))
            result = self._route(method, path, parse_qs(parts.query), headers, body)
        except ApiError as error:
            return error.status, "application/json", json.dumps(error.body).encode()
        status, payload = result
        if payload is None:
            return status, "application/json", b""
        if isinstance(payload, str):
            return status, "text/csv", payload.encode()
        return status, "application/json", json.dumps(payload).encode()

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        prefix = f"/services/data/v{self.api_version}/"
        if not path.startswith(prefix):
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        parts = [unquote(part) for part in path[len(prefix) :].strip("/").split("/")]

        def json_body() -> Any:
            try:
                return json.loads(body or b"null")
            except ValueError as error:
                raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}") from error

        match method, parts:
            case "GET", ["sobjects", sobject, "describe"]:
                return 200, self._describe(sobject)
            case "DELETE", ["composite", "sobjects"]:
                return 200, self._collection_delete((query.get("ids") or [""])[0])
            case "PATCH", ["composite", "sobjects", sobject, external_field]:
                return 200, self._collection_upsert(sobject, external_field, json_body())
            case "PATCH", ["sobjects", sobject, external_field, value]:
                return self._single_upsert(sobject, external_field, value, json_body())
            case "POST", ["sobjects", sobject]:
                return self._create(sobject, json_body())
            case "GET", ["query"]:
                text = (query.get("q") or [""])[0]
                with self._lock:
                    self.queries.append(text)
                return 200, self._page(self._soql(text) if _extended(text) else self._query(text))
            case "GET", ["query", locator]:
                return 200, self._more(locator)
            case "POST", ["composite", "batch"]:
                return 200, self._composite_batch(json_body(), headers)
            case "POST", ["jobs", "ingest"]:
                return 200, self._create_job(json_body())
            case "PUT", ["jobs", "ingest", job_id, "batches"]:
                self._upload(job_id, body)
                return 201, None
            case "PATCH", ["jobs", "ingest", job_id]:
                return 200, self._set_state(job_id, json_body())
            case "GET", ["jobs", "ingest", job_id]:
                return 200, self._job_info(self._job(job_id))
            case "GET", ["jobs", "ingest", job_id, kind] if kind.lower() in {
                "successfulresults",
                "failedresults",
                "unprocessedrecords",
            }:
                return 200, self._results_csv(job_id, kind.lower())
        raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")


def _extended(text: str) -> bool:
    """Whether a query needs more than the simple `_query` grammar (one IN or = filter)."""
    return bool(re.search(r"\b(AND|OR|NOT|ORDER\s+BY)\b|[<>!]", text, flags=re.IGNORECASE))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Salesforce serves it
    owner: SalesforceDouble

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, content_type, payload = self.owner.handle(self.command, self.path, headers, body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            # The client gave up (a timeout we injected); the write already happened, as it can in Salesforce.
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the double's state, not its access log."""


def _soap_fault(code: str, message: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring><detail>"
        f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"
        "</soapenv:Body></soapenv:Envelope>"
    )


def _login_response(session_id: str, server_url: str, username: str) -> str:
    metadata_url = server_url.replace("/Soap/u/", "/Soap/m/")
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
        f"<metadataServerUrl>{metadata_url}</metadataServerUrl><passwordExpired>false</passwordExpired>"
        f"<sandbox>false</sandbox><serverUrl>{server_url}</serverUrl><sessionId>{session_id}</sessionId>"
        "<userId>005000000000001AAA</userId><userInfo><organizationId>00D000000000001AAA</organizationId>"
        f"<userName>{username}</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )
