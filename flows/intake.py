"""The intake flow: read sources, process pending records in batches, drain the CRM outbox.

Thin orchestration over `pipeline.jobs`: a task per step, never a task per enquiry (a Prefect task
costs ~10 ms; batches inside the tasks keep 1,000 enquiries from costing 10 s of overhead). Only
retriable errors are retried; everything a re-run could double is keyed in the database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Failed
from prefect.tasks import Task

from config.settings import Settings
from models.errors import RetriableError
from pipeline import jobs
from pipeline.intake import IngestSummary
from pipeline.process import ProcessSummary
from pipeline.runtime import Runtime


def retry_only_retriable(_task: Task[Any, Any], _run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry timeouts and outages, not bugs or bad data."""
    try:
        state.result()
    except RetriableError:
        return True
    except Exception:
        return False
    return False


@task(
    name="read-sources", retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=retry_only_retriable
)
def read_sources_task(sources: list[str] | None) -> list[dict[str, Any]]:
    summaries = jobs.read_configured_sources(Runtime(Settings()), sources)
    return [vars(item) for item in summaries]


@task(
    name="process-pending", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_only_retriable
)
def process_task() -> dict[str, Any]:
    return jobs.process(Runtime(Settings())).as_dict()


@task(name="sync-crm", retries=3, retry_delay_seconds=[30, 120, 600], retry_condition_fn=retry_only_retriable)
def sync_crm_task() -> dict[str, Any]:
    return jobs.sync_crm(Runtime(Settings()))


@task(name="send-replies", retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=retry_only_retriable)
def send_replies_task() -> dict[str, Any]:
    return jobs.send_replies(Runtime(Settings()))


@flow(name="intake", log_prints=False)
def intake_flow(sources: list[str] | None = None) -> dict[str, Any] | State[Any]:
    """One pass: sources (all configured, or those named) → raw records → enquiries → CRM → replies.

    Processing takes every pending record, whichever source or web hook stored it; row locks let
    several deployments (one per mailbox) run this at once on PostgreSQL. Returns the same summary
    as `triage run --direct`, and records it for `triage status` and /metrics. A source that could not
    be read makes the run fail (after everything else was done), naming the source.
    """
    ingests = read_sources_task(sources)
    processed = process_task()
    crm = sync_crm_task()
    runtime = Runtime(Settings())
    summary = jobs.run_summary(
        runtime,
        [IngestSummary(**item) for item in ingests],
        ProcessSummary(
            processed=processed["processed"],
            outcomes=Counter(processed["outcomes"]),
            lanes=Counter(processed["lanes"]),
            spam_discarded=processed["spam_discarded"],
            timers_started=processed["timers_started"],
            review_items=processed["review_items"],
            audit_rows=processed["audit_rows"],
            stage_seconds=defaultdict(float, processed["stage_seconds"]),
        ),
        crm,
    )
    summary.update(send_replies_task())
    jobs.record_flow_run(runtime, "intake", summary)
    get_run_logger().info(jobs.summary_line(summary))
    failure = jobs.source_failure(summary)
    if failure is not None:
        # A Failed final state (what the UI, `flows serve` and alerts see) that still carries the summary.
        return Failed(message=failure, data=summary)
    return summary
