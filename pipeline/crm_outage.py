"""How long the CRM has been unavailable, and the one alert a long outage raises.

An outage (503, 429, timeouts, refused connections) needs no hand: its writes keep retrying with
capped backoff (store.outbox.MAX_BACKOFF). People only need to know it is going on, so once it has
lasted `alert_after` one notification goes to the ops lead (and Slack, if configured); the next
successful write ends the outage and re-arms the alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from connectors.notify import Notification, Notifier, build_notifier, notify_settings_from
from store import flags

log = logging.getLogger(__name__)

CRM_OUTAGE = "crm_outage"
ALERT_ROLES = ("ops_lead", "slack")


@dataclass(frozen=True, slots=True)
class OutageAlerts:
    """Where and when a CRM outage is reported."""

    notifier: Notifier | None
    alert_after: timedelta = timedelta(hours=1)

    @classmethod
    def from_settings(cls, settings: object, outage_alert_minutes: float) -> OutageAlerts:
        """The configured notifier (`notify` settings) and the `crm.outage_alert_minutes` delay."""
        notifier = build_notifier(notify_settings_from(settings))
        return cls(notifier, alert_after=timedelta(minutes=outage_alert_minutes))


def outage_since(session: Session) -> datetime | None:
    """When the current CRM outage began (None: the CRM answered the last drain)."""
    value = flags.get_value(session, CRM_OUTAGE)
    since = value.get("since") if value else None
    return datetime.fromisoformat(str(since)) if since else None


def note_unavailable(
    session: Session, *, now: datetime, error: str, alerts: OutageAlerts | None, waiting: int
) -> bool:
    """Record a drain that met an unavailable CRM; alert once when the outage is long. True: alerted now."""
    value = flags.get_value(session, CRM_OUTAGE) or {}
    since = datetime.fromisoformat(str(value["since"])) if value.get("since") else now
    alerted = bool(value.get("alerted"))
    sent_now = False
    if (
        alerts is not None
        and alerts.notifier is not None
        and not alerted
        and now - since >= alerts.alert_after
    ):
        sent_now = _alert(alerts.notifier, since=since, now=now, error=error, waiting=waiting)
        alerted = sent_now
    flags.set_value(
        session,
        CRM_OUTAGE,
        {"since": since.isoformat(), "alerted": alerted, "last_error": error[:500]},
        by="crm drain",
        now=now,
    )
    return sent_now


def note_available(session: Session, *, now: datetime) -> None:
    """The CRM accepted writes again: the outage, if any, is over."""
    if outage_since(session) is not None:
        flags.set_value(session, CRM_OUTAGE, {"since": None, "alerted": False}, by="crm drain", now=now)


def _alert(notifier: Notifier, *, since: datetime, now: datetime, error: str, waiting: int) -> bool:
    hours = (now - since).total_seconds() / 3600
    roles = [role for role in ALERT_ROLES if role in notifier.roles()]
    if not roles:
        log.warning("the CRM has been unavailable for %.1f h, and no ops lead or Slack is configured", hours)
        return False
    for role in roles:
        try:
            notifier.send(
                Notification(
                    role=role,
                    subject=f"CRM unavailable for {hours:.1f} h",
                    text=(
                        f"The CRM has not accepted writes since {since.isoformat()} (last error: "
                        f"{error[:300]}). {waiting} writes wait in the outbox and keep retrying on their "
                        "own; nothing needs doing unless the outage is on our side (`triage crm check`)."
                    ),
                )
            )
        except Exception as failure:  # the alert must never stop the drain; it is tried again next pass
            log.warning("could not send the CRM outage alert to %s: %s", role, failure)
            return False
    return True
