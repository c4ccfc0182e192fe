"""Reply templates: one YAML file per template under `<policy_dir>/reply_templates/` (issue 17).

Each file has a `name`, the `intents` it suits, a `subject` and a `body`, both Jinja2 rendered in a
sandbox (`jinja2.sandbox.SandboxedEnvironment`) with `StrictUndefined` over these fields only:

| field | value |
| --- | --- |
| `first_name` | the sender's first name, or "there" when unknown |
| `company` | the sender's company from enrichment, or "" |
| `intent` | the enquiry's intent (after any correction) |
| `owner` | the person sending (the review item's holder) |
| `sla_promise` | the first-response target in words, e.g. "2 business hours" |

A template that uses any other field fails at load (each is rendered once with sample values), so an
undefined field is an error for whoever edits the file, never an empty string in a customer's inbox.
Rendering is plain text: the reply is a text/plain e-mail, and the SDR edits it before sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from config.yaml_files import load_yaml_model
from models.errors import ConfigError
from store import review_repo
from store.tables import SlaTimer

FIELDS = ("first_name", "company", "intent", "owner", "sla_promise")
SAMPLE = {
    "first_name": "Ada",
    "company": "Example Ltd",
    "intent": "pricing",
    "owner": "sam",
    "sla_promise": "2 business hours",
}
_environment = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


class TemplateError(ConfigError):
    """A template that does not exist, does not suit the item, or cannot be rendered."""


class TemplateSpec(BaseModel):
    """One template file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]{1,80}$")
    intents: list[str] = Field(min_length=1, description="Intents this template suits; '*' for any.")
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=20_000)

    def suits(self, intent: str) -> bool:
        return "*" in self.intents or intent in self.intents


@dataclass(frozen=True, slots=True)
class Rendered:
    """A template filled in for one enquiry."""

    name: str
    subject: str
    body: str


def render(spec: TemplateSpec, values: dict[str, str]) -> Rendered:
    """Fill a template; an unknown field raises TemplateError."""
    try:
        subject = _environment.from_string(spec.subject).render(values)
        body = _environment.from_string(spec.body).render(values)
    except jinja2.TemplateError as error:
        raise TemplateError(f"reply template {spec.name!r}: {error}") from error
    return Rendered(spec.name, " ".join(subject.split()), body.strip() + "\n")


def load_templates(policy_dir: Path) -> dict[str, TemplateSpec]:
    """Every template under `policy_dir/reply_templates`, each checked by rendering sample values."""
    folder = policy_dir / "reply_templates"
    templates: dict[str, TemplateSpec] = {}
    if not folder.is_dir():
        return templates
    for path in sorted(folder.glob("*.yaml")):
        spec = load_yaml_model(path, TemplateSpec, what="reply template")
        if spec.name in templates:
            raise ConfigError(f"{path}: name: template {spec.name!r} is defined twice")
        try:
            render(spec, SAMPLE)
        except TemplateError as error:
            raise ConfigError(f"{path}: {error} (fields: {', '.join(FIELDS)})") from error
        templates[spec.name] = spec
    return templates


def suiting(templates: dict[str, TemplateSpec], intent: str) -> list[TemplateSpec]:
    """The templates that suit an intent, by name."""
    return [spec for name, spec in sorted(templates.items()) if spec.suits(intent)]


def sla_promise(minutes: int | None) -> str:
    """A first-response target in words."""
    if not minutes:
        return "one business day"
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} business hour{'s' if hours != 1 else ''}"
    return f"{minutes} business minutes"


def fields_for_item(session: Session, item_id: int, *, owner: str) -> tuple[str, dict[str, str]]:
    """(intent, field values) of a review item's enquiry."""
    item = review_repo.get_item(session, item_id)
    enquiry = review_repo.get_enquiry(session, item.enquiry_id) if item is not None else None
    if item is None or enquiry is None:
        raise TemplateError(f"no review item {item_id}")
    name = (enquiry.sender_name or "").strip()
    first = name.split()[0] if name else ""
    timer = session.query(SlaTimer).filter_by(enquiry_id=enquiry.id, kind="first_response").one_or_none()
    values = {
        "first_name": first or "there",
        "company": str((enquiry.enrichment or {}).get("company") or ""),
        "intent": enquiry.intent,
        "owner": owner,
        "sla_promise": sla_promise(timer.target_minutes if timer is not None else None),
    }
    return enquiry.intent, values


def render_for_item(
    session: Session, item_id: int, templates: dict[str, TemplateSpec], name: str, *, owner: str
) -> Rendered:
    """A named template filled in for a review item; it must exist and suit the item's intent."""
    spec = templates.get(name)
    if spec is None:
        known = ", ".join(sorted(templates)) or "none"
        raise TemplateError(f"no reply template named {name!r} (known: {known})")
    intent, values = fields_for_item(session, item_id, owner=owner)
    if not spec.suits(intent):
        raise TemplateError(f"template {name!r} does not suit intent {intent!r} (it suits {spec.intents})")
    return render(spec, values)
