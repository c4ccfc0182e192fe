"""Errors grouped by how to react to them, not by where they happen.

Flows retry only `RetriableError`; a `SkippableError` quarantines one record and the run goes on; a
`FatalError` or `ConfigError` stops the run with a message that says what to do next.
"""

from __future__ import annotations


class TriageError(Exception):
    """Base of every error this product raises on purpose."""


class ConfigError(TriageError):
    """Settings or a policy file is wrong; the message names the file and the field."""


class RetriableError(TriageError):
    """A passing failure (timeout, 429, 5xx, lost connection): the same call may succeed later."""


class FatalError(TriageError):
    """A failure that retrying cannot fix (bad credentials, missing field in the CRM): a person must act."""


class SkippableError(TriageError):
    """One record cannot be used (broken MIME, malformed post): quarantine it with this reason and go on."""
