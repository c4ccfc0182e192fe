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
