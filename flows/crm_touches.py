"""The CRM touches flow: one Salesforce first-touch poll, every few minutes (see flows/deployments.py).

Thin on purpose: `pipeline.crm_touches.poll_crm_touches` does the work, one committed page at a time
with its high-water mark, and stops a clock at most once, so a retried or overlapping run changes
nothing twice. Only retriable errors (Salesforce away, throttled) are retried.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from config.settings import Settings
from flows.intake import retry_only_retriable
from pipeline import jobs
from pipeline.runtime import Runtime


@task(
    name="crm-touches-poll", retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=retry_only_retriable
)
def poll_task() -> dict[str, Any]:
    runtime = Runtime(Settings())
    try:
        summary = jobs.poll_crm_touches(runtime)
        jobs.record_flow_run(runtime, "crm-touches", summary)
        return summary
    finally:
        runtime.engine.dispose()


@flow(name="crm-touches", log_prints=False)
def crm_touches_flow() -> dict[str, Any]:
    """Stop first-response clocks for leads worked in Salesforce (status left open, completed Task)."""
    return poll_task()
