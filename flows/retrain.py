"""The nightly retrain flow: a thin Prefect wrapper around `models.retraining.retrain`.

It builds and registers a candidate and compares it with the active model; it never promotes. The
nightly schedule lives in flows/deployments.py (`retrain_cron`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from config.settings import Settings
from models.datafiles import read_labelled_file
from models.retraining import retrain
from store.db import make_engine, make_session_factory, upgrade_schema


@task(name="retrain-candidate")
def retrain_task(
    target_precision: float, base_data: str | None, text_col: str, label_col: str, oos_label: str | None
) -> dict[str, Any]:
    """Train, register and compare one candidate (no retries: a failed training is not passing)."""
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade_schema(engine)
        factory = make_session_factory(engine)
        base_frame = None
        if base_data:
            frame, labels = read_labelled_file(Path(base_data), text_col=text_col, label_col=label_col)
            base_frame = frame.assign(label=labels)
        return retrain(
            factory,
            settings.home,
            base_frame=base_frame,
            target_precision=target_precision,
            oos_label=oos_label,
        )
    finally:
        engine.dispose()


@flow(name="retrain")
def retrain_flow(
    target_precision: float = 0.95,
    base_data: str | None = None,
    text_col: str = "text",
    label_col: str = "label",
    oos_label: str | None = None,
) -> dict[str, Any]:
    """Build a candidate from base data (the starter set unless `base_data` names a CSV/JSONL file) plus
    people's corrections, evaluate it beside the active model, and stop there."""
    return retrain_task(target_precision, base_data, text_col, label_col, oos_label)
