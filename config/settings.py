"""One settings object, read from the environment (prefix TRIAGE_, nested with __).

Examples: TRIAGE_HOME=/srv/triage, TRIAGE_DATABASE_URL=postgresql://..., TRIAGE_CRM__BACKEND=salesforce,
TRIAGE_SALESFORCE__USERNAME=..., TRIAGE_IMAP__HOST=imap.example.com,
TRIAGE_OUTBOUND__SMTP__HOST=smtp.example.com, TRIAGE_OUTBOUND__FROM_ADDRESS=sales@example.com.
Secrets are `SecretStr`: they print
as '**********' and never reach logs.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.imap_settings import ImapMailbox
from connectors.notify import NotifySettings
from connectors.smtp_outbound import OutboundSettings
from sla.policies import SlaSettings

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent / "defaults"
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "dev", "development"}
# Production secret keys of our own: at least this long, and this many bits by a frequency estimate.
MIN_SECRET_CHARS = 32
MIN_SECRET_BITS = 128.0
MIN_SECRET_DISTINCT = 12
MIN_HOOK_SECRET_CHARS = 16


def secret_strength_problem(value: str) -> str | None:
    """Why `value` is too weak to sign sessions or key hashes in production, or None if it is fine.

    Length and an entropy estimate (the characters' frequencies times the length), not a list of
    words: `Changeme1` is too short, `abab...` or one repeated word carries too few bits.
    """
    if len(value) < MIN_SECRET_CHARS:
        return f"is {len(value)} characters long; use at least {MIN_SECRET_CHARS} random characters"
    counts = Counter(value)
    per_char = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    if per_char * len(value) < MIN_SECRET_BITS or len(counts) < MIN_SECRET_DISTINCT:
        return (
            "looks too regular to be random; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    return None


class AccountSettings(BaseModel):
    """Lead-to-account matching (connectors/crm/accounts.py): which CRM fields hold what, the cache."""

    enabled: bool = Field(default=True, description="Look senders up in the CRM's accounts and contacts.")
    domain_field: str = Field(
        default="Domain__c",
        description="Account field with the normalised domain: indexed (an External ID), not Website.",
    )
    arr_field: str = Field(default="AnnualRevenue", description="Account field with the real ARR.")
    owner_field: str = Field(default="OwnerId", description="Account field with the owner's CRM user id.")
    status_field: str = Field(default="Type", description="Account field that says whether it is a customer.")
    customer_statuses: list[str] = Field(
        default_factory=lambda: ["customer", "Customer - Direct", "Customer - Channel"],
        description="Values of the status field (any case) that mark an existing customer.",
    )
    tiebreakers: list[Literal["most_contacts", "oldest"]] = Field(
        default_factory=lambda: ["most_contacts", "oldest"],
        description="How one account is chosen when several share the sender's domain.",
    )
    cache_seconds: float = Field(default=900.0, ge=0, description="How long a lookup (or a miss) is kept.")


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
    max_attempts: int = Field(
        default=8,
        ge=1,
        description="Attempts before a write meeting a record-level transient error is marked failed; "
        "writes meeting an unavailable CRM (503, 429, timeouts) retry without limit.",
    )
    outage_alert_minutes: float = Field(
        default=60.0, gt=0, description="Notify the ops lead once the CRM has been unavailable this long."
    )
    backoff_seconds: float = Field(default=30.0, gt=0, description="First retry delay; doubles per attempt.")
    accounts: AccountSettings = Field(default_factory=AccountSettings)


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
    # First touches seen in Salesforce (issue 17: `triage crm poll-touches`, the crm-touches flow).
    open_statuses: list[str] = Field(
        default_factory=lambda: ["Open - Not Contacted"],
        description="Lead Status values that mean nobody has reached the customer yet; a lead of ours "
        "whose Status is none of them was touched at its LastModifiedDate.",
    )
    team_owner_ids: list[str] = Field(
        default_factory=list,
        description="Salesforce user or queue Ids whose leads are the team's (besides the users' "
        "CRM user ids, `triage users set --crm-user-id`); empty with no such users: every lead of ours.",
    )
    completed_task_status: str = Field(
        default="Completed", description="The Task Status of a finished call or e-mail: a first touch."
    )
    touch_poll_lag_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A poll reads changes up to this long ago, so a Salesforce transaction still "
        "committing with an earlier LastModifiedDate is not skipped.",
    )
    touch_query_limit: int = Field(
        default=2_000, ge=1, le=50_000, description="Records per touch query (LIMIT; paged at 2,000)."
    )


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
    session_idle_minutes: float = Field(
        default=30.0, gt=0, description="A session unused this long ends (logged out server-side)."
    )
    session_max_hours: float = Field(
        default=12.0, gt=0, description="A session ends this long after login, however busy."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        description="Largest request body any route reads (web hooks: hooks.max_body_bytes if larger).",
    )
    login_max_body_bytes: int = Field(
        default=8 * 1024, ge=1024, description="Largest request body /login reads (anonymous)."
    )
    max_concurrent_hashes: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Password hashes (argon2id, 64 MiB each) computed at once per process; more wait.",
    )
    login_free_failures: int = Field(
        default=3, ge=1, description="Wrong passwords for one account before each try must wait."
    )
    address_free_failures: int = Field(
        default=20, ge=1, description="Failed logins from one client address before each try must wait."
    )
    login_max_delay_seconds: float = Field(
        default=900.0, gt=0, description="The longest wait the login throttle imposes (never a lockout)."
    )


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
    crm_touch_minutes: float = Field(
        default=5.0, gt=0, description="Minutes between Salesforce first-touch polls (Salesforce CRM only)."
    )

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

    # Errors name the field, never its value: a value may be a password (a bad TRIAGE_MAILBOXES).
    model_config = SettingsConfigDict(
        env_prefix="TRIAGE_", env_nested_delimiter="__", extra="ignore", hide_input_in_errors=True
    )

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
    prepare_budget_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Wall-clock seconds one record's parse may take; over it, it is quarantined.",
    )
    max_record_attempts: int = Field(
        default=3, ge=1, description="Failed batches one record may cause before it is quarantined."
    )
    imap: ImapMailbox | None = None
    mailboxes: list[ImapMailbox] = Field(default_factory=list)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    salesforce: SalesforceSettings = Field(default_factory=SalesforceSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    hubspot: HubSpotSettings = Field(default_factory=HubSpotSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    sla: SlaSettings = Field(default_factory=SlaSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    pseudonymisation_key: SecretStr | None = None

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        """Production needs real secrets: our own keys long and random enough (`secret_strength_problem`),
        hook secrets (issued by the tools) at least set, not a placeholder and 16 characters or more."""
        if self.environment != "production":
            return self
        own = [("web.secret_key", self.web.secret_key), ("pseudonymisation_key", self.pseudonymisation_key)]
        for name, value in own:
            variable = f"TRIAGE_{name.upper().replace('.', '__')}"
            if value is None:
                raise ValueError(f"{variable} must be set to a real secret in production")
            problem = secret_strength_problem(value.get_secret_value())
            if problem:
                raise ValueError(f"{variable} {problem}")
        for source, value in self.hooks.secrets.items():
            text = value.get_secret_value().strip()
            if text.lower() in PLACEHOLDER_SECRETS or len(text) < MIN_HOOK_SECRET_CHARS:
                raise ValueError(
                    f"TRIAGE_HOOKS__SECRETS__{source.upper()} must be the tool's real signing secret "
                    f"({MIN_HOOK_SECRET_CHARS}+ characters) in production"
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

    def ensure_home(self) -> Path:
        """Create TRIAGE_HOME readable by its owner only (0700), tightening an existing wider one: it
        holds the SQLite database (password hashes, personal data), keys and models."""
        make_private_dir(self.home)
        return self.home

    @cached_property
    def models_dir(self) -> Path:
        return self.home / "models"

    @cached_property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @cached_property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) readable by its owner only (0700); tighten it if it exists wider."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def describe_settings_error(error: Exception) -> str:
    """One line per problem naming the setting (as its TRIAGE_ variable) and what is wrong with it,
    never the value given: a pydantic `ValidationError` or a pydantic-settings `SettingsError`."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        # pydantic-settings' parse errors name the field and the source, not the value.
        return str(error).split("\n", 1)[0]
    lines = []
    for problem in error.errors(include_input=False, include_url=False, include_context=False):
        lines.append(f"{_setting_name(problem['loc'])}: {problem['msg']}")
    return "; ".join(lines)


def _setting_name(location: tuple[int | str, ...]) -> str:
    """('imap', 'port') → TRIAGE_IMAP__PORT; ('mailboxes', 0, 'port') → TRIAGE_MAILBOXES[0].port."""
    if not location:
        return "settings"
    name = "TRIAGE_" + str(location[0]).upper()
    in_json = False
    for part in location[1:]:
        if isinstance(part, int):
            name += f"[{part}]"
            in_json = True
        elif in_json:
            name += f".{part}"
        else:
            name += f"__{part.upper()}"
    return name


def load_settings() -> Settings:
    """`Settings()` from the environment, or a `ConfigError` naming each bad field (no values)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from models.errors import ConfigError

    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        raise ConfigError(f"bad settings: {describe_settings_error(error)}") from None
