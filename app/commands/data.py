"""Data lifecycle commands: `triage db prune`, `triage db size` (retention) and `triage erase` (GDPR)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Count what would change; change nothing.")]

PASSES = ("outbox_payloads", "raw_bodies", "enquiry_bodies")


def _runtime() -> Any:
    from config.settings import Settings
    from pipeline.runtime import Runtime

    return Runtime(Settings())


def _mib(n: int) -> str:
    return f"{n / 1_048_576:.2f} MiB"


def db_prune(
    dry_run: DryRun = False,
    max_batches: Annotated[
        int | None, typer.Option(help="Stop each pass after this many batches (the next run goes on).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Apply the retention policy (retention.yaml): empty sent CRM payloads, processed raw bodies and old
    enquiry bodies, in batches that each commit. Rows, keys, hashes, labels and the audit trail stay.
    Safe to interrupt (run it again to go on) and to run on PostgreSQL while intake runs."""
    from pipeline.retention import apply_retention

    summary = apply_retention(_runtime(), dry_run=dry_run, max_batches=max_batches)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table("what", "older than", "rows", "space", title="would prune" if dry_run else "pruned")
    for name in PASSES:
        item = summary[name]
        table.add_row(
            name.replace("_", " "), item["cutoff"] or "kept forever", str(item["rows"]), _mib(item["bytes"])
        )
    Console().print(table)


def db_size(as_json: JsonFlag = False) -> None:
    """Space per table (with its indexes) and what the retention policy would free if it ran now."""
    from pipeline.retention import database_size

    data = database_size(_runtime())
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table("table", "rows", "space", title=f"{data['backend']}: {_mib(data['total_bytes'])}")
    for item in data["tables"]:
        table.add_row(item["table"], str(item["rows"]), _mib(item["bytes"]))
    Console().print(table)
    for name in PASSES:
        item = data["policy_would_free"][name]
        console.print(
            f"retention would empty {item['rows']} {name.replace('_', ' ')} ({_mib(item['bytes'])})"
        )


def db_recount(as_json: JsonFlag = False) -> None:
    """Rebuild the counters /metrics and `triage status` read (store/counters.py) from the tables.

    The triggers keep them exact; run this after loading rows with the triggers dropped (a bulk
    restore) or to check them: the table says which families were off."""
    from store import counters

    runtime = _runtime()
    with runtime.factory() as session:
        before = counters.figures(session)
        keys = counters.recount(session)
        after = counters.figures(session)
    changed = {
        name: bool(counters.differences({name: before[name]}, {name: after[name]}))
        for name in counters.FAMILY_NAMES
    }
    data = {"families": keys, "changed": changed}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table("family", "keys", "was off", title="counters rebuilt from the tables")
    for name in counters.FAMILY_NAMES:
        table.add_row(name, str(keys[name]), "yes" if changed[name] else "no")
    Console().print(table)


def erase(
    email: Annotated[str | None, typer.Option("--email", help="The person's e-mail address.")] = None,
    requested_by: Annotated[
        str | None, typer.Option("--requested-by", help="Who asked (kept in the tombstone).")
    ] = None,
    dry_run: DryRun = False,
    list_: Annotated[
        bool,
        typer.Option("--list", help="List the tombstones of past erasures (newest first), erase nothing."),
    ] = False,
    limit: Annotated[int, typer.Option(help="With --list: at most this many.", min=1)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Erase one person (right to erasure): every enquiry, message, raw record, CRM lead and task, review
    note and correction of theirs is removed or emptied, in one transaction (an interrupted erasure has
    changed nothing and can be run again). The audit keeps a tombstone: who asked, when, how many rows,
    and a keyed hash of the address, never the address. With the Salesforce backend the lead is deleted
    there through the outbox (`triage run` or the intake flow sends it)."""
    from app.commands.ops import pseudonymisation_key
    from store.erasure import erase_person

    if list_:
        list_tombstones(limit=limit, as_json=as_json)
        return
    if not email or not requested_by:
        raise typer.BadParameter("--email and --requested-by are both needed (or --list)")
    runtime = _runtime()
    settings = runtime.settings
    secret = settings.pseudonymisation_key.get_secret_value() if settings.pseudonymisation_key else None
    key = pseudonymisation_key(settings.home, secret)
    result = erase_person(
        runtime.factory,
        email,
        requested_by=requested_by,
        key=key,
        crm_backend=settings.crm.backend,
        dry_run=dry_run,
        clock=runtime.clock,
    )
    data = result.as_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    if not result.found:
        console.print("nothing held for that address: nothing to erase")
        return
    table = Table(
        "what", "rows", title="would erase" if dry_run else f"erased (tombstone {result.subject_hmac})"
    )
    for name, count in result.counts.items():
        if count:
            table.add_row(escape(name.replace("_", " ")), str(count))
    Console().print(table)


def list_tombstones(*, limit: int, as_json: bool) -> None:
    """The audit's erasure tombstones: who asked, when, the rows erased and the address's keyed hash."""
    from store.erasure import tombstones

    with _runtime().factory() as session:
        rows = [
            {
                "id": row.id,
                "requested_by": row.requested_by,
                "requested_at": row.requested_at.isoformat(),
                "completed_at": row.completed_at.isoformat() if row.completed_at else None,
                "rows_erased": sum(int(n) for n in row.counts.values()),
                "counts": row.counts,
                "subject_hmac": row.subject_hmac,
            }
            for row in tombstones(session, limit=limit)
        ]
    if as_json:
        typer.echo(json.dumps({"tombstones": rows}, indent=2))
        return
    if not rows:
        console.print("no erasure has been made")
        return
    table = Table(
        "id", "requested by", "requested at", "completed at", "rows", "keyed hash", title="erasures"
    )
    for item in rows:
        table.add_row(
            str(item["id"]),
            escape(item["requested_by"]),
            item["requested_at"],
            item["completed_at"] or "not completed",
            str(item["rows_erased"]),
            item["subject_hmac"][:16] + "…",
        )
    Console().print(table)
