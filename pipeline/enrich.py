"""Enrichment: who is behind the sender's domain, and what the deal could be worth."""

from __future__ import annotations

from config.policy import LanePolicy
from connectors.enrichment import Firmographics, sender_domain
from models.records import EnquiryIn, Enrichment
from pipeline.language import detect_language


def segment_for(employees: int | None, policy: LanePolicy) -> str:
    if employees is None:
        return "unknown"
    if employees >= policy.segment_employee_bounds["enterprise"]:
        return "enterprise"
    if employees >= policy.segment_employee_bounds["mid_market"]:
        return "mid_market"
    return "smb"


def enrich(enquiry: EnquiryIn, firmographics: Firmographics, policy: LanePolicy) -> Enrichment:
    """Firmographics by domain, an ARR estimate (employees × the segment's ARR per employee) and the
    text's language. Account matching (pipeline/accounts.py) may later replace the estimate."""
    language = detect_language(f"{enquiry.subject}\n{enquiry.body}")
    domain = sender_domain(enquiry.sender_email)
    if domain is None:
        return Enrichment(
            domain=None,
            free_mail=False,
            company=enquiry.company_hint,
            industry=None,
            employees=None,
            arr_estimate=None,
            segment="unknown",
            language=language,
        )
    free_mail = firmographics.is_free_mail(domain)
    company = None if free_mail else firmographics.company(domain)
    employees = company.employees if company else None
    segment = segment_for(employees, policy)
    arr = None
    if employees is not None and segment in policy.arr_per_employee_usd:
        arr = round(employees * policy.arr_per_employee_usd[segment], 2)
    return Enrichment(
        domain=domain,
        free_mail=free_mail,
        company=company.name if company else enquiry.company_hint,
        industry=company.industry if company else None,
        employees=employees,
        arr_estimate=arr,
        segment=segment,
        country=company.country if company else None,
        language=language,
    )
