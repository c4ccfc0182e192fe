"""Which field of a form or chat tool's payload is the e-mail, the name, the company, the message.

`hooks.yaml` in the policy directory holds one mapping per hook source, keyed "{tool}:{source}" as the
secrets are. A source without an entry, or a role an entry leaves out, uses the defaults below: fields
are recognised by their ref, key or label, case-insensitively. Whatever no role claims is kept as an
attribute of the enquiry, as form posts always were.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.yaml_files import load_yaml_model

HOOK_MAPPINGS_FILE = "hooks.yaml"
_SEPARATORS = re.compile(r"[\s_-]+")
_SOURCE_KEY = re.compile(r"^[a-z]+:[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# A field as a tool sends it: the names it goes by (ref or key first, then its label) and its value.
PayloadField = tuple[tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class MappedFields:
    """The fields a form or a chat names, once a source's mapping picked them; the rest in `extra`."""

    email: str | None
    name: str | None
    company: str | None
    phone: str | None
    message: str | None
    subject: str | None
    extra: dict[str, str]


def _comparable(name: str) -> str:
    """Case, spaces, '_' and '-' do not matter: 'Full_Name', 'full name' and 'full-name' are one name."""
    return _SEPARATORS.sub(" ", name.strip().lower())


def _names(*names: str) -> list[str]:
    return list(names)


class HookFieldMapping(BaseModel):
    """Names (ref, key or label; any case) that each role is recognised by, first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: list[str] = Field(
        default_factory=lambda: _names("email", "e-mail", "work email", "work e-mail", "email address")
    )
    name: list[str] = Field(default_factory=lambda: _names("name", "full name", "your name"))
    first_name: list[str] = Field(
        default_factory=lambda: _names("first name", "firstname", "first_name", "given name")
    )
    last_name: list[str] = Field(
        default_factory=lambda: _names("last name", "lastname", "last_name", "family name", "surname")
    )
    company: list[str] = Field(
        default_factory=lambda: _names("company", "company name", "organisation", "organization")
    )
    phone: list[str] = Field(default_factory=lambda: _names("phone", "phone number", "telephone", "mobile"))
    message: list[str] = Field(
        default_factory=lambda: _names(
            "message", "how can we help?", "how can we help", "your message", "comments", "question"
        )
    )
    subject: list[str] = Field(default_factory=lambda: _names("subject", "topic"))

    @field_validator("*")
    @classmethod
    def _lower(cls, names: list[str]) -> list[str]:
        return [_comparable(name) for name in names if name.strip()]

    def pick(self, fields: Sequence[PayloadField]) -> MappedFields:
        """Assign each role the first field whose name it lists; the rest become attributes."""
        claimed: set[int] = set()

        def first(role: list[str]) -> str | None:
            for wanted in role:
                for index, (names, value) in enumerate(fields):
                    if index not in claimed and any(_comparable(name) == wanted for name in names):
                        claimed.add(index)
                        return value or None
            return None

        email = first(self.email)
        name = first(self.name)
        given, family = first(self.first_name), first(self.last_name)
        if name is None and (given or family):
            name = " ".join(part for part in (given, family) if part)
        mapped = MappedFields(
            email=email,
            name=name,
            company=first(self.company),
            phone=first(self.phone),
            message=first(self.message),
            subject=first(self.subject),
            extra={},
        )
        for index, (names, value) in enumerate(fields):
            if index not in claimed and value and names:
                mapped.extra[names[0][:100]] = value
        return mapped


class HookMappings(BaseModel):
    """hooks.yaml: the field mapping of each hook source that needs more than the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    sources: dict[str, HookFieldMapping] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _keys(cls, sources: dict[str, HookFieldMapping]) -> dict[str, HookFieldMapping]:
        for key in sources:
            if not _SOURCE_KEY.match(key):
                raise ValueError(f"{key!r}: keys are '{{tool}}:{{source}}', e.g. 'typeform:website-demo'")
        return sources

    def for_source(self, tool: str, source: str) -> HookFieldMapping:
        return self.sources.get(f"{tool}:{source}") or HookFieldMapping()


def load_hook_mappings(directory: Path) -> HookMappings:
    """The policy directory's hooks.yaml, or the defaults when it has none (a policy dir from before)."""
    path = directory / HOOK_MAPPINGS_FILE
    if not path.is_file():
        return HookMappings()
    return load_yaml_model(path, HookMappings, what="hook field mapping")
