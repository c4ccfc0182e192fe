"""Fixtures for CRM tests: the Salesforce HTTPS double, the default mapping and a clock to step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.crm.mapping import LeadMapping, load_mapping
from tests.support.salesforce_double import SalesforceDouble

from .builders import DEFAULT_MAPPING, StepClock


@pytest.fixture
def sf_double() -> Iterator[SalesforceDouble]:
    """A fresh Salesforce double on 127.0.0.1 over TLS with its own throwaway CA."""
    with SalesforceDouble() as double:
        yield double


@pytest.fixture(scope="session")
def mapping() -> LeadMapping:
    return load_mapping(DEFAULT_MAPPING)


@pytest.fixture
def clock() -> StepClock:
    return StepClock()
