"""Pick the CRM backend the settings ask for (`TRIAGE_CRM__BACKEND=local|salesforce`)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from connectors.crm.accounts import AccountDirectory, CachedDirectory, LocalAccountDirectory
from connectors.crm.base import CrmBackend
from connectors.crm.local import LocalCrm
from connectors.crm.mapping import default_mapping_path, load_mapping
from store.common import Clock, utcnow


def make_crm_backend(
    settings: Settings, factory: sessionmaker[Session], *, clock: Clock = utcnow
) -> CrmBackend:
    """The local backend over `factory`, or Salesforce with the mapping from the policy directory."""
    if settings.crm.backend == "salesforce":
        # Imported here so the local default never pays for simple-salesforce's imports.
        from connectors.crm.salesforce import SalesforceCrm

        mapping = load_mapping(default_mapping_path(settings.policy_dir))
        return SalesforceCrm(settings.salesforce, settings.crm, mapping)
    return LocalCrm(factory, clock=clock)


def make_account_directory(
    settings: Settings,
    factory: sessionmaker[Session],
    free_mail: Callable[[str], bool],
    *,
    crm: CrmBackend | None = None,
    clock: Clock = utcnow,
) -> CachedDirectory:
    """Account matching over the configured backend (the same Salesforce client as the writes when
    given), behind a cache of `crm.accounts.cache_seconds`."""
    accounts = settings.crm.accounts
    directory: AccountDirectory
    if settings.crm.backend == "salesforce":
        from connectors.crm.accounts import SalesforceAccountDirectory
        from connectors.crm.salesforce import SalesforceCrm

        client = crm if isinstance(crm, SalesforceCrm) else make_crm_backend(settings, factory, clock=clock)
        assert isinstance(client, SalesforceCrm)
        directory = SalesforceAccountDirectory(client, accounts, free_mail)
    else:
        directory = LocalAccountDirectory(factory, accounts, free_mail)
    return CachedDirectory(directory, ttl_seconds=accounts.cache_seconds, clock=clock)
