"""The local CRM's accounts and contacts: imported from a CSV, matched by exact e-mail or domain."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import CrmAccount, CrmContact


@dataclass(frozen=True, slots=True)
class AccountIn:
    """One account as imported: its normalised domain, and the e-mail addresses of its contacts."""

    domain: str
    name: str
    arr: float | None
    owner: str | None
    status: str
    contacts: int
    contact_emails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    domain: str
    name: str
    arr: float | None
    owner: str | None
    status: str
    contacts: int
    created_at: datetime


@dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    contacts_added: int = 0


def import_accounts(session: Session, accounts: Sequence[AccountIn], *, now: datetime) -> ImportCounts:
    """Insert new accounts, update changed ones (by domain), add unknown contacts: a re-import of the
    same file changes nothing (not even `updated_at`)."""
    counts = ImportCounts()
    domains = [account.domain for account in accounts]
    existing = {
        row.domain: row
        for row in session.scalars(sa.select(CrmAccount).where(CrmAccount.domain.in_(domains)))
    }
    for account in accounts:
        row = existing.get(account.domain)
        values = {
            "name": account.name,
            "arr": account.arr,
            "owner": account.owner,
            "status": account.status,
            "contacts": account.contacts,
        }
        if row is None:
            row = CrmAccount(domain=account.domain, created_at=now, updated_at=now, **values)
            session.add(row)
            existing[account.domain] = row
            counts.added += 1
        elif any(getattr(row, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now
            counts.updated += 1
        else:
            counts.unchanged += 1
    session.flush()
    emails = {email: existing[a.domain].id for a in accounts for email in a.contact_emails}
    if emails:
        known = set(session.scalars(sa.select(CrmContact.email).where(CrmContact.email.in_(list(emails)))))
        for email, account_id in emails.items():
            if email not in known:
                session.add(CrmContact(email=email, account_id=account_id, created_at=now))
                counts.contacts_added += 1
        session.flush()
    return counts


def _row(account: CrmAccount) -> AccountRow:
    return AccountRow(
        account.id,
        account.domain,
        account.name,
        account.arr,
        account.owner,
        account.status,
        account.contacts,
        account.created_at,
    )


def accounts_by_contact_email(session: Session, emails: Iterable[str]) -> dict[str, AccountRow]:
    """Contact e-mail (lower case) → its account, for the addresses that are known contacts."""
    wanted = list(dict.fromkeys(emails))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(CrmContact.email, CrmAccount)
        .join(CrmAccount, CrmAccount.id == CrmContact.account_id)
        .where(CrmContact.email.in_(wanted))
    )
    return {email: _row(account) for email, account in rows}


def accounts_by_domain(session: Session, domains: Iterable[str]) -> dict[str, AccountRow]:
    """Domain → account, for the domains an account has (the domain column is unique)."""
    wanted = list(dict.fromkeys(domains))
    if not wanted:
        return {}
    return {
        account.domain: _row(account)
        for account in session.scalars(sa.select(CrmAccount).where(CrmAccount.domain.in_(wanted)))
    }


def count_accounts(session: Session) -> tuple[int, int]:
    """How many accounts and contacts the local CRM holds."""
    accounts = session.scalar(sa.select(sa.func.count()).select_from(CrmAccount)) or 0
    contacts = session.scalar(sa.select(sa.func.count()).select_from(CrmContact)) or 0
    return int(accounts), int(contacts)
