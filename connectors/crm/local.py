"""The embedded CRM: leads and tasks in the project's own database (`TRIAGE_CRM__BACKEND=local`)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import CheckResult
from connectors.crm.base import LeadDelete, LeadWrite, TaskWrite, WriteResult
from models.errors import RetriableError
from store import local_crm
from store.common import Clock, utcnow


class LocalCrm:
    """Leads in the `crm_leads` table, upserted by external id; tasks keyed by idempotency key."""

    name = "local"

    def __init__(self, factory: sessionmaker[Session], *, clock: Clock = utcnow) -> None:
        self._factory = factory
        self._clock = clock

    def check(self) -> CheckResult:
        try:
            with self._factory() as session:
                session.execute(sa.select(1))
        except SQLAlchemyError as error:
            return CheckResult(False, f"cannot reach the database: {error.__class__.__name__}: {error}")
        return CheckResult(True, "local CRM: the project's own database is reachable")

    def upsert_leads(self, leads: Sequence[LeadWrite]) -> list[WriteResult]:
        try:
            with self._factory() as session, session.begin():
                ids = local_crm.upsert_leads(
                    session, [(lead.external_id, lead.fields) for lead in leads], now=self._clock()
                )
        except SQLAlchemyError as error:
            raise RetriableError(_short(error)) from error
        return [WriteResult(lead.idempotency_key, True, crm_id=ids[lead.external_id]) for lead in leads]

    def create_tasks(self, tasks: Sequence[TaskWrite]) -> list[WriteResult]:
        try:
            with self._factory() as session, session.begin():
                ids = local_crm.create_tasks(
                    session,
                    [(task.idempotency_key, task.lead_external_id, task.fields) for task in tasks],
                    now=self._clock(),
                )
        except SQLAlchemyError as error:
            raise RetriableError(_short(error)) from error
        return [
            WriteResult(task.idempotency_key, True, crm_id=ids[task.idempotency_key])
            if task.idempotency_key in ids
            else WriteResult(task.idempotency_key, False, error=f"no lead {task.lead_external_id}")
            for task in tasks
        ]

    def delete_leads(self, deletes: Sequence[LeadDelete]) -> list[WriteResult]:
        try:
            with self._factory() as session, session.begin():
                local_crm.delete_leads(session, [delete.external_id for delete in deletes])
        except SQLAlchemyError as error:
            raise RetriableError(_short(error)) from error
        return [WriteResult(delete.idempotency_key, True) for delete in deletes]


def _short(error: SQLAlchemyError) -> str:
    # The first line of the driver's message; SQLAlchemy's str() appends the SQL and every parameter.
    detail = str(getattr(error, "orig", None) or error).splitlines()[0]
    return f"local CRM write failed: {error.__class__.__name__}: {detail}"
