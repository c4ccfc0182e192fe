"""The CRM field mapping: what a canonical lead becomes, and errors that name file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.crm.mapping import LeadMapping, default_mapping_path, load_mapping
from models.errors import ConfigError

from .builders import DEFAULT_MAPPING


def test_default_mapping_turns_a_canonical_lead_into_a_salesforce_lead(mapping: LeadMapping) -> None:
    canonical = {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": None,
        "company": "Acme",
        "employees": "120",
        "arr_estimate": 50000,
        "channel": "form",
        "source": "form:pricing",
        "description": "x" * 40_000,
        "intent": "pricing",
        "lead_source": "google",
    }
    record = mapping.lead_record(canonical, external_id_field="Enquiry_Id__c", external_id="e1")
    assert record["Enquiry_Id__c"] == "e1"
    assert record["Email"] == "ada@example.com"
    assert record["LastName"] == "(unknown)"  # Salesforce requires it: the default fills in
    assert record["NumberOfEmployees"] == 120 and record["AnnualRevenue"] == 50000.0
    assert record["LeadSource"] == "Web"  # by channel; utm_source is ignored unless from_enquiry
    assert record["Status"] == "Open - Not Contacted"
    assert len(record["Description"]) == 32_000
    assert "Triage_Campaign__c" not in record  # campaign field off by default


def test_unreadable_number_is_left_out_rather_than_failing_the_lead(mapping: LeadMapping) -> None:
    record = mapping.lead_record({"employees": "50-200"}, external_id_field="X__c", external_id="e1")
    assert "NumberOfEmployees" not in record


def test_campaign_tags_and_lead_source_from_the_enquiry(tmp_path: Path) -> None:
    text = DEFAULT_MAPPING.read_text().replace("from_enquiry: false", "from_enquiry: true")
    text = text.replace(
        "    field: null\n    by_source: {}",
        '    field: Triage_Campaign__c\n    by_source: {"form:": Spring-Web}',
    )
    path = tmp_path / "crm_mapping.yaml"
    path.write_text(text)
    mapping = load_mapping(path)
    record = mapping.lead_record(
        {"channel": "form", "source": "form:pricing", "lead_source": "Partner"},
        external_id_field="X__c",
        external_id="1",
    )
    assert record["LeadSource"] == "Partner"
    assert record["Triage_Campaign__c"] == "Spring-Web"
    own = mapping.lead_record(
        {"source": "form:x", "campaign": "Q4"}, external_id_field="X__c", external_id="1"
    )
    assert own["Triage_Campaign__c"] == "Q4"
    assert default_mapping_path(tmp_path) == path


def test_task_record_maps_priority_and_due_date(mapping: LeadMapping) -> None:
    record = mapping.task_record(
        {"subject": "Review", "priority": "P1", "due_at": "2026-11-25T09:00:00+00:00"},
        idempotency_key="task:1",
        who_id="00Q1",
    )
    assert record == {
        "Subject": "Review",
        "Priority": "High",
        "ActivityDate": "2026-11-25",
        "Status": "Not Started",
        "WhoId": "00Q1",
        "Triage_Key__c": "task:1",
    }


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    email: Email\n",
            "    e_mail: Email\n",
            r"crm_mapping\.yaml:\d+: lead\.fields: .*unknown canonical lead field.*e_mail",
        ),
        (
            "    NumberOfEmployees: integer\n",
            "    NumberOfEmployees: whole\n",
            r"crm_mapping\.yaml:\d+: lead\.formats\.NumberOfEmployees",
        ),
        ("    Subject: 255\n", "    Subject: lots\n", r"crm_mapping\.yaml:\d+: task\.max_lengths\.Subject"),
        (
            "  idempotency_field: Triage_Key__c\n",
            "  idempotency_field: 'Triage Key'\n",
            r"task\.idempotency_field: .*API name",
        ),
        ("version: 1\n", "version: 1\ncolour: blue\n", r"crm_mapping\.yaml:6: colour: Extra inputs"),
    ],
)
def test_mapping_errors_name_file_field_and_line(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = DEFAULT_MAPPING.read_text()
    assert old in text
    path = tmp_path / "crm_mapping.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=expected):
        load_mapping(path)


def test_line_numbers_point_at_the_offending_key(tmp_path: Path) -> None:
    text = DEFAULT_MAPPING.read_text().replace("    email: Email\n", "    email: 'E mail'\n")
    path = tmp_path / "crm_mapping.yaml"
    path.write_text(text)
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "E mail" in content)
    with pytest.raises(ConfigError) as raised:
        load_mapping(path)
    # The error names the `fields` block (the validator's unit), on its own line number.
    fields_line = next(
        number for number, content in enumerate(text.splitlines(), 1) if content == "  fields:"
    )
    assert f"{path}:{fields_line}: lead.fields" in str(raised.value)
    assert fields_line < line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("lead: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        ("version: 1\n", "lead: Field required"),
    ],
)
def test_unusable_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "crm_mapping.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_mapping(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_mapping(tmp_path / "absent.yaml")
