"""The retention policy (`retention.yaml`): how long bodies and payloads are kept, validated at load."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from config.yaml_files import load_yaml_model

RETENTION_FILE = "retention.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Keep(_Strict):
    """Keep for `days` days after the row's own time (sent, imported, received); null keeps forever."""

    days: int | None = Field(default=None, ge=1, le=36_500)


class EnquiryBodies(Keep):
    keep_subject: bool = True
    keep_body_chars: int = Field(default=500, ge=0, le=50_000)
    keep_corrected: bool = True


class RetentionPolicy(_Strict):
    version: int
    batch_size: int = Field(default=500, ge=1, le=10_000)
    outbox_payloads: Keep = Field(default_factory=lambda: Keep(days=30))
    raw_bodies: Keep = Field(default_factory=lambda: Keep(days=90))
    enquiry_bodies: EnquiryBodies = Field(default_factory=lambda: EnquiryBodies(days=730))


def load_retention(directory: Path) -> RetentionPolicy:
    """`retention.yaml` of the policy directory; the bundled default when the directory has none."""
    path = directory / RETENTION_FILE
    if not path.is_file():
        path = Path(__file__).resolve().parent / "defaults" / RETENTION_FILE
    return load_yaml_model(path, RetentionPolicy, what="retention policy")
