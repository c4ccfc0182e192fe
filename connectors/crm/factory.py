"""Pick the CRM backend the settings ask for (`TRIAGE_CRM__BACKEND=local|salesforce`)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
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
