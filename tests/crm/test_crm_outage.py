"""An outage of any length needs no hand (issue 16 §5): writes meeting an unavailable CRM never fail for
good, back off to at most 6 h, and a long outage alerts the ops lead once; the CRM's own rejections
still fail at once."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from config.settings import CrmSettings
from connectors.crm.mapping import LeadMapping
from connectors.crm.salesforce import SalesforceCrm
from connectors.notify import SmtpNotifier, SmtpSettings
from pipeline.crm_outage import OutageAlerts, outage_since
from pipeline.crm_sync import drain_outbox
from store import outbox
from store.outbox import MAX_BACKOFF
from store.tables import CrmOutbox
from tests.sla.sla_helpers import smtp_server
from tests.support.salesforce_double import FieldErrorRule, SalesforceDouble

from .builders import StepClock, fill_outbox


def _crm(double: SalesforceDouble, mapping: LeadMapping) -> SalesforceCrm:
    return SalesforceCrm(double.settings(), CrmSettings(), mapping, bulk_poll_seconds=0.02)


def _statuses(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return outbox.counts_by_status(session)


def test_twenty_drains_meeting_503_fail_nothing_and_every_lead_lands_once_the_crm_is_back(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 30)
    crm = _crm(sf_double, mapping)
    with smtp_server() as sink:
        notifier = SmtpNotifier(
            SmtpSettings(host=sink.host, port=sink.port, starttls=False), {"ops_lead": ["ops@example.com"]}
        )
        alerts = OutageAlerts(notifier, alert_after=timedelta(hours=4))
        sf_double.fail_requests(20, status=503)  # each drain's first request meets the outage and stops it
        for _ in range(20):
            summary = drain_outbox(
                session_factory,
                crm,
                batch_size=100,
                backoff_seconds=30,
                max_attempts=8,
                clock=clock,
                alerts=alerts,
            )
            assert summary.stopped_by is not None and summary.failed == 0
            with session_factory() as session:
                rows = session.scalars(sa.select(CrmOutbox)).all()
            assert {row.status for row in rows} == {"pending"}
            # The backoff is capped: never more than 6 h to the next attempt.
            assert max(row.next_attempt_at for row in rows) - clock() <= MAX_BACKOFF
            clock.advance(hours=6)
        with session_factory() as session:
            assert outage_since(session) is not None
            attempts = session.scalar(sa.select(sa.func.min(CrmOutbox.attempts)))
        assert attempts == 20  # well past max_attempts=8, and still pending
        # One alert for the whole outage, not one per drain.
        assert len(sink.messages) == 1
        recipients, message = sink.messages[0]
        assert recipients == ["ops@example.com"] and "CRM unavailable" in str(message["Subject"])

        summary = drain_outbox(
            session_factory, crm, batch_size=100, backoff_seconds=30, clock=clock, alerts=alerts
        )
    assert summary.sent == 30 and summary.stopped_by is None
    assert _statuses(session_factory) == {"sent": 30}
    assert sf_double.lead_count() == 30 and set(sf_double.created.values()) == {1}
    with session_factory() as session:
        assert outage_since(session) is None  # the outage is over; the next one alerts again


def test_the_crms_own_rejection_still_fails_at_once(
    session_factory: sessionmaker[Session],
    sf_double: SalesforceDouble,
    mapping: LeadMapping,
    clock: StepClock,
) -> None:
    fill_outbox(session_factory, 3)
    sf_double.reject_records(
        FieldErrorRule("Lead", lambda record: record.get("Email") == "buyer1@example.com")
    )
    summary = drain_outbox(session_factory, _crm(sf_double, mapping), backoff_seconds=30, clock=clock)
    assert (summary.sent, summary.failed) == (2, 1)
    assert _statuses(session_factory) == {"sent": 2, "failed": 1}
