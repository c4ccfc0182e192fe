"""The weekly report flow: render the ops lead's SLA report for the last seven days and e-mail it.

Thin on purpose: `sla.report.send_weekly_report` builds, stores and sends; a retry after an SMTP outage
re-renders the same page (it is a pure function of the database) and sends it once it gets through.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from config.settings import Settings
from connectors.notify import notify_settings_from
from flows.intake import retry_only_retriable
from pipeline.runtime import Runtime
from sla.report import send_weekly_report
from store.common import utcnow


@task(
    name="sla-weekly-report",
    retries=3,
    retry_delay_seconds=[60, 300, 1800],
    retry_condition_fn=retry_only_retriable,
)
def weekly_report_task(days: int = 7) -> dict[str, Any]:
    runtime = Runtime(Settings())
    with runtime.factory() as session:
        return send_weekly_report(
            session,
            runtime.sla_policies,
            notify_settings_from(runtime.settings),
            now=utcnow(),
            out_dir=runtime.settings.reports_dir,
            days=days,
        )


@flow(name="weekly-sla-report", log_prints=False)
def weekly_report_flow(days: int = 7) -> dict[str, Any]:
    """E-mail the ops lead last week's SLA report (HTML inline and attached); keep a copy in reports_dir."""
    return weekly_report_task(days)
