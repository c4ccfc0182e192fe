"""Account matching inside a batch: one directory lookup for every new enquiry's sender.

A match replaces the ARR estimate with the account's real ARR (so the ARR threshold sends big accounts
to people), marks existing customers and names the account owner; the audit row says which rule
matched. When the CRM cannot be reached, the batch goes on with the bundled firmographics and the audit
row says "account lookup unavailable": a CRM outage never blocks intake.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from connectors.crm.accounts import AccountDirectory, AccountMatch
from models.records import EnquiryIn, Enrichment
from store import routing_repo

log = logging.getLogger(__name__)
UNAVAILABLE = "account lookup unavailable"


@dataclass
class AccountMatcher:
    """Wraps a directory (usually a `CachedDirectory`) for the batch."""

    directory: AccountDirectory
    lookups_failed: int = 0

    def apply(
        self, session: Session, enquiries: Sequence[EnquiryIn], enrichments: Sequence[Enrichment]
    ) -> tuple[list[Enrichment], list[list[str]]]:
        """The enrichments with what the CRM knows, and each enquiry's audit notes."""
        emails = sorted({e.sender_email.lower() for e in enquiries if e.sender_email})
        try:
            matches = self.directory.lookup(emails) if emails else {}
        except Exception as error:  # whatever the CRM does, intake goes on
            self.lookups_failed += 1
            log.warning("%s (%s): %s", UNAVAILABLE, self.directory.name, error.__class__.__name__)
            notes = [
                [f"{UNAVAILABLE} ({self.directory.name}): bundled firmographics used"] for _ in enquiries
            ]
            return list(enrichments), notes
        owners = routing_repo.user_names_by_crm_id(
            session, {m.owner_crm_id for m in matches.values() if m.owner_crm_id}
        )
        updated: list[Enrichment] = []
        notes: list[list[str]] = []
        for enquiry, enrichment in zip(enquiries, enrichments, strict=True):
            match = matches.get((enquiry.sender_email or "").lower())
            if match is None:
                updated.append(enrichment)
                notes.append([])
                continue
            owner = match.owner_name or (owners.get(match.owner_crm_id) if match.owner_crm_id else None)
            updated.append(_matched(enrichment, match, owner))
            notes.append([_note(match, owner, enrichment)])
        return updated, notes


def _matched(enrichment: Enrichment, match: AccountMatch, owner: str | None) -> Enrichment:
    changes: dict[str, object] = {
        "account": match.name,
        "account_id": match.account_id,
        "account_match": match.rule,
        "account_owner": owner,
        "customer": match.customer,
    }
    if match.name:
        changes["company"] = match.name
    if match.arr is not None:
        changes["arr_estimate"] = match.arr
        changes["arr_source"] = "crm"
    return enrichment.model_copy(update=changes)


def _note(match: AccountMatch, owner: str | None, before: Enrichment) -> str:
    rule = {
        "contact_email": "exact contact e-mail",
        "lead_email": "exact lead e-mail",
        "account_domain": f"account domain {match.domain}",
    }[match.rule]
    parts = [f"account match by {rule}: {match.name or match.account_id or '?'}"]
    if match.arr is not None:
        estimate = f" (replaces the estimate {before.arr_estimate:,.0f})" if before.arr_estimate else ""
        parts.append(f"real ARR {match.arr:,.0f} USD{estimate}")
    if match.customer:
        parts.append(f"existing customer ({match.status})")
    if owner:
        parts.append(f"account owner {owner}")
    elif match.owner_crm_id:
        parts.append(f"account owner {match.owner_crm_id} has no user here (set --crm-user-id)")
    return "; ".join(parts)
