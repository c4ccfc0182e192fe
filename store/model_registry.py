"""Repository functions for the model registry tables (`model_versions`, `model_events`).

Lifecycle rules live in `models.registry`; this module only reads and writes rows. Callers own the
transaction: nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.tables import ModelEvent, ModelVersion


def add_version(
    session: Session,
    *,
    version: str,
    artifact_path: str,
    provenance: dict[str, Any],
    created_at: datetime,
    status: str = "candidate",
) -> ModelVersion:
    """Insert a registered model row."""
    row = ModelVersion(
        version=version,
        status=status,
        artifact_path=artifact_path,
        provenance=provenance,
        created_at=created_at,
        approved_by=None,
        promoted_at=None,
    )
    session.add(row)
    session.flush()
    return row


def get_version(session: Session, version: str) -> ModelVersion | None:
    """The row of one version, or None."""
    return session.get(ModelVersion, version)


def version_with_status(session: Session, status: str, *, lock: bool = False) -> ModelVersion | None:
    """The newest row with this status (there is at most one active and one shadow)."""
    statement = (
        sa.select(ModelVersion)
        .where(ModelVersion.status == status)
        .order_by(ModelVersion.promoted_at.desc().nulls_last(), ModelVersion.created_at.desc())
        .limit(1)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    return session.scalars(statement).first()


def active_labels(session: Session) -> tuple[str, ...]:
    """The intents the active model was trained on (its provenance's labels); () before a promotion."""
    row = version_with_status(session, "active")
    if row is None:
        return ()
    return tuple(str(label) for label in (row.provenance or {}).get("labels", []))


def list_versions(session: Session) -> list[ModelVersion]:
    """Every registered version, newest first."""
    statement = sa.select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc())
    return list(session.scalars(statement))


def add_event(
    session: Session,
    *,
    version: str,
    action: str,
    actor: str,
    previous_active: str | None,
    created_at: datetime,
) -> ModelEvent:
    """Append one lifecycle event (register, shadow, unshadow, promote, rollback)."""
    event = ModelEvent(
        version=version, action=action, actor=actor, previous_active=previous_active, created_at=created_at
    )
    session.add(event)
    session.flush()
    return event


def last_event(session: Session, *, version: str, action: str) -> ModelEvent | None:
    """The most recent event of `action` on `version`."""
    statement = (
        sa.select(ModelEvent)
        .where(ModelEvent.version == version, ModelEvent.action == action)
        .order_by(ModelEvent.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def list_events(session: Session, *, version: str | None = None) -> list[ModelEvent]:
    """Lifecycle events, oldest first, optionally of one version."""
    statement = sa.select(ModelEvent).order_by(ModelEvent.id)
    if version is not None:
        statement = statement.where(ModelEvent.version == version)
    return list(session.scalars(statement))
