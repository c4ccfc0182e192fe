"""What `triage db prune` and the scheduled retention flow run: the policy over the runtime's store."""

from __future__ import annotations

from typing import Any

from config.retention import load_retention
from pipeline.runtime import Runtime
from store import retention


def apply_retention(
    runtime: Runtime, *, dry_run: bool = False, max_batches: int | None = None
) -> dict[str, Any]:
    """Prune per `retention.yaml` in the policy directory; the summary says what went (or would)."""
    policy = load_retention(runtime.settings.policy_dir)
    summary = retention.prune(
        runtime.factory, policy, clock=runtime.clock, dry_run=dry_run, max_batches=max_batches
    )
    return {"policy_version": policy.version, "batch_size": policy.batch_size, **summary.as_dict()}


def database_size(runtime: Runtime) -> dict[str, Any]:
    """Space per table, and what the policy would free now."""
    with runtime.factory() as session:
        tables = retention.table_sizes(session)
    would_free = apply_retention(runtime, dry_run=True)
    return {
        "backend": runtime.engine.dialect.name,
        "total_bytes": sum(t.bytes for t in tables),
        "tables": [{"table": t.table, "rows": t.rows, "bytes": t.bytes} for t in tables],
        "policy_would_free": {
            name: would_free[name] for name in ("outbox_payloads", "raw_bodies", "enquiry_bodies")
        },
    }
