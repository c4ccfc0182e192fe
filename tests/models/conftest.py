"""Fixtures for the model tests: a small synthetic intent set (fast) and BANKING77 (slow, shared)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.orm import Session

from models import registry
from models.classifier import frame_from_texts
from models.training import TrainResult, train_model
from store.tables import Correction, Enquiry, ShadowPrediction
from tests.builders import insert_enquiry
from tests.conftest import shared_data

OOS = "not_ours"
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

_PHRASES = {
    "billing": [
        "our invoice shows the wrong amount",
        "please refund the duplicate charge",
        "update the billing address",
        "the credit card payment failed",
        "send a copy of last month's invoice",
        "we were charged twice",
    ],
    "sales_demo": [
        "could we book a demo for our team",
        "we want to see the product in a live demo",
        "schedule a walkthrough of the platform",
        "show our sales managers a demo",
        "is a trial or demo possible next week",
        "arrange a product presentation",
    ],
    "support": [
        "the export button throws an error",
        "login fails with a timeout",
        "the dashboard will not load",
        "sync with the calendar is broken",
        "we get an error when uploading files",
        "the app crashes on start",
    ],
    "careers": [
        "are you hiring data engineers",
        "I want to apply for the open designer job",
        "do you offer internships for students",
        "please consider my application and CV",
        "is the backend developer position still open",
        "what is the recruitment process for engineers",
    ],
    OOS: [
        "the football match ended two nil",
        "recipe for banana bread without eggs",
        "what is the weather in paris tomorrow",
        "my cat sleeps all day on the sofa",
        "who won the song contest this year",
        "the hiking trail was muddy after rain",
    ],
}
_OPENERS = ["hello,", "hi team,", "good morning,", "dear all,", "", "hey,"]
_CLOSERS = ["thanks", "regards", "cheers", "", "thank you very much", "best wishes"]


def toy_rows(per_label: int = 30, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Short synthetic enquiries for four intents and an out-of-scope label."""
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for label, phrases in _PHRASES.items():
        for _ in range(per_label):
            texts.append(f"{rng.choice(_OPENERS)} {rng.choice(phrases)}. {rng.choice(_CLOSERS)}".strip())
            labels.append(label)
    return frame_from_texts(texts), labels


@pytest.fixture(scope="session")
def toy_data() -> tuple[pd.DataFrame, list[str]]:
    return toy_rows()


@pytest.fixture(scope="session")
def toy_result(toy_data: tuple[pd.DataFrame, list[str]]) -> TrainResult:
    frame, labels = toy_data
    return train_model(frame, labels, oos_label=OOS, n_jobs=None)


@pytest.fixture(scope="session")
def toy_result_b() -> TrainResult:
    """A second, different model (other examples, other seed) for promotion and rollback."""
    frame, labels = toy_rows(per_label=12, seed=7)
    return train_model(frame, labels, oos_label=OOS, seed=3, n_jobs=None)


@pytest.fixture(autouse=True)
def _fresh_model_cache() -> None:
    registry.clear_cache()


@dataclass
class Banking77:
    result: TrainResult
    test_frame: pd.DataFrame
    test_labels: list[str]
    oos_intents: list[str]


@pytest.fixture(scope="session")
def banking77() -> Banking77:
    """BANKING77 trained once, with every tenth intent relabelled out of scope (so OOS is tested too)."""
    folder = shared_data("banking77")
    train = pd.read_csv(folder / "train.csv")
    test = pd.read_csv(folder / "test.csv")
    intents = sorted(train["category"].unique())
    oos_intents = intents[::10]

    def relabel(values: pd.Series) -> list[str]:
        return [OOS if value in oos_intents else value for value in values]

    result = train_model(frame_from_texts(train["text"]), relabel(train["category"]), oos_label=OOS)
    return Banking77(result, frame_from_texts(test["text"]), relabel(test["category"]), oos_intents)


def add_enquiry(
    session: Session,
    *,
    body: str,
    intent: str,
    model_version: str,
    lane: str = "automate",
    subject: str = "",
    enrichment: dict[str, Any] | None = None,
) -> str:
    """An enquiry row (with its raw record) as the pipeline would have stored it; returns its id."""
    return insert_enquiry(
        session,
        at=NOW,
        subject=subject,
        body=body,
        intent=intent,
        model_version=model_version,
        lane=lane,
        enrichment=enrichment or {"free_mail": False, "segment": "smb"},
        queue="q",
        status="done",
    )


def add_correction(session: Session, enquiry_id: str, *, intent: str, minutes: int = 1) -> None:
    """A person's correction, as the review service records it (the enquiry takes the new intent)."""
    enquiry = session.get(Enquiry, enquiry_id)
    assert enquiry is not None
    session.add(
        Correction(
            enquiry_id=enquiry_id,
            corrected_by="sam",
            intent=intent,
            priority="normal",
            queue="q",
            previous={"intent": enquiry.intent, "priority": "normal", "queue": "q"},
            model_version=enquiry.model_version,
            created_at=NOW + timedelta(minutes=minutes),
        )
    )
    enquiry.intent = intent
    session.flush()


def add_shadow(
    session: Session, enquiry_id: str, *, version: str, intent: str, abstained: bool = False
) -> None:
    session.add(
        ShadowPrediction(
            enquiry_id=enquiry_id,
            model_version=version,
            intent=intent,
            confidence=0.8,
            abstained=abstained,
            created_at=NOW,
        )
    )
    session.flush()


def write_csv(path: Path, frame: pd.DataFrame, labels: list[str]) -> Path:
    pd.DataFrame({"text": frame["body"], "label": labels}).to_csv(path, index=False)
    return path
