"""The SLA watch flow: one watch pass, scheduled every minute (see flows/deployments.py).

Thin on purpose: `sla.watch.watch_pass` does the work and is idempotent, so a retried or overlapping
run cannot notify twice. Only retriable errors (a database that went away) are retried.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from config.settings import Settings
from connectors.notify import build_notifier, notify_settings_from
from flows.intake import retry_only_retriable
from pipeline.runtime import Runtime
from sla.watch import watch_pass
from store.common import utcnow


@task(name="sla-watch-pass", retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=retry_only_retriable)
def watch_task() -> dict[str, Any]:
    runtime = Runtime(Settings())
    notifier = build_notifier(notify_settings_from(runtime.settings))
    return watch_pass(runtime.factory, runtime.sla_policies, notifier, now=utcnow()).as_dict()


@flow(name="sla-watch", log_prints=False)
def sla_watch_flow() -> dict[str, Any]:
    """Mark breaches, fire escalation tiers once each, deliver pending notifications."""
    return watch_task()
