"""`triage crm accounts ...`: the local CRM's accounts and contacts, which account matching reads.

Runs no flow, so it never imports Prefect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from review.display import markup_safe

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from config.settings import Settings
    from connectors.base import CheckResult
    from connectors.crm.base import CrmBackend

accounts_app = typer.Typer(help="Accounts and contacts that senders are matched to.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def directory_check(settings: Settings, factory: sessionmaker[Session], backend: CrmBackend) -> CheckResult:
    """Whether account matching's configured fields (or tables) are there."""
    from connectors.crm.factory import make_account_directory
    from connectors.enrichment import bundled_firmographics

    directory = make_account_directory(settings, factory, bundled_firmographics().is_free_mail, crm=backend)
    return directory.check()


@accounts_app.command("import")
def import_accounts(
    file: Annotated[Path, typer.Argument(help="CSV with columns domain,name,arr,owner,status,contacts.")],
    as_json: JsonOption = False,
) -> None:
    """Add or update accounts by domain (and their contacts); importing the same file again changes nothing.

    `owner` is a user name here (`triage users add`); `status` `customer` marks existing customers;
    `contacts` is a count or the contacts' addresses separated by `;`.
    """
    from connectors.crm.accounts import read_accounts_csv
    from models.errors import ConfigError
    from pipeline.runtime import Runtime
    from store import accounts as account_store

    try:
        accounts = read_accounts_csv(file)
    except ConfigError as error:
        Console(stderr=True, soft_wrap=True).print(f"[red]{markup_safe(error)}[/red]")
        raise typer.Exit(2) from None
    runtime = Runtime()
    try:
        with runtime.factory() as session:
            counts = account_store.import_accounts(session, accounts, now=runtime.clock())
            session.commit()
    finally:
        runtime.engine.dispose()
    payload = {
        "ok": True,
        "added": counts.added,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "contacts_added": counts.contacts_added,
    }
    if as_json:
        print(json.dumps(payload))
        return
    print(
        f"accounts: {counts.added} added, {counts.updated} updated, {counts.unchanged} unchanged; "
        f"{counts.contacts_added} contact(s) added"
    )
