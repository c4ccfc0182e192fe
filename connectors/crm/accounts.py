"""Lead-to-account matching: who the sender is in the CRM, which account they belong to, who owns it.

One `AccountDirectory` interface, one implementation per CRM backend, every lookup batched (a whole
pipeline batch of senders at once, never a query per enquiry):

- `LocalAccountDirectory`: the local CRM's `crm_accounts` and `crm_contacts` tables
  (`triage crm accounts import FILE.csv`): an exact contact e-mail, then the sender's domain (or a
  parent domain: mail.bigco.example → bigco.example).
- `SalesforceAccountDirectory` (SOQL), in this order: an exact `Contact.Email`; an exact `Lead.Email`;
  the sender's domain against an indexed, normalised Account field (`TRIAGE_CRM__ACCOUNTS__DOMAIN_FIELD`,
  default `Domain__c` created as an External ID: `Website` is not indexed and a leading-wildcard LIKE
  is not selective). Several accounts on one domain: the tiebreakers decide (most contacts, then the
  oldest). Each step is one round trip however many senders: its IN lists are cut to stay under
  the REST URI limit and sent together as one composite batch request when there are several.
- `CachedDirectory` keeps answers (misses too) for a TTL with an injected clock.

Free-mail domains never match an account: gmail.com is not one company.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from config.settings import AccountSettings
from connectors.base import CheckResult
from connectors.enrichment import sender_domain
from models.errors import ConfigError
from store import accounts as account_store
from store.common import Clock, utcnow

if TYPE_CHECKING:
    from connectors.crm.salesforce import SalesforceCrm

log = logging.getLogger(__name__)

Rule = Literal["contact_email", "lead_email", "account_domain"]
CSV_COLUMNS = ("domain", "name", "arr", "owner", "status", "contacts")


@dataclass(frozen=True, slots=True)
class AccountMatch:
    """What the CRM knows of one sender, and which rule found it."""

    rule: Rule
    account_id: str | None
    name: str | None
    domain: str | None
    arr: float | None
    customer: bool
    status: str | None = None
    owner_name: str | None = None  # a user name (the local CRM names owners so)
    owner_crm_id: str | None = None  # a CRM user id (Salesforce OwnerId), mapped to a user by crm_user_id


class AccountDirectory(Protocol):
    """Looks senders up in a CRM; raises when the CRM cannot be reached (the caller goes on without)."""

    name: str

    def lookup(self, emails: Sequence[str]) -> dict[str, AccountMatch]:
        """Lower-cased sender address → its match, for the senders the CRM knows."""
        ...

    def check(self) -> CheckResult:
        """Whether lookups can work (the configured fields exist); never raises."""
        ...


def normalise_domain(value: str) -> str:
    """`https://www.BigCo.example/` or `WWW.bigco.example` → `bigco.example`."""
    domain = value.strip().lower()
    for prefix in ("https://", "http://"):
        domain = domain.removeprefix(prefix)
    domain = domain.split("/", 1)[0].rstrip(".")
    return domain.removeprefix("www.")


def parent_domains(domain: str) -> list[str]:
    """mail.eu.bigco.example → [mail.eu.bigco.example, eu.bigco.example, bigco.example]."""
    parts = domain.split(".")
    return [".".join(parts[start:]) for start in range(len(parts) - 1)]


def is_customer(status: str | None, settings: AccountSettings) -> bool:
    wanted = {value.strip().lower() for value in settings.customer_statuses}
    return bool(status) and str(status).strip().lower() in wanted


def read_accounts_csv(path: Path) -> list[account_store.AccountIn]:
    """Parse the import file (columns domain, name, arr, owner, status, contacts).

    `contacts` is either a number (how many contacts the account has) or the contacts' e-mail addresses
    separated by `;` or spaces, which then also match exactly. Errors name the file and the line.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the accounts file: {error.strerror or error}") from error
    accounts: dict[str, account_store.AccountIn] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [name for name in ("domain", "name") if name not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(
                f"{path}: the header needs the columns {', '.join(CSV_COLUMNS)}; missing {', '.join(missing)}"
            )
        for line, row in enumerate(reader, start=2):
            domain = normalise_domain(row.get("domain") or "")
            if not domain or "." not in domain:
                raise ConfigError(f"{path}:{line}: domain {row.get('domain')!r} is not a domain")
            arr_text = (row.get("arr") or "").strip().replace(",", "").replace("_", "")
            try:
                arr = float(arr_text) if arr_text else None
            except ValueError:
                raise ConfigError(f"{path}:{line}: arr {arr_text!r} is not a number") from None
            contacts_text = (row.get("contacts") or "").strip()
            emails: tuple[str, ...] = ()
            if contacts_text.isdigit():
                count = int(contacts_text)
            else:
                emails = tuple(
                    dict.fromkeys(
                        part.strip().lower() for part in contacts_text.replace(";", " ").split() if part
                    )
                )
                bad = [email for email in emails if "@" not in email]
                if bad:
                    raise ConfigError(
                        f"{path}:{line}: contacts {bad[0]!r} is neither a number nor an address"
                    )
                count = len(emails)
            accounts[domain] = account_store.AccountIn(
                domain=domain,
                name=(row.get("name") or "").strip() or domain,
                arr=arr,
                owner=(row.get("owner") or "").strip() or None,
                status=(row.get("status") or "").strip(),
                contacts=count,
                contact_emails=emails,
            )
    return list(accounts.values())


class LocalAccountDirectory:
    """The local CRM's accounts: exact contact e-mail, then the domain (or a parent domain)."""

    name = "local"

    def __init__(
        self, factory: sessionmaker[Session], settings: AccountSettings, free_mail: Callable[[str], bool]
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._free_mail = free_mail

    def lookup(self, emails: Sequence[str]) -> dict[str, AccountMatch]:
        wanted = list(dict.fromkeys(email.lower() for email in emails))
        found: dict[str, AccountMatch] = {}
        # Its own short read: on SQLite (WAL) it reads beside the batch's write transaction.
        with self._factory() as session:
            for email, row in account_store.accounts_by_contact_email(session, wanted).items():
                found[email] = self._match("contact_email", row)
            domains = {
                email: domain
                for email in wanted
                if email not in found
                and (domain := sender_domain(email)) is not None
                and not self._free_mail(domain)
            }
            by_domain = account_store.accounts_by_domain(
                session, {parent for domain in domains.values() for parent in parent_domains(domain)}
            )
        for email, domain in domains.items():
            hit = next((by_domain[p] for p in parent_domains(domain) if p in by_domain), None)
            if hit is not None:
                found[email] = self._match("account_domain", hit)
        return found

    def _match(self, rule: Rule, row: account_store.AccountRow) -> AccountMatch:
        return AccountMatch(
            rule=rule,
            account_id=str(row.id),
            name=row.name,
            domain=row.domain,
            arr=row.arr,
            customer=is_customer(row.status, self._settings),
            status=row.status or None,
            owner_name=row.owner,
        )

    def check(self) -> CheckResult:
        try:
            with self._factory() as session:
                accounts, contacts = account_store.count_accounts(session)
        except Exception as error:  # a check reports, whatever went wrong
            return CheckResult(False, f"cannot read the local accounts: {error.__class__.__name__}: {error}")
        return CheckResult(True, f"local CRM: {accounts} account(s), {contacts} contact(s) to match senders")


# Salesforce answers a GET of more than 16,384 bytes of URI with 414: each query's IN list stays well
# below it, and several queries of one step travel in one composite batch request (up to 25 each).
MAX_QUERY_URI_BYTES = 12_000
COMPOSITE_BATCH_LIMIT = 25  # as connectors/crm/salesforce.py (not imported: simple-salesforce is heavy)


class SalesforceAccountDirectory:
    """Contact.Email, then Lead.Email, then Account by the domain field: at most three round trips
    for a batch (a fourth only when several accounts share a domain and `most_contacts` breaks ties)."""

    name = "salesforce"

    def __init__(
        self, crm: SalesforceCrm, settings: AccountSettings, free_mail: Callable[[str], bool]
    ) -> None:
        self._crm = crm
        self._settings = settings
        self._free_mail = free_mail

    @property
    def round_trips(self) -> int:
        """Requests the lookups made (a page past the first 2,000 records of a query is one more)."""
        return self._crm.lookup_round_trips

    def _account_fields(self) -> list[str]:
        s = self._settings
        return list(
            dict.fromkeys(
                ["Id", "Name", s.domain_field, s.arr_field, s.owner_field, s.status_field, "CreatedDate"]
            )
        )

    def lookup(self, emails: Sequence[str]) -> dict[str, AccountMatch]:
        wanted = list(dict.fromkeys(email.lower() for email in emails if "@" in email))
        found: dict[str, AccountMatch] = {}
        if not wanted:
            return found
        account_fields = self._account_fields()
        contact_fields = ["Id", "Email", "AccountId", *(f"Account.{name}" for name in account_fields)]
        for record in self._select("Contact", contact_fields, "Email", wanted):
            email = str(record.get("Email") or "").lower()
            account = record.get("Account")
            if email in wanted and email not in found and isinstance(account, dict):
                found[email] = self._account_match("contact_email", account)
        rest = [email for email in wanted if email not in found]
        if rest:
            for record in self._select("Lead", ["Id", "Email", "Company", "OwnerId"], "Email", rest):
                email = str(record.get("Email") or "").lower()
                if email in rest and email not in found:
                    found[email] = AccountMatch(
                        rule="lead_email",
                        account_id=None,
                        name=record.get("Company"),
                        domain=sender_domain(email),
                        arr=None,
                        customer=False,
                        owner_crm_id=record.get("OwnerId"),
                    )
        domains = {
            email: domain
            for email in wanted
            if email not in found
            and (domain := sender_domain(email)) is not None
            and not self._free_mail(domain)
        }
        if domains:
            field = self._settings.domain_field
            candidates: dict[str, list[dict[str, Any]]] = {}
            for record in self._select("Account", account_fields, field, sorted(set(domains.values()))):
                candidates.setdefault(normalise_domain(str(record.get(field) or "")), []).append(record)
            contact_counts = self._contact_counts(
                [str(r["Id"]) for rows in candidates.values() if len(rows) > 1 for r in rows]
            )
            for email, domain in domains.items():
                rows = candidates.get(domain)
                if rows:
                    found[email] = self._account_match("account_domain", self._pick(rows, contact_counts))
        return found

    def _pick(self, rows: list[dict[str, Any]], contact_counts: dict[str, int]) -> dict[str, Any]:
        ordered = sorted(rows, key=lambda r: str(r.get("Id")))
        for rule in reversed(self._settings.tiebreakers):  # stable sorts: the first tiebreaker wins
            if rule == "most_contacts":
                ordered.sort(key=lambda r: -contact_counts.get(str(r.get("Id")), 0))
            else:
                ordered.sort(key=lambda r: str(r.get("CreatedDate") or "9999"))
        return ordered[0]

    def _contact_counts(self, account_ids: list[str]) -> dict[str, int]:
        if not account_ids or "most_contacts" not in self._settings.tiebreakers:
            return {}
        counts: dict[str, int] = {}
        for record in self._select("Contact", ["Id", "AccountId"], "AccountId", account_ids):
            key = str(record.get("AccountId"))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _account_match(self, rule: Rule, account: dict[str, Any]) -> AccountMatch:
        s = self._settings
        arr = account.get(s.arr_field)
        status = account.get(s.status_field)
        return AccountMatch(
            rule=rule,
            account_id=account.get("Id"),
            name=account.get("Name"),
            domain=normalise_domain(str(account.get(s.domain_field) or "")) or None,
            arr=float(arr) if isinstance(arr, int | float) else None,
            customer=is_customer(status, s),
            status=str(status) if status else None,
            owner_crm_id=account.get(s.owner_field),
        )

    def _select(self, sobject: str, fields: list[str], where: str, values: list[str]) -> list[dict[str, Any]]:
        """Every record of `sobject` whose `where` is one of `values`: one round trip, and one more for
        each further page of 2,000 records (query_many follows nextRecordsUrl until each is done)."""
        head = f"SELECT {', '.join(fields)} FROM {sobject} WHERE {where} IN ("
        queries: list[str] = []
        chunk: list[str] = []
        size = len(quote(head)) + 200
        for value in values:
            quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            cost = len(quote(quoted)) + 3
            if chunk and size + cost > MAX_QUERY_URI_BYTES:
                queries.append(head + ", ".join(chunk) + ")")
                chunk, size = [], len(quote(head)) + 200
            chunk.append(quoted)
            size += cost
        if chunk:
            queries.append(head + ", ".join(chunk) + ")")
        records: list[dict[str, Any]] = []
        for start in range(0, len(queries), COMPOSITE_BATCH_LIMIT):
            group = queries[start : start + COMPOSITE_BATCH_LIMIT]
            for answer in self._crm.query_many(group):
                records.extend(answer.get("records", []))
        return records

    def check(self) -> CheckResult:
        """Describe Account, Contact and Lead, and name every configured field that is missing."""
        s = self._settings
        wanted = {
            "Account": ["Name", s.domain_field, s.arr_field, s.owner_field, s.status_field, "CreatedDate"],
            "Contact": ["Email", "AccountId"],
            "Lead": ["Email", "Company", "OwnerId"],
        }
        problems: list[str] = []
        try:
            described = {sobject: self._crm.describe(sobject) for sobject in wanted}
        except Exception as error:  # a check reports, whatever went wrong
            return CheckResult(False, f"cannot describe Account/Contact/Lead: {error}")
        for sobject, names in wanted.items():
            fields = {item["name"]: item for item in described[sobject].get("fields", [])}
            missing = [name for name in names if name not in fields]
            if missing:
                problems.append(
                    f"{sobject} has no field(s) {', '.join(missing)} (TRIAGE_CRM__ACCOUNTS__*): create them "
                    f"(Setup → Object Manager → {sobject}) or name existing ones."
                )
        domain = {item["name"]: item for item in described["Account"].get("fields", [])}.get(s.domain_field)
        if domain is not None and not (domain.get("externalId") or domain.get("idLookup")):
            problems.append(
                f"Account.{s.domain_field} is not indexed: tick 'External ID' on it so domain lookups stay "
                "selective (TRIAGE_CRM__ACCOUNTS__DOMAIN_FIELD)."
            )
        if problems:
            return CheckResult(False, "\n".join(problems))
        return CheckResult(
            True,
            f"account matching: Contact.Email, Lead.Email, Account.{s.domain_field} (ARR {s.arr_field}, "
            f"owner {s.owner_field}, status {s.status_field}) all exist.",
        )


@dataclass
class _Cached:
    expires_at: datetime
    match: AccountMatch | None


class CachedDirectory:
    """Remember each sender's answer (a miss too) for `ttl_seconds`; look up only what is not fresh."""

    def __init__(self, inner: AccountDirectory, *, ttl_seconds: float, clock: Clock = utcnow) -> None:
        self.inner = inner
        self.name = inner.name
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._entries: dict[str, _Cached] = {}
        self.lookups = 0  # calls that reached the CRM

    def lookup(self, emails: Sequence[str]) -> dict[str, AccountMatch]:
        now = self._clock()
        wanted = list(dict.fromkeys(email.lower() for email in emails))
        stale = [e for e in wanted if (entry := self._entries.get(e)) is None or entry.expires_at <= now]
        if stale:
            self.lookups += 1
            fresh = self.inner.lookup(stale)  # raises when the CRM is away: nothing is cached then
            expires = now + self._ttl
            for email in stale:
                self._entries[email] = _Cached(expires, fresh.get(email))
        return {e: match for e in wanted if (match := self._entries[e].match) is not None}

    def check(self) -> CheckResult:
        return self.inner.check()

    def forget(self, emails: Iterable[str] | None = None) -> None:
        """Drop cached answers (all of them without arguments)."""
        if emails is None:
            self._entries.clear()
        for email in emails or ():
            self._entries.pop(email.lower(), None)
