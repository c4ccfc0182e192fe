"""The form and chat tools' own web hooks, end to end: signed as each tool signs, stored, mapped.

The payloads in tests/fixtures/webhooks/ are written from each tool's public documentation (a SaaS
tool cannot run here); they are signed here exactly as that tool signs them. HubSpot's API is a double
on httpx's transport that answers the documented batch-read endpoint: a live portal cannot exist here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from app.web import create_app
from config.settings import HooksSettings, Settings
from connectors.webhooks.hubspot import HubSpotClient
from pipeline.hook_fetches import fetch_waiting
from pipeline.process import PipelineContext, process_pending
from store.db import make_engine, make_session_factory, upgrade_schema
from store.tables import Enquiry, EnquiryMessage, HookFetch, RawRecord
from tests.support.webhook_signing import tool_headers

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
SECRETS = {
    "typeform:website-demo": "tf-secret",
    "webflow:contact-us": "wf-secret",
    "hubspot:crm": "hs-client-secret",
    "intercom:messenger": "ic-client-secret",
    "chatwoot:support": "cw-secret",
}
PUBLIC_URL = "https://triage.example.com"
# The hook's clock: any day works, the signatures are made for it.
NOW = datetime.now(UTC).replace(microsecond=0)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def signed(
    tool: str, path: str, body: bytes, *, at: datetime = NOW, secret: str | None = None
) -> dict[str, str]:
    """The headers `tool` sends with `body`, signed as its documentation says."""
    key = secret or SECRETS[f"{tool}:{path.rsplit('/', 1)[-1]}"]
    return tool_headers(tool, url=PUBLIC_URL + path, body=body, secret=key, at=at)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    upgrade_schema(make_engine(db_url))
    return Settings(
        home=tmp_path,
        database_url=db_url,
        hooks=HooksSettings(secrets={k: SecretStr(v) for k, v in SECRETS.items()}, public_url=PUBLIC_URL),
        web={"secure_cookies": False},  # type: ignore[arg-type]
    )


@pytest.fixture
def factory(settings: Settings) -> sessionmaker[Session]:
    return make_session_factory(make_engine(settings.effective_database_url))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=lambda: NOW), base_url="http://testserver") as test_client:
        yield test_client


def deliver(client: TestClient, tool: str, source: str, body: bytes, **sign: object) -> httpx.Response:
    path = f"/hooks/{tool}/{source}"
    headers = {"content-type": "application/json", **signed(tool, path, body, **sign)}  # type: ignore[arg-type]
    return client.post(path, content=body, headers=headers)


def enquiries(factory: sessionmaker[Session]) -> list[Enquiry]:
    with factory() as session:
        return list(session.scalars(sa.select(Enquiry).order_by(Enquiry.received_at)))


def raw_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(RawRecord)) or 0)


FORM_CASES = [
    (
        "typeform",
        "website-demo",
        "typeform_form_response.json",
        (
            "priya.raman@northwind-logistics.example",
            "Priya Raman",
            "Northwind Logistics",
            "quote for 120 seats",
        ),
    ),
    (
        "webflow",
        "contact-us",
        "webflow_form_submission.json",
        (
            "tomas.ibarra@contoso-health.example",
            "Tomás Ibarra",
            "Contoso Health",
            "integrate with our Salesforce",
        ),
    ),
]


@pytest.mark.parametrize(("tool", "source", "name", "expected"), FORM_CASES)
def test_a_form_tools_submission_becomes_one_enquiry_and_a_redelivery_adds_nothing(
    client: TestClient,
    factory: sessionmaker[Session],
    context: PipelineContext,
    tool: str,
    source: str,
    name: str,
    expected: tuple[str, str, str, str],
) -> None:
    body = fixture(name)
    first, again = deliver(client, tool, source, body), deliver(client, tool, source, body)
    assert first.status_code == again.status_code == 200
    assert (first.json()["new"], again.json()["duplicates"]) == (1, 1)
    process_pending(factory, context)
    [enquiry] = enquiries(factory)
    email, person, company, text = expected
    assert (enquiry.sender_email, enquiry.sender_name, enquiry.attributes.get("company")) == (
        email,
        person,
        company,
    )
    assert text in enquiry.body
    assert enquiry.attributes["tool"] == tool
    assert raw_count(factory) == 1


def test_typeform_keeps_unmapped_answers_and_hidden_fields_as_attributes(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    deliver(client, "typeform", "website-demo", fixture("typeform_form_response.json"))
    process_pending(factory, context)
    [enquiry] = enquiries(factory)
    assert enquiry.attributes["seats"] == "120"
    assert enquiry.attributes["plan"] == "Business"
    assert enquiry.attributes["hidden.utm_campaign"] == "pricing-q4"


def test_a_source_mapping_in_hooks_yaml_picks_the_fields(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext, tmp_path: Path
) -> None:
    from config.hook_mappings import HookFieldMapping, HookMappings

    mapping = HookMappings(sources={"typeform:website-demo": HookFieldMapping(message=["plan"])})
    mapped = PipelineContext(
        **{**context.__dict__, "policy": context.policy.model_copy(update={"hook_mappings": mapping})}
    )
    deliver(client, "typeform", "website-demo", fixture("typeform_form_response.json"))
    process_pending(factory, mapped)
    [enquiry] = enquiries(factory)
    assert enquiry.body == "Business"
    assert enquiry.sender_email == "priya.raman@northwind-logistics.example"  # the defaults still apply


TOOLS = [
    ("typeform", "website-demo", "typeform_form_response.json", False),
    ("webflow", "contact-us", "webflow_form_submission.json", True),
    ("hubspot", "crm", "hubspot_contact_creation.json", True),
    ("intercom", "messenger", "intercom_conversation_user_created.json", False),
    ("chatwoot", "support", "chatwoot_message_created.json", True),
]


@pytest.mark.parametrize(("tool", "source", "name", "timestamped"), TOOLS)
def test_a_wrong_or_stale_signature_is_401_and_stores_nothing(
    client: TestClient, factory: sessionmaker[Session], tool: str, source: str, name: str, timestamped: bool
) -> None:
    body = fixture(name)
    wrong = deliver(client, tool, source, body, secret="not-the-secret")
    tampered_headers = signed(tool, f"/hooks/{tool}/{source}", body)
    tampered = client.post(
        f"/hooks/{tool}/{source}", content=body.replace(b"e", b"E", 1), headers=tampered_headers
    )
    unsigned = client.post(f"/hooks/{tool}/{source}", content=body)
    assert wrong.status_code == tampered.status_code == unsigned.status_code == 401
    if timestamped:
        stale = deliver(client, tool, source, body, at=NOW - timedelta(minutes=6))
        ahead = deliver(client, tool, source, body, at=NOW + timedelta(minutes=6))
        assert stale.status_code == ahead.status_code == 401
        assert "5 minutes" in stale.json()["detail"]
        assert deliver(client, tool, source, body, at=NOW - timedelta(minutes=4)).status_code == 200
    else:
        assert deliver(client, tool, source, body).status_code == 200
    with factory() as session:
        stored = session.scalar(sa.select(sa.func.count()).select_from(RawRecord)) or 0
        waiting = session.scalar(sa.select(sa.func.count()).select_from(HookFetch)) or 0
    assert stored + waiting == (2 if tool == "hubspot" else 1)  # only the good delivery is stored


def test_an_unknown_tool_or_source_is_404(client: TestClient) -> None:
    body = fixture("typeform_form_response.json")
    assert client.post("/hooks/jotform/x", content=body).status_code == 404
    assert deliver(client, "typeform", "unknown-form", body, secret="x").status_code == 404


def test_a_verified_payload_that_cannot_be_mapped_is_quarantined_naming_the_tool(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    deep = b'{"event_type": "form_response", "form_response": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    not_a_form = json.dumps({"triggerType": "site_publish", "payload": {"id": "p1"}}).encode()
    assert deliver(client, "typeform", "website-demo", deep).status_code == 200
    assert deliver(client, "webflow", "contact-us", not_a_form).status_code == 200
    summary = process_pending(factory, context)
    assert summary.outcomes["quarantined"] == 2
    with factory() as session:
        reasons = sorted(session.scalars(sa.select(RawRecord.status_reason)))
    assert reasons[0].startswith("typeform: JSON nested") and reasons[1].startswith("webflow: triggerType")


@pytest.mark.parametrize(
    ("tool", "source", "opening", "follow_up"),
    [
        (
            "intercom",
            "messenger",
            "intercom_conversation_user_created.json",
            "intercom_conversation_user_replied.json",
        ),
        ("chatwoot", "support", "chatwoot_message_created.json", "chatwoot_message_created_followup.json"),
    ],
)
def test_a_chat_tools_follow_up_threads_onto_its_conversations_enquiry(
    client: TestClient,
    factory: sessionmaker[Session],
    context: PipelineContext,
    tool: str,
    source: str,
    opening: str,
    follow_up: str,
) -> None:
    for name in (opening, follow_up, follow_up):
        assert deliver(client, tool, source, fixture(name)).status_code == 200
    process_pending(factory, context)
    [enquiry] = enquiries(factory)
    assert enquiry.channel == "chat" and enquiry.sender_email is not None
    with factory() as session:
        messages = list(
            session.scalars(sa.select(EnquiryMessage).where(EnquiryMessage.enquiry_id == enquiry.id))
        )
    assert len(messages) == 1
    assert ("INV-2026-1187" if tool == "intercom" else "charity") in messages[0].body
    assert raw_count(factory) == 2  # the third delivery was the second one again


def test_intercom_html_is_text_and_a_new_lead_is_an_enquiry(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    deliver(client, "intercom", "messenger", fixture("intercom_conversation_user_created.json"))
    deliver(client, "intercom", "messenger", fixture("intercom_contact_lead_created.json"))
    process_pending(factory, context)
    by_email = {e.sender_email: e for e in enquiries(factory)}
    assert "<b>" not in by_email["lena.fischer@adatum.example"].body
    assert "twice the usual amount" in by_email["lena.fischer@adatum.example"].body
    assert "interested_in: Pricing" in by_email["marco.rossi@litware.example"].body


def test_a_chatwoot_agent_message_is_recorded_as_skipped(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    deliver(client, "chatwoot", "support", fixture("chatwoot_message_created_agent.json"))
    summary = process_pending(factory, context)
    assert summary.outcomes["skipped"] == 1 and enquiries(factory) == []


def hubspot_api(
    contacts: dict[str, dict[str, object]], calls: list[dict[str, object]], fail: list[int]
) -> HubSpotClient:
    """A double of HubSpot's documented POST /crm/v3/objects/contacts/batch/read."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer hs-token"
        if fail:
            return httpx.Response(fail.pop(0), json={"status": "error", "message": "unavailable"})
        body = json.loads(request.content)
        calls.append(body)
        results = [contacts[item["id"]] for item in body["inputs"] if item["id"] in contacts]
        missing = [item["id"] for item in body["inputs"] if item["id"] not in contacts]
        payload: dict[str, object] = {"status": "COMPLETE", "results": results}
        if missing:
            payload["errors"] = [
                {"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": missing}}
            ]
        return httpx.Response(207 if missing else 200, json=payload)

    return HubSpotClient(
        access_token="hs-token", base_url="https://api.hubapi.test", transport=httpx.MockTransport(handle)
    )


def test_hubspot_events_wait_for_their_contact_which_becomes_the_enquiry(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    body = fixture("hubspot_contact_creation.json")
    assert deliver(client, "hubspot", "crm", body).json()["new"] == 2
    assert deliver(client, "hubspot", "crm", body).json()["duplicates"] == 2
    contact = json.loads(fixture("hubspot_contacts_batch_read.json"))["results"][0]
    calls: list[dict[str, object]] = []
    # HubSpot down for two passes: the event waits, with the error, and nothing is lost.
    down = hubspot_api({"1246978": contact}, calls, fail=[503])
    first = fetch_waiting(factory, down, clock=lambda: NOW)
    assert first.error is not None and "503" in first.error
    later = fetch_waiting(factory, down, clock=lambda: NOW + timedelta(minutes=5))
    assert (later.fetched, later.error) == (1, None)
    assert len(calls) == 1  # one batched call for the waiting events
    process_pending(factory, context)
    [enquiry] = enquiries(factory)
    assert (enquiry.sender_email, enquiry.sender_name, enquiry.attributes.get("company")) == (
        "dana.kowalski@fabrikam.example",
        "Dana Kowalski",
        "Fabrikam",
    )
    assert "Enterprise plan" in enquiry.body
    with factory() as session:
        statuses = sorted(session.scalars(sa.select(RawRecord.status)))
    assert statuses == ["enquiry", "skipped"]  # the propertyChange event is recorded, not an enquiry
    assert fetch_waiting(factory, down, clock=lambda: NOW + timedelta(hours=1)).fetched == 0


def test_no_lock_is_held_while_hubspot_answers_and_a_second_pass_skips_the_leased_events(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    deliver(client, "hubspot", "crm", fixture("hubspot_contact_creation.json"))
    contact = json.loads(fixture("hubspot_contacts_batch_read.json"))["results"][0]
    api = hubspot_api({"1246978": contact}, [], fail=[])
    during: dict[str, object] = {}

    class SlowHubSpot:
        """HubSpot answering while the rest of the product goes on."""

        def read_contacts(self, ids: list[str]) -> dict[str, dict[str, object]]:
            # A web hook stores its delivery meanwhile: on SQLite it would wait for a held write lock
            # (30 s, then "database is locked") if the claim's transaction were still open.
            during["hook"] = deliver(
                client, "typeform", "website-demo", fixture("typeform_form_response.json")
            )
            during["second_pass"] = fetch_waiting(factory, api, clock=lambda: NOW)
            return api.read_contacts(ids)

    result = fetch_waiting(factory, SlowHubSpot(), clock=lambda: NOW)
    hook = during["hook"]
    assert isinstance(hook, httpx.Response) and hook.status_code == 200, hook
    second = during["second_pass"]
    assert (second.fetched, second.missing, second.error) == (0, 0, None)  # type: ignore[attr-defined]
    assert (result.fetched, result.error) == (1, None)
    with factory() as session:
        assert {row.status for row in session.scalars(sa.select(HookFetch))} == {"fetched"}
        keys = list(session.scalars(sa.select(RawRecord.external_key)))
    assert len(keys) == len(set(keys))


def test_a_contact_hubspot_does_not_know_is_quarantined_not_dropped(
    client: TestClient, factory: sessionmaker[Session], context: PipelineContext
) -> None:
    deliver(client, "hubspot", "crm", fixture("hubspot_contact_creation.json"))
    result = fetch_waiting(factory, hubspot_api({}, [], fail=[]), clock=lambda: NOW)
    assert result.missing == 1
    process_pending(factory, context)
    with factory() as session:
        reasons = list(
            session.scalars(sa.select(RawRecord.status_reason).where(RawRecord.status == "quarantined"))
        )
    assert len(reasons) == 1 and "1246978" in reasons[0]
