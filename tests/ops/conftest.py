"""Fixtures shared by these tests."""

from tests.support.pipeline_support import context  # noqa: F401 - the fixture, registered here
