"""The bundled starter training set, so a fresh install can train a first model with no data of its own."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.classifier import frame_from_texts
from models.errors import ConfigError

STARTER_FILE = Path(__file__).resolve().parent / "starter_data" / "train.csv"


def starter_training_frame(path: Path = STARTER_FILE) -> tuple[pd.DataFrame, list[str]]:
    """The starter examples (CSV with columns `text,label`) as a feature frame and its labels."""
    if not path.exists():
        raise ConfigError(
            f"the starter training file {path} is missing; reinstall the package or pass --data"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"text", "label"} <= set(table.columns):
        raise ConfigError(f"{path} must have columns text,label; it has {list(table.columns)}")
    table = table[table["label"].str.strip() != ""]
    return frame_from_texts(table["text"].tolist()), table["label"].str.strip().tolist()
