"""The nightly retrain flow under Prefect: it registers a candidate and promotes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from models import registry
from store.db import make_engine, make_session_factory
from tests.models.conftest import toy_rows, write_csv


@pytest.mark.slow
def test_retrain_flow_registers_a_candidate_only(
    prefect_harness: None, triage_home: Path, tmp_path: Path
) -> None:
    from flows.retrain import retrain_flow

    frame, labels = toy_rows(per_label=12)
    data = write_csv(tmp_path / "base.csv", frame, labels)
    report = retrain_flow(base_data=str(data))
    assert report["promoted"] is False and report["active"] is None
    engine = make_engine(Settings().effective_database_url)
    try:
        with make_session_factory(engine)() as session:
            assert registry.active_version(session) is None
            assert registry.newest_candidate(session) == report["candidate"]
    finally:
        engine.dispose()
