"""What the poison-record tests run in worker processes: importable, so forkserver workers find it."""

from __future__ import annotations

import os
import time
from typing import Any

from models.records import Prediction
from tests.support.pipeline_support import KeywordModel


class FragileModel(KeywordModel):
    """A classifier with a bug one input triggers: the whole batch's predict raises for it."""

    version = "test-fragile"

    def predict(self, frame: Any) -> list[Prediction]:
        if any("BOOM" in body for body in frame["body"]):
            raise ZeroDivisionError("the model divided by zero")
        return super().predict(frame)


def nothing() -> None:
    """A worker initializer with nothing to set up."""


def hang_in_c_on_seven(items: list[int]) -> list[int]:
    """Stuck where no signal helps (no per-record timer runs here): the watchdog must kill it."""
    if 7 in items:
        time.sleep(3_600)
    return list(items)


def die_on_seven(items: list[int]) -> list[int]:
    """A worker that dies outright (as a segfault or the OOM killer would end it)."""
    if 7 in items:
        os._exit(9)
    return list(items)
