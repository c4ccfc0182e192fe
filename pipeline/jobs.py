"""The jobs the CLI and the flows run: plain functions over a Runtime, with summaries scripts can read.

Flows wrap these in Prefect tasks; `triage run --direct` and the tests call them as they are.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.errors import ConfigError, FatalError, TriageError
from models.records import Channel, RawStatus
from pipeline.crm_sync import drain_outbox
from pipeline.intake import IngestSummary, ingest_source
from pipeline.process import ProcessSummary, process_pending
from pipeline.runtime import Runtime, file_source
from store import counters, model_registry, outbox, source_status
from store import enquiries as enquiry_store
from store import hook_fetches as hook_fetch_store
from store import raw as raw_store
from store.db import transaction
from store.tables import FlowRun

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def import_path(
    runtime: Runtime, path: Path, channel: Channel, *, on_batch: Progress | None = None
) -> IngestSummary:
    """Store the records of a file or folder as raw records (processing happens in `run`)."""
    return ingest_source(runtime.factory, file_source(path, channel), on_batch=on_batch, clock=runtime.clock)


def read_configured_sources(runtime: Runtime, names: list[str] | None = None) -> list[IngestSummary]:
    """One pass over the configured sources (all, or those named); one failing does not stop the others.

    Every attempt is recorded (`store.source_status`): a source that fails keeps its error for
    `triage status` and /metrics, and the summary names it so the run as a whole can fail.
    """
    summaries = []
    sources = runtime.configured_sources()
    unknown = set(names or ()) - {source.name for source in sources}
    if unknown:
        raise ConfigError(f"no configured source named {', '.join(sorted(unknown))}")
    for source in sources:
        if names is not None and source.name not in names:
            continue
        channel = source.channel.value
        try:
            summary = ingest_source(runtime.factory, source, clock=runtime.clock)
        except Exception as error:  # any failure of one source must not stop the others
            message = str(error) if isinstance(error, TriageError) else f"{error.__class__.__name__}: {error}"
            log.error(
                "source %s could not be read: %s",
                source.name,
                message,
                exc_info=not isinstance(error, TriageError),
            )
            summary = IngestSummary(source=source.name, channel=channel, error=message)
        with transaction(runtime.factory) as session:
            source_status.record_attempt(
                session,
                source=source.name,
                channel=channel,
                now=runtime.clock(),
                stored=summary.stored,
                error=summary.error,
            )
        summaries.append(summary)
    if names is None:
        fetched = fetch_hook_records(runtime)
        if fetched is not None:
            summaries.append(fetched)
    return summaries


def fetch_hook_records(runtime: Runtime) -> IngestSummary | None:
    """Read the HubSpot contacts that web-hook events named by id (None: nothing waits, or no token)."""
    from connectors.webhooks.hubspot import HubSpotClient
    from pipeline.hook_fetches import STATUS_SOURCE, fetch_waiting

    settings = runtime.settings.hubspot
    with runtime.factory() as session:
        if not hook_fetch_store.any_waiting(session):
            return None
    if settings.access_token is None:
        message = "HubSpot events wait for their contacts: set TRIAGE_HUBSPOT__ACCESS_TOKEN"
        log.error(message)
        return IngestSummary(source=STATUS_SOURCE, channel="form", error=message)
    client = HubSpotClient(
        access_token=settings.access_token.get_secret_value(),
        base_url=settings.base_url,
        timeout_seconds=settings.timeout_seconds,
    )
    try:
        result = fetch_waiting(runtime.factory, client, clock=runtime.clock)
    finally:
        client.close()
    return IngestSummary(
        source=STATUS_SOURCE, channel="form", stored=result.fetched + result.missing, error=result.error
    )


def source_failure(summary: dict[str, Any]) -> str | None:
    """Why the run as a whole failed (after it processed what it could): the sources it could not read."""
    errors: dict[str, str] = summary.get("source_errors") or {}
    if not errors:
        return None
    return "; ".join(f"source {source} could not be read: {error}" for source, error in errors.items())


def process(runtime: Runtime, *, on_batch: Progress | None = None) -> ProcessSummary:
    """Process everything pending with the active model and the current policies."""
    return process_pending(
        runtime.factory, runtime.pipeline_context(), batch_size=runtime.settings.batch_size, on_batch=on_batch
    )


def sync_crm(runtime: Runtime) -> dict[str, Any]:
    """Drain the CRM outbox once. A CRM that needs a person (bad credentials) is reported, not raised:
    the enquiries are stored and their writes wait in the outbox until `triage crm check` passes."""
    from pipeline.crm_outage import OutageAlerts

    crm = runtime.settings.crm
    alerts = OutageAlerts.from_settings(runtime.settings, crm.outage_alert_minutes)
    try:
        summary = drain_outbox(
            runtime.factory,
            runtime.crm_backend(),
            batch_size=crm.batch_size,
            max_attempts=crm.max_attempts,
            backoff_seconds=crm.backoff_seconds,
            clock=runtime.clock,
            alerts=alerts,
        )
    except FatalError as error:
        log.error("CRM writes wait in the outbox: %s (run `triage crm check`)", error)
        return {"leads_sent": 0, "tasks_sent": 0, "retried": 0, "failed": 0, "stopped_by": str(error)}
    return {
        "leads_sent": summary.sent_by_operation["upsert_lead"],
        "tasks_sent": summary.sent_by_operation["create_task"],
        "retried": summary.retried,
        "failed": summary.failed,
        "stopped_by": summary.stopped_by,
    }


def poll_crm_touches(runtime: Runtime) -> dict[str, Any]:
    """One Salesforce first-touch pass (`pipeline.crm_touches`). Raises ConfigError for the local CRM,
    whose touches are recorded by hand (`triage crm touch`)."""
    from pipeline.crm_touches import poll_crm_touches as poll

    if runtime.settings.crm.backend != "salesforce":
        raise ConfigError(
            "CRM touches are polled from Salesforce only (TRIAGE_CRM__BACKEND=salesforce); with the local "
            "CRM record a touch by hand: triage crm touch ENQUIRY_ID --by NAME --at ISO"
        )
    from connectors.crm.salesforce import SalesforceCrm

    backend = runtime.crm_backend()
    assert isinstance(backend, SalesforceCrm)
    written = backend.lead_status_written
    open_statuses = runtime.settings.salesforce.open_statuses
    if written is not None and written not in open_statuses:
        # Every lead we write would look touched the moment it is written.
        raise ConfigError(
            f"crm_mapping.yaml writes Lead Status {written!r}, which is not one of "
            f"TRIAGE_SALESFORCE__OPEN_STATUSES {open_statuses}: add it there, or the poll would count "
            "every new lead as a first touch"
        )
    return poll(runtime.factory, backend, runtime.settings.salesforce, clock=runtime.clock).as_dict()


def send_replies(runtime: Runtime, *, only_ids: list[int] | None = None) -> dict[str, Any]:
    """Drain the reply outbox once over the configured SMTP server. Without one, replies wait."""
    from connectors.smtp_outbound import SenderPool
    from pipeline.replies import ReplySummary, drain_replies
    from store import reply_outbox

    outbound = runtime.settings.outbound
    summary = ReplySummary()
    pool = SenderPool.for_mailboxes(outbound, runtime.settings.all_mailboxes)
    if pool.configured:
        summary = drain_replies(
            runtime.factory,
            pool(""),
            outbound,
            clock=runtime.clock,
            only_ids=only_ids,
            automated_counts=runtime.settings.sla.automated_reply_counts_as_first_response,
            sender_for=pool,
        )
    with runtime.factory() as session:
        waiting = reply_outbox.counts(session).get("pending", 0)
    result = summary.as_dict()
    result["replies_waiting"] = waiting
    if waiting and not pool.configured:
        result["reply_errors"] = ["no SMTP server for replies: set TRIAGE_OUTBOUND__SMTP__HOST"]
    return result


def run_summary(
    runtime: Runtime, ingests: list[IngestSummary], processed: ProcessSummary, crm: dict[str, Any]
) -> dict[str, Any]:
    """The summary of one pass (`triage run`): what this pass added, by outcome."""
    ingested = {channel.value: 0 for channel in Channel}
    for item in ingests:
        ingested[item.channel] += item.stored
    outcomes = processed.outcomes
    with runtime.factory() as session:
        model_version = _active_version(session)
    return {
        "ingested": ingested,
        "processed": processed.processed,
        "enquiries": outcomes.get(RawStatus.ENQUIRY.value, 0),
        "duplicates": outcomes.get(RawStatus.DUPLICATE.value, 0),
        "threaded": outcomes.get(RawStatus.THREADED.value, 0),
        "skipped": outcomes.get(RawStatus.SKIPPED.value, 0),
        "quarantined": outcomes.get(RawStatus.QUARANTINED.value, 0),
        "automated": processed.lanes.get("automate", 0),
        "review": processed.review_items,
        "spot_checks": processed.spot_checks,
        "spam_discarded": processed.spam_discarded,
        "crm_written": crm["leads_sent"],
        "crm_tasks_written": crm["tasks_sent"],
        "crm_retrying": crm["retried"],
        "crm_failed": crm["failed"],
        "crm_stopped_by": crm["stopped_by"],
        "sla_timers": processed.timers_started,
        "audit_rows": processed.audit_rows,
        "model_version": model_version,
        "source_errors": {item.source: item.error for item in ingests if item.error},
        "stage_seconds": {stage: round(seconds, 4) for stage, seconds in processed.stage_seconds.items()},
    }


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the log of each run: what it read, made and sent, and what failed."""
    ingested = sum(summary["ingested"].values())
    line = (
        f"intake: read {ingested} new records, processed {summary['processed']}: "
        f"{summary['enquiries']} enquiries ({summary['automated']} automated, "
        f"{summary['review']} to review), "
        f"{summary['duplicates']} duplicates, {summary['threaded']} threaded, {summary['skipped']} skipped, "
        f"{summary['quarantined']} quarantined; CRM {summary['crm_written']} leads sent, "
        f"{summary['crm_retrying']} retrying, {summary['crm_failed']} failed"
    )
    errors = summary.get("source_errors") or {}
    if errors:
        line += "; FAILED sources: " + ", ".join(sorted(errors))
    return line


def workspace_summary(runtime: Runtime) -> dict[str, Any]:
    """The same keys as `run_summary`, counted over the whole database (what `triage demo` reports)."""
    with runtime.factory() as session:
        counts = raw_store.counts(session)
        totals = enquiry_store.totals(session)
        crm = outbox.counts_by_status_and_operation(session)
        leads_by_lane = outbox.sent_leads_by_lane(session)
        model_version = _active_version(session)
    status_total: dict[str, int] = {}
    for by_status in counts.values():
        for status, n in by_status.items():
            status_total[status] = status_total.get(status, 0) + n
    records = sum(status_total.values())
    summary = {
        "ingested": {channel.value: sum(counts.get(channel.value, {}).values()) for channel in Channel},
        "processed": records - status_total.get(RawStatus.PENDING.value, 0),
        "enquiries": totals["enquiries"],
        "duplicates": status_total.get(RawStatus.DUPLICATE.value, 0),
        "threaded": status_total.get(RawStatus.THREADED.value, 0),
        "skipped": status_total.get(RawStatus.SKIPPED.value, 0),
        "quarantined": status_total.get(RawStatus.QUARANTINED.value, 0),
        "pending": status_total.get(RawStatus.PENDING.value, 0),
        "automated": totals["lanes"].get("automate", 0),
        "review": totals["review_items"],
        "spot_checks": totals["spot_checks"],
        "spam_discarded": totals["spam_discarded"],
        "crm_written": crm.get(("upsert_lead", "sent"), 0),
        "crm_tasks_written": crm.get(("create_task", "sent"), 0),
        "crm_retrying": crm.get(("upsert_lead", "pending"), 0),
        "crm_failed": crm.get(("upsert_lead", "failed"), 0),
        "sla_timers": totals["sla_timers"],
        "audit_rows": totals["audit_rows"],
        "people_actions": totals["people_actions"],
        "model_version": model_version,
    }
    # Every raw record ends in exactly one outcome; every enquiry in exactly one lane.
    outcomes = ("enquiries", "duplicates", "threaded", "skipped", "quarantined", "pending")
    summary["accounting"] = {
        "records": records,
        "records_by_outcome": {key: summary[key] for key in outcomes},
        "records_balance": records == sum(summary[key] for key in outcomes),
        "enquiries_by_lane": totals["lanes"],
        "enquiries_balance": totals["enquiries"] == sum(totals["lanes"].values()),
    }
    # The same books in the terms: every record that is not a duplicate was written to the CRM
    # by the automated lane, is in review, or is quarantined; or it is one of the named rest (spam the
    # automated lane discarded, a follow-up threaded onto an enquiry, an auto-reply skipped).
    settled = {
        "crm_written_automated": leads_by_lane.get("automate", 0),
        "review": summary["review"],
        "quarantined": summary["quarantined"],
        "spam_discarded": summary["spam_discarded"],
        "threaded": summary["threaded"],
        "skipped": summary["skipped"],
    }
    non_duplicate = records - summary["duplicates"] - summary["pending"]
    summary["accounting"].update(
        {
            "non_duplicate_records": non_duplicate,
            "non_duplicate_by_outcome": settled,
            "non_duplicate_balance": non_duplicate == sum(settled.values()),
        }
    )
    return summary


def _active_version(session: Any) -> str | None:
    row = model_registry.version_with_status(session, "active")  # not models.registry: no scikit-learn
    return row.version if row else None


def ensure_starter_model(runtime: Runtime) -> str:
    """Train, register and activate the bundled starter model unless a model is already active.

    The person running `triage demo` is the one who signs this promotion off; the event records it.
    """
    from models.registry import active_version, promote, register_candidate
    from models.starter import starter_training_frame
    from models.training import train_model

    with runtime.factory() as session:
        current = active_version(session)
    if current is not None:
        return current
    frame, labels = starter_training_frame()
    result = train_model(frame, labels)
    with transaction(runtime.factory) as session:
        version = register_candidate(
            session,
            runtime.settings.home,
            result,
            trained_by="triage demo",
            data_description="bundled starter training set (models/starter_data/train.csv)",
        )
        promote(
            session, version, approved_by=f"{getpass.getuser()} (triage demo)", home=runtime.settings.home
        )
    return version


def record_flow_run(runtime: Runtime, name: str, summary: dict[str, Any]) -> None:
    """Keep the last runs for `triage status` and the metrics, and fold the pass's counter deltas."""
    now = runtime.clock()
    with transaction(runtime.factory) as session:
        session.add(FlowRun(name=name, started_at=now, finished_at=now, summary=summary))
    # Its own short transaction: reads are exact without it, it only keeps the deltas few.
    with runtime.factory() as session:
        counters.fold(session)
