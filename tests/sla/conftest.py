"""Fixtures for the SLA tests: stored enquiries to hang timers on, and the shipped policies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sla.policies import SlaPolicies, load_policies


@pytest.fixture(scope="session")
def policies() -> SlaPolicies:
    """The shipped policies, in UTC."""
    return load_policies()


@pytest.fixture
def policy_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a policy YAML text to a temp file and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "sla.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
