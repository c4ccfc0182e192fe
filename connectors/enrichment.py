"""Firmographics by sender domain, and free-mail detection, from bundled tables.

The bundled tables are a starting point (invented companies for the demo, a list of consumer mail
providers); point `TRIAGE_ENRICHMENT__FIRMOGRAPHICS` style settings at your own export to replace them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, slots=True)
class Company:
    domain: str
    name: str
    industry: str | None
    employees: int | None
    country: str | None


class Firmographics:
    """Domain → company lookups over a CSV table (domain, company, industry, employees, country)."""

    def __init__(self, companies: dict[str, Company], free_mail: frozenset[str]) -> None:
        self._companies = companies
        self._free_mail = free_mail

    @classmethod
    def from_files(cls, firmographics_csv: Path, free_mail_txt: Path) -> Firmographics:
        companies: dict[str, Company] = {}
        with firmographics_csv.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                domain = row["domain"].strip().lower()
                employees = row.get("employees", "").strip()
                companies[domain] = Company(
                    domain=domain,
                    name=row["company"].strip(),
                    industry=(row.get("industry") or "").strip() or None,
                    employees=int(employees) if employees.isdigit() else None,
                    country=(row.get("country") or "").strip() or None,
                )
        free = {
            line.strip().lower()
            for line in free_mail_txt.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        }
        return cls(companies, frozenset(free))

    def is_free_mail(self, domain: str) -> bool:
        return domain in self._free_mail

    def company(self, domain: str) -> Company | None:
        """The company of a domain or of its parent domains (mail.example.com → example.com)."""
        parts = domain.split(".")
        for start in range(len(parts) - 1):
            found = self._companies.get(".".join(parts[start:]))
            if found is not None:
                return found
        return None


@cache
def bundled_firmographics() -> Firmographics:
    """The tables shipped with the package (loaded once per process)."""
    return Firmographics.from_files(DATA_DIR / "firmographics.csv", DATA_DIR / "free_mail_domains.txt")


def sender_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower().rstrip(".") or None
