"""Labelled training and evaluation files (CSV or JSONL) read into a feature frame and labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.classifier import frame_from_texts
from models.errors import ConfigError

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def read_labelled_file(
    path: Path,
    *,
    text_col: str,
    label_col: str,
    subject_col: str | None = None,
    channel_col: str | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of a CSV or JSONL file as (feature frame, labels); rows without a label are dropped.

    The text column becomes the body; a subject or channel column is used when named.
    """
    if not path.exists():
        raise ConfigError(f"data file {path} does not exist")
    try:
        if path.suffix.lower() in JSONL_SUFFIXES:
            table = pd.read_json(path, lines=True, dtype=False)
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    wanted = [name for name in (text_col, label_col, subject_col, channel_col) if name]
    missing = [name for name in wanted if name not in table.columns]
    if missing:
        raise ConfigError(f"{path} has no column(s) {missing}; its columns are {list(table.columns)}")
    labels = table[label_col].fillna("").astype(str).str.strip()
    table = table[labels != ""]
    labels = labels[labels != ""]
    frame = frame_from_texts(
        table[text_col].fillna("").astype(str).tolist(),
        subjects=table[subject_col].fillna("").astype(str).tolist() if subject_col else None,
        channels=table[channel_col].fillna("unknown").astype(str).tolist() if channel_col else None,
    )
    return frame, labels.tolist()
