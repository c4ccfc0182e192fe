"""One settings object, read from the environment (prefix TRIAGE_, nested with __).

Examples: TRIAGE_HOME=/srv/triage, TRIAGE_DATABASE_URL=postgresql://..., TRIAGE_CRM__BACKEND=salesforce,
TRIAGE_SALESFORCE__USERNAME=..., TRIAGE_IMAP__HOST=imap.example.com. Secrets are `SecretStr`: they print
as '**********' and never reach logs.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.imap_settings import ImapMailbox
from connectors.notify import NotifySettings
from sla.policies import SlaSettings

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "defaults"
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "dev", "development"}


class CrmSettings(BaseModel):
    """Which CRM receives leads, and how the outbox drains."""

    backend: Literal["local", "salesforce"] = "local"
    batch_size: int = Field(
        default=1_000,
        ge=1,
        le=10_000,
        description="Outbox writes claimed per drain transaction (Salesforce requests hold 200 each).",
    )
    bulk_threshold: int = Field(
        default=2_000, ge=1, description="Batches this large or larger go through Bulk API 2.0."
    )
    max_attempts: int = Field(default=8, ge=1, description="Attempts before a write is marked failed.")
    backoff_seconds: float = Field(default=30.0, gt=0, description="First retry delay; doubles per attempt.")


class SalesforceSettings(BaseModel):
    """simple-salesforce connection: username/password/token, or a session id with the instance URL."""

    instance_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    domain: str = "login"
    session_id: SecretStr | None = None
    ca_bundle: Path | None = None
    api_version: str = "62.0"
    external_id_field: str = "Enquiry_Id__c"
    timeout_seconds: float = 30.0


class HooksSettings(BaseModel):
    """Web hook intake: one HMAC secret per form or chat source, and a size cap."""

    secrets: dict[str, SecretStr] = Field(
        default_factory=dict, description="Source name (form id or chat source) → HMAC-SHA256 secret."
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    public_url: str | None = Field(
        default=None,
        description="The URL the tools call this app by (https://triage.example.com), when a proxy "
        "stands in front: HubSpot signs the full URL it called.",
    )


class HubSpotSettings(BaseModel):
    """HubSpot's API, read for the contacts its web hooks name by id (TRIAGE_HUBSPOT__ACCESS_TOKEN)."""

    access_token: SecretStr | None = Field(default=None, description="A private app's access token.")
    base_url: str = "https://api.hubapi.com"
    timeout_seconds: float = Field(default=10.0, gt=0)


class WebSettings(BaseModel):
    """The review app."""

    secret_key: SecretStr | None = None
    secure_cookies: bool = True
    host: str = "127.0.0.1"
    port: int = 8000


class ScheduleSettings(BaseModel):
    """When each flow runs. Environment: TRIAGE_SCHEDULE__INTAKE_MINUTES=5, TRIAGE_SCHEDULE__TIMEZONE=..."""

    intake_minutes: float = Field(default=1.0, gt=0, description="Minutes between intake runs (each source).")
    sla_watch_seconds: int = Field(default=60, ge=10, description="Seconds between SLA watch passes.")
    retrain_cron: str = Field(
        default="0 2 * * *", description="Cron for the nightly retrain (candidate only)."
    )
    report_cron: str = Field(default="0 7 * * 1", description="Cron for the weekly SLA breach report.")
    retention_cron: str = Field(
        default="30 3 * * *", description="Cron for the nightly retention prune (retention.yaml)."
    )
    timezone: str = Field(default="UTC", description="IANA time zone the cron schedules are read in.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from error
        return value

    @field_validator("retrain_cron", "report_cron", "retention_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"cron {value!r} needs five fields: minute hour day-of-month month day-of-week")
        return value


class Settings(BaseSettings):
    """Everything configurable from the environment. Policy lives in YAML files under `policy_dir`."""

    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default=Path(".triage"), description="Holds the SQLite database, models and reports.")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; SQLite under home if unset.")
    environment: Literal["development", "production"] = "development"
    policy_dir: Path = DEFAULT_POLICY_DIR
    batch_size: int = Field(default=500, ge=1, le=50_000, description="Enquiries processed per transaction.")
    max_body_chars: int = Field(default=50_000, ge=1_000)
    parse_workers: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 4),
        ge=1,
        le=32,
        description="Worker processes that parse, enrich and classify ahead on large runs (1: none).",
    )
    imap: ImapMailbox | None = None
    mailboxes: list[ImapMailbox] = Field(default_factory=list)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    salesforce: SalesforceSettings = Field(default_factory=SalesforceSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    hubspot: HubSpotSettings = Field(default_factory=HubSpotSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    pseudonymisation_key: SecretStr | None = None

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        secrets = [
            ("web.secret_key", self.web.secret_key),
            ("pseudonymisation_key", self.pseudonymisation_key),
        ]
        secrets += [(f"hooks.secrets.{name}", value) for name, value in self.hooks.secrets.items()]
        for name, value in secrets:
            if value is None or value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"TRIAGE_{name.upper().replace('.', '__')} must be set to a real secret in production"
                )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_database_url(self) -> str:
        """The database actually used: TRIAGE_DATABASE_URL, or SQLite under TRIAGE_HOME."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'triage.db').resolve()}"

    @property
    def all_mailboxes(self) -> list[ImapMailbox]:
        """The single TRIAGE_IMAP__* mailbox, if set, followed by TRIAGE_MAILBOXES."""
        return ([self.imap] if self.imap else []) + list(self.mailboxes)

    @cached_property
    def models_dir(self) -> Path:
        return self.home / "models"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"
