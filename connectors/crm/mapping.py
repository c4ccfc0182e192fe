"""The CRM field mapping: canonical lead and task fields → Salesforce fields, from YAML.

The file (default `config/defaults/crm_mapping.yaml`, or `crm_mapping.yaml` under TRIAGE_POLICY_DIR) is
validated once at load; any problem raises `ConfigError` naming the file, the field and its line.
Turning a canonical payload into a Salesforce record is a pure function here, so it is tested without
a network.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from config.yaml_files import load_yaml_model
from connectors.crm.base import LEAD_FIELDS, TASK_FIELDS

MAPPING_FILE_NAME = "crm_mapping.yaml"
ValueFormat = Literal["text", "date", "datetime", "integer", "number"]


def _check_api_name(name: str) -> str:
    # Salesforce API names: letters, digits, underscores; custom ones end in __c.
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"{name!r} is not a Salesforce field API name")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeadSourceRule(_Strict):
    """Where LeadSource comes from: its channel's value, else the default.

    With `from_enquiry: true` the enquiry's own value (its utm_source) wins; leave it off when LeadSource
    is a restricted picklist, which rejects values it does not list.
    """

    field: str = "LeadSource"
    from_enquiry: bool = False
    by_channel: dict[str, str] = Field(default_factory=dict)
    default: str | None = None


class CampaignRule(_Strict):
    """Campaign tag for attribution: the enquiry's own, else the first matching source prefix."""

    field: str | None = None
    by_source: dict[str, str] = Field(default_factory=dict)
    default: str | None = None


class ObjectMapping(_Strict):
    """Canonical field → Salesforce field, plus defaults, constants, lengths and value formats."""

    fields: dict[str, str]
    defaults: dict[str, Any] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)
    max_lengths: dict[str, int] = Field(default_factory=dict)
    formats: dict[str, ValueFormat] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _targets_are_api_names(cls, value: dict[str, str]) -> dict[str, str]:
        for target in value.values():
            _check_api_name(target)
        return value

    def convert(self, canonical: dict[str, Any]) -> dict[str, Any]:
        """Map, default, format and cut one canonical payload; None values are not sent."""
        record: dict[str, Any] = {}
        for name, target in self.fields.items():
            value = canonical.get(name)
            if value is not None and value != "":
                record[target] = value
        for target, value in self.defaults.items():
            record.setdefault(target, value)
        record.update(self.constants)
        formatted = {target: self._format(target, value) for target, value in record.items()}
        return {target: value for target, value in formatted.items() if value is not None}

    def _format(self, target: str, value: Any) -> Any:
        """The value as Salesforce wants it; None (not sent) when it cannot be read as the format."""
        kind = self.formats.get(target, "text")
        try:
            return self._format_as(kind, target, value)
        except (TypeError, ValueError, OverflowError):
            # "50-200 employees" in a number field: leave the field unset rather than fail the lead.
            return None

    def _format_as(self, kind: ValueFormat, target: str, value: Any) -> Any:
        if kind == "date":
            if isinstance(value, datetime):
                return value.date().isoformat()
            if isinstance(value, date):
                return value.isoformat()
            return str(value)[:10]
        if kind == "datetime":
            return value.isoformat() if isinstance(value, datetime) else str(value)
        if kind == "integer":
            return int(float(value))
        if kind == "number":
            return float(value)
        if isinstance(value, bool | int | float):
            return value
        text = str(value)
        limit = self.max_lengths.get(target)
        return text[:limit] if limit else text


class LeadObjectMapping(ObjectMapping):
    """The Lead: fields plus attribution rules."""

    lead_source: LeadSourceRule = Field(default_factory=LeadSourceRule)
    campaign: CampaignRule = Field(default_factory=CampaignRule)

    @field_validator("fields")
    @classmethod
    def _sources_are_canonical(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LEAD_FIELDS))
        if unknown:
            raise ValueError(f"unknown canonical lead field(s) {unknown}; known: {', '.join(LEAD_FIELDS)}")
        return value


class TaskObjectMapping(ObjectMapping):
    """The SDR's Task, upserted by an External ID field that holds the write's idempotency key."""

    idempotency_field: str = "Triage_Key__c"
    priority_values: dict[str, str] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _sources_are_canonical(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(TASK_FIELDS))
        if unknown:
            raise ValueError(f"unknown canonical task field(s) {unknown}; known: {', '.join(TASK_FIELDS)}")
        return value

    @field_validator("idempotency_field")
    @classmethod
    def _is_api_name(cls, value: str) -> str:
        return _check_api_name(value)


class LeadMapping(_Strict):
    """The whole mapping file."""

    version: int = 1
    lead: LeadObjectMapping
    task: TaskObjectMapping
    _source_path: str = PrivateAttr(default="<memory>")

    @property
    def source_path(self) -> str:
        """The file this mapping came from (for messages)."""
        return self._source_path

    def lead_record(
        self, canonical: dict[str, Any], *, external_id_field: str, external_id: str
    ) -> dict[str, Any]:
        """The Salesforce Lead for one canonical payload, keyed by its external id."""
        record = self.lead.convert(canonical)
        source_rule = self.lead.lead_source
        own = canonical.get("lead_source") if source_rule.from_enquiry else None
        lead_source = own or source_rule.by_channel.get(
            str(canonical.get("channel") or ""), source_rule.default or ""
        )
        if lead_source:
            record[source_rule.field] = lead_source
        campaign_rule = self.lead.campaign
        if campaign_rule.field:
            tag = canonical.get("campaign") or self._campaign_for(str(canonical.get("source") or ""))
            if tag:
                record[campaign_rule.field] = tag
        record[external_id_field] = external_id
        return record

    def _campaign_for(self, source: str) -> str | None:
        for prefix, tag in self.lead.campaign.by_source.items():
            if source.startswith(prefix):
                return tag
        return self.lead.campaign.default

    def task_record(self, canonical: dict[str, Any], *, idempotency_key: str, who_id: str) -> dict[str, Any]:
        """The Salesforce Task for one canonical task payload, on the lead with Id `who_id`."""
        values = dict(canonical)
        priority = values.get("priority")
        if priority is not None:
            values["priority"] = self.task.priority_values.get(str(priority), priority)
        record = self.task.convert(values)
        record["WhoId"] = who_id
        record[self.task.idempotency_field] = idempotency_key
        return record

    def lead_targets(self) -> set[str]:
        """Every Lead field this mapping writes (for `crm check`)."""
        targets = set(self.lead.fields.values()) | set(self.lead.defaults) | set(self.lead.constants)
        targets.add(self.lead.lead_source.field)
        if self.lead.campaign.field:
            targets.add(self.lead.campaign.field)
        return targets

    def task_targets(self) -> set[str]:
        """Every Task field this mapping writes (for `crm check`)."""
        targets = set(self.task.fields.values()) | set(self.task.defaults) | set(self.task.constants)
        return targets | {"WhoId", self.task.idempotency_field}


def default_mapping_path(policy_dir: Path) -> Path:
    """The mapping under the policy directory, else the shipped default."""
    candidate = policy_dir / MAPPING_FILE_NAME
    if candidate.exists():
        return candidate
    return Path(__file__).resolve().parents[2] / "config" / "defaults" / MAPPING_FILE_NAME


def load_mapping(path: Path) -> LeadMapping:
    """Read and validate a mapping file; every problem is a ConfigError naming file, field and line."""
    mapping = load_yaml_model(path, LeadMapping, what="CRM mapping")
    mapping._source_path = str(path)
    return mapping
