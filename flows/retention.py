"""The retention flow: apply `retention.yaml` in batches, nightly (see flows/deployments.py).

Thin on purpose: `pipeline.retention.apply_retention` does the work, one committed batch at a time, so
an interrupted or retried run loses nothing and the next one goes on from where it stopped.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from config.settings import Settings
from flows.intake import retry_only_retriable
from pipeline.retention import apply_retention
from pipeline.runtime import Runtime


@task(
    name="retention-prune", retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=retry_only_retriable
)
def prune_task(max_batches: int | None) -> dict[str, Any]:
    return apply_retention(Runtime(Settings()), max_batches=max_batches)


@flow(name="retention", log_prints=False)
def retention_flow(max_batches: int | None = None) -> dict[str, Any]:
    """Empty sent outbox payloads, processed raw bodies and old enquiry bodies, per the policy."""
    return prune_task(max_batches)
