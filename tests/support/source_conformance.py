"""The checks every intake source must pass (after Airbyte's ConnectorTestSuiteBase).

Subclass `SourceConformance` in a test module as `TestXxxConformance` and provide three fixtures:

    source          a Source holding `expected_count` records, read in more than one batch if it can
    bad_source      the same source with wrong credentials or an unreachable location
    expected_count  how many records a read from the start yields

and optionally `secrets` (strings that must never show in a message; default none). The base class
itself is not collected (its name does not start with "Test").
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from connectors.base import CheckResult, Source, SourceBatch
from models.records import RawRecordIn


def read_all(source: Source, state: dict[str, Any] | None) -> list[SourceBatch]:
    """Every batch a read from `state` yields."""
    return list(source.read(state))


def keys_of(batches: list[SourceBatch]) -> list[str]:
    """The external keys of all records, in order."""
    return [record.external_key for batch in batches for record in batch.records]


class SourceConformance:
    """Bad credentials fail cleanly, records validate, replay from a checkpoint loses and doubles nothing."""

    @pytest.fixture
    def secrets(self) -> tuple[str, ...]:
        return ()

    def test_check_passes_on_a_good_source(self, source: Source) -> None:
        result = source.check()
        assert isinstance(result, CheckResult)
        assert result.ok, result.message

    def test_check_fails_cleanly_on_bad_credentials(
        self, bad_source: Source, secrets: tuple[str, ...]
    ) -> None:
        result = bad_source.check()  # must return, not raise
        assert isinstance(result, CheckResult)
        assert not result.ok
        assert len(result.message) > 20, "the message must tell a person what to fix"
        for secret in secrets:
            assert secret not in result.message

    def test_read_from_the_start_yields_every_record_once(self, source: Source, expected_count: int) -> None:
        keys = keys_of(read_all(source, None))
        assert len(keys) == expected_count
        assert len(set(keys)) == len(keys)

    def test_records_validate(self, source: Source) -> None:
        batches = read_all(source, None)
        assert batches
        for batch in batches:
            json.dumps(batch.state)  # a checkpoint must be storable as JSON
            for record in batch.records:
                assert isinstance(record, RawRecordIn)
                assert RawRecordIn.model_validate(record.model_dump()) == record
                assert record.source == source.name
                assert record.channel == source.channel
                assert record.received_at.utcoffset() == timedelta(0), "received_at must be aware UTC"
                assert isinstance(record.payload, bytes)

    def test_replay_from_the_final_checkpoint_yields_nothing_new(self, source: Source) -> None:
        batches = read_all(source, None)
        assert batches
        assert keys_of(read_all(source, batches[-1].state)) == []

    def test_resume_from_any_checkpoint_loses_and_doubles_nothing(self, source: Source) -> None:
        batches = read_all(source, None)
        all_keys = keys_of(batches)
        for index, batch in enumerate(batches):
            # A crash after storing batch `index` resumes from its state: the rest must follow exactly.
            expected_rest = keys_of(batches[index + 1 :])
            assert keys_of(read_all(source, batch.state)) == expected_rest
            stored = keys_of(batches[: index + 1])
            assert stored + expected_rest == all_keys
