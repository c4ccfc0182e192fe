"""Account matching against the Salesforce double (SOQL as Salesforce documents it), the cache, the check."""

from __future__ import annotations

import pytest

from config.settings import AccountSettings, CrmSettings
from connectors.crm.accounts import CachedDirectory, SalesforceAccountDirectory, normalise_domain
from connectors.crm.mapping import LeadMapping
from connectors.crm.salesforce import SalesforceCrm
from models.errors import RetriableError
from tests.support.salesforce_double import SalesforceDouble

from .builders import StepClock

FREE = {"gmail.com"}


def directory(sf: SalesforceDouble, mapping: LeadMapping, **settings: object) -> SalesforceAccountDirectory:
    crm = SalesforceCrm(sf.settings(), CrmSettings(), mapping)
    return SalesforceAccountDirectory(crm, AccountSettings(**settings), lambda domain: domain in FREE)


def org(sf: SalesforceDouble) -> dict[str, str]:
    """Accounts, contacts and a lead of a small org."""
    ids = {
        "bigco": sf.add_record(
            "Account",
            Name="BigCo",
            Domain__c="bigco.example",
            AnnualRevenue=120000,
            OwnerId="005ANA",
            Type="Customer - Direct",
            CreatedDate="2020-01-01T00:00:00.000+0000",
        ),
        "twin_old": sf.add_record(
            "Account",
            Name="Twin Old",
            Domain__c="twin.example",
            AnnualRevenue=1,
            OwnerId="005OLD",
            Type="Prospect",
            CreatedDate="2019-01-01T00:00:00.000+0000",
        ),
        "twin_busy": sf.add_record(
            "Account",
            Name="Twin Busy",
            Domain__c="twin.example",
            AnnualRevenue=2,
            OwnerId="005BUSY",
            Type="Prospect",
            CreatedDate="2021-01-01T00:00:00.000+0000",
        ),
        "gmail": sf.add_record(
            "Account", Name="Someone at Gmail", Domain__c="gmail.com", OwnerId="005X", CreatedDate="2018"
        ),
    }
    sf.add_record("Contact", LastName="Cfo", Email="CFO@Other.example", AccountId=ids["bigco"])
    for n in range(2):
        sf.add_record("Contact", LastName=f"T{n}", Email=f"t{n}@twin.example", AccountId=ids["twin_busy"])
    sf.add_record("Lead", LastName="Lee", Company="Leadco", Email="lee@leadco.example", OwnerId="005LEE")
    return ids


def test_rules_in_order_contact_then_lead_then_domain_and_free_mail_never(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    ids = org(sf_double)
    found = directory(sf_double, mapping).lookup(
        ["cfo@other.example", "lee@leadco.example", "buyer@bigco.example", "new@twin.example", "me@gmail.com"]
    )
    contact = found["cfo@other.example"]  # contact e-mail wins although the domain is another account's
    assert (contact.rule, contact.account_id, contact.arr, contact.customer) == (
        "contact_email",
        ids["bigco"],
        120000.0,
        True,
    )
    assert (contact.owner_crm_id, contact.name) == ("005ANA", "BigCo")
    lead = found["lee@leadco.example"]
    assert (lead.rule, lead.owner_crm_id, lead.name, lead.arr) == ("lead_email", "005LEE", "Leadco", None)
    assert found["buyer@bigco.example"].rule == "account_domain"
    assert found["new@twin.example"].account_id == ids["twin_busy"]  # most contacts beats oldest
    assert "me@gmail.com" not in found


def test_oldest_first_when_configured(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    ids = org(sf_double)
    found = directory(sf_double, mapping, tiebreakers=["oldest"]).lookup(["new@twin.example"])
    assert found["new@twin.example"].account_id == ids["twin_old"]


def test_five_hundred_senders_take_at_most_three_round_trips(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    org(sf_double)
    for n in range(200):
        sf_double.add_record(
            "Account", Name=f"Co {n}", Domain__c=f"co{n}.example", OwnerId="005", CreatedDate="2020"
        )
    emails = [f"someone.with.a.long.name{n}@co{n % 250}.example" for n in range(500)]
    lookups = directory(sf_double, mapping)
    lookups.lookup(["warm@up.example"])  # the login and first query, not counted below
    before = sf_double.api_request_count()
    found = lookups.lookup(emails)
    assert sf_double.api_request_count() - before <= 3
    assert len(found) == 400  # co0..co199 have accounts, co200..co249 do not
    assert {match.rule for match in found.values()} == {"account_domain"}


def test_cache_keeps_answers_and_misses_for_its_ttl(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    org(sf_double)
    clock = StepClock()
    cached = CachedDirectory(directory(sf_double, mapping), ttl_seconds=600, clock=clock)
    assert set(cached.lookup(["buyer@bigco.example", "nobody@nowhere.example"])) == {"buyer@bigco.example"}
    requests = sf_double.api_request_count()
    assert set(cached.lookup(["BUYER@bigco.example", "nobody@nowhere.example"])) == {"buyer@bigco.example"}
    assert sf_double.api_request_count() == requests  # both answers came from the cache
    clock.advance(seconds=601)
    cached.lookup(["nobody@nowhere.example"])
    assert sf_double.api_request_count() > requests


def test_unreachable_crm_raises_and_caches_nothing(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    org(sf_double)
    cached = CachedDirectory(directory(sf_double, mapping), ttl_seconds=600, clock=StepClock())
    sf_double.fail_requests(count=1)
    with pytest.raises(RetriableError):
        cached.lookup(["buyer@bigco.example"])
    assert "buyer@bigco.example" in cached.lookup(["buyer@bigco.example"])


def test_check_names_missing_fields(sf_double: SalesforceDouble, mapping: LeadMapping) -> None:
    assert directory(sf_double, mapping).check().ok
    result = directory(sf_double, mapping, arr_field="ARR__c", domain_field="Website").check()
    assert not result.ok
    assert "Account has no field(s) ARR__c" in result.message
    assert "Account.Website is not indexed" in result.message


def test_domains_are_normalised() -> None:
    assert normalise_domain("https://www.BigCo.example/about") == "bigco.example"
    assert normalise_domain(" WWW.bigco.example. ") == "bigco.example"


def test_lookups_follow_next_records_url_past_2000_rows(
    sf_double: SalesforceDouble, mapping: LeadMapping
) -> None:
    """Each lookup's answer is longer than Salesforce's page of 2,000 records, with the record that
    decides the match behind the first page: without following nextRecordsUrl those are lost."""
    assert sf_double.query_batch_size == 2000  # the double pages as Salesforce does
    many = 2100
    # Contacts by e-mail: a shared inbox recorded 2,100 times, then the one contact that matters.
    shared = sf_double.add_record("Account", Name="Shared", Domain__c="shared.example", CreatedDate="2020")
    for n in range(many):
        sf_double.add_record("Contact", LastName=f"S{n}", Email="info@shared.example", AccountId=shared)
    late = sf_double.add_record(
        "Account", Name="Late Co", Domain__c="late.example", AnnualRevenue=75000, OwnerId="005LATE",
        Type="Customer - Direct", CreatedDate="2020",
    )  # fmt: skip
    sf_double.add_record("Contact", LastName="Cfo", Email="cfo@elsewhere.example", AccountId=late)
    # Leads by e-mail: 2,100 duplicates of one lead, then the lead that matters.
    for n in range(many):
        sf_double.add_record(
            "Lead", LastName=f"D{n}", Company="Dupes", Email="sales@dupes.example", OwnerId="005D"
        )
    sf_double.add_record(
        "Lead", LastName="Lee", Company="Leadco", Email="lee@leadco.example", OwnerId="005LEE"
    )
    # Accounts by domain: twin A, 2,100 accounts on one domain, then twin B and the late account's domain.
    twin_a = sf_double.add_record("Account", Name="Twin A", Domain__c="twin2.example", CreatedDate="2019")
    for n in range(many):
        sf_double.add_record("Account", Name=f"Crowd {n}", Domain__c="crowded.example", CreatedDate="2021")
    twin_b = sf_double.add_record("Account", Name="Twin B", Domain__c="twin2.example", CreatedDate="2022")
    lone = sf_double.add_record(
        "Account", Name="Lone", Domain__c="lone.example", OwnerId="005LONE", CreatedDate="2020"
    )
    # Contact counts for the tiebreaker: A's 1,200 come first, B's 1,300 after, so the first page of
    # the count query holds all of A's and only 800 of B's.
    for n in range(1200):
        sf_double.add_record("Contact", LastName=f"A{n}", AccountId=twin_a)
    for n in range(1300):
        sf_double.add_record("Contact", LastName=f"B{n}", AccountId=twin_b)

    lookups = directory(sf_double, mapping)
    found = lookups.lookup(
        ["info@shared.example", "cfo@elsewhere.example", "sales@dupes.example", "lee@leadco.example",
         "buyer@twin2.example", "buyer@lone.example", "buyer@crowded.example"]
    )  # fmt: skip
    assert (found["info@shared.example"].rule, found["info@shared.example"].account_id) == (
        "contact_email",
        shared,
    )
    cfo = found["cfo@elsewhere.example"]  # row 2,101 of the contact query
    assert (cfo.rule, cfo.account_id, cfo.arr, cfo.owner_crm_id) == (
        "contact_email",
        late,
        75000.0,
        "005LATE",
    )
    lee = found["lee@leadco.example"]  # row 2,101 of the lead query
    assert (lee.rule, lee.owner_crm_id, lee.name) == ("lead_email", "005LEE", "Leadco")
    assert found["sales@dupes.example"].rule == "lead_email"
    lone_match = found["buyer@lone.example"]  # the last row of the domain query
    assert (lone_match.rule, lone_match.account_id, lone_match.owner_crm_id) == (
        "account_domain",
        lone,
        "005LONE",
    )
    # B has more contacts (1,300 to 1,200) although A is older and the first page saw only 800 of B's.
    assert found["buyer@twin2.example"].account_id == twin_b
    assert found["buyer@crowded.example"].rule == "account_domain"
    # Four steps (contacts, leads, accounts, contact counts), each one request for its first page and
    # one for its second: pages are followed, and never one query per value.
    assert lookups.round_trips == 8
