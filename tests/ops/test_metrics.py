"""/metrics degrades, never fails: guarded collectors, PSI on shared bins, an empty database."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from app.metrics import (
    COLLECTORS,
    CollectorHealth,
    DatabaseCollector,
    class_psi,
    confidence_psi,
    drift_figures,
    histogram_counts,
    psi,
)
from app.web import create_app
from config.settings import Settings
from store import model_registry
from store.db import make_engine, upgrade_schema
from tests.builders import insert_enquiry


def parse(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_histogram_counts_match_numpy_on_the_reference_edges() -> None:
    edges = list(np.linspace(0.0, 1.0, 11))
    values = [random.Random(7).random() for _ in range(2_000)] + [0.0, 0.1, 0.5, 1.0]
    expected, _ = np.histogram(values, bins=edges)
    assert histogram_counts(values, edges) == expected.tolist()
    assert histogram_counts([], edges) == [0] * 10


def test_psi_needs_the_same_bins_and_handles_new_classes_and_old_references() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi([0.5, 0.5], [1.0])
    # A class the reference never predicted is a bin of its own, not a crash or a silent drop.
    assert class_psi({"a": 0.5, "b": 0.5}, {"a": 10, "b": 10}) == pytest.approx(0.0)
    assert class_psi({"a": 0.5, "b": 0.5}, {"a": 10, "b": 10, "new": 20}) > 0.2
    reference = {"edges": [0.0, 0.5, 1.0], "counts": [5, 5]}
    assert confidence_psi(reference, [0.2, 0.7]) == pytest.approx(0.0)
    # Edges and counts that do not fit (another layout): no figure rather than a failed scrape.
    assert confidence_psi({"edges": [0.0, 0.5, 1.0], "counts": [1, 2, 3]}, [0.2]) is None
    assert confidence_psi({}, [0.2]) is None


def _broken(_session: Session, _now: datetime) -> list[Metric]:
    raise RuntimeError("boom")


def _fine(_session: Session, _now: datetime) -> list[Metric]:
    return [GaugeMetricFamily("triage_fine", "A collector that works.", value=1.0)]


def test_a_failing_collector_is_left_out_counted_and_logged_once_a_minute(
    session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    ticks = [1000.0]
    health = CollectorHealth(monotonic=lambda: ticks[0])
    collectors = (("fine", _fine), ("broken", _broken))

    def scrape() -> dict[str, Any]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DatabaseCollector(session_factory, health=health, collectors=collectors))
        return parse(generate_latest(registry).decode())

    with caplog.at_level(logging.ERROR, logger="app.metrics"):
        first, second = scrape(), scrape()
        ticks[0] += 61
        third = scrape()
    for families in (first, second, third):
        assert families["triage_fine"].samples[0].value == 1.0
    errors = {s.labels["collector"]: s.value for s in third["triage_metrics_collector_errors"].samples}
    assert errors == {"fine": 0.0, "broken": 3.0}
    logged = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(logged) == 2  # the first failure and the first after a minute, each with its traceback
    assert all(r.exc_info and "boom" in str(r.exc_info[1]) for r in logged)


def test_metrics_serve_on_an_empty_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRIAGE_DATABASE_URL", raising=False)
    settings = Settings()
    settings.home.mkdir(parents=True)
    upgrade_schema(make_engine(settings.effective_database_url))
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = parse(response.text)
    assert {name for name, _ in COLLECTORS} == {
        s.labels["collector"] for s in families["triage_metrics_collector_errors"].samples
    }
    assert all(s.value == 0 for s in families["triage_metrics_collector_errors"].samples)
    assert families["triage_drift_psi"].samples == []


def test_a_broken_table_costs_its_metrics_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector whose query fails (here: its table is gone) is left out; the rest still serve."""
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRIAGE_DATABASE_URL", raising=False)
    settings = Settings()
    settings.home.mkdir(parents=True)
    engine = make_engine(settings.effective_database_url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE source_status")
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    families = parse(response.text)
    errors = {s.labels["collector"]: s.value for s in families["triage_metrics_collector_errors"].samples}
    assert errors["sources"] == 1.0 and sum(errors.values()) == 1.0
    assert "triage_records_ingested" in families and "triage_source_errors" not in families


@pytest.mark.parametrize(
    "reference",
    [
        None,  # registered before drift references existed
        {"label_shares": {"pricing": 1.0}, "confidence_histogram": {"edges": [0, 1], "counts": [1, 2]}},
        {
            "label_shares": {"pricing": 0.5, "support": 0.5},
            "confidence_histogram": {"edges": [round(x / 10, 1) for x in range(11)], "counts": [1] * 10},
        },
    ],
)
def test_drift_of_any_registered_model_never_fails(
    session_factory: sessionmaker[Session], reference: dict[str, Any] | None
) -> None:
    now = datetime(2031, 5, 6, 12, 0, tzinfo=UTC)
    with session_factory() as session, session.begin():
        model_registry.add_version(
            session,
            version="m-1",
            artifact_path="x",
            provenance={"reference": reference} if reference else {},
            created_at=now - timedelta(days=30),
            status="active",
        )
    with session_factory() as session:
        assert drift_figures(session, now=now) == []  # no traffic in the window: no figure
    with session_factory() as session, session.begin():
        for intent in ["pricing", "support", "careers"]:
            insert_enquiry(
                session,
                at=now - timedelta(hours=2),
                intent=intent,
                created_at=now - timedelta(hours=1),
                model_version="m-1",
                confidence=0.42,
            )
    with session_factory() as session:
        figures = {kind: value for kind, _, value in drift_figures(session, now=now)}
    if reference is None:
        assert figures == {}
    elif len(reference["confidence_histogram"]["edges"]) == 2:
        assert set(figures) == {"predicted_class"}  # the histogram's layout cannot be read: left out
    else:
        assert set(figures) == {"predicted_class", "confidence"} and figures["confidence"] > 0.2
