"""Shared pieces for pipeline tests: a transparent keyword model, firmographics, storing raw records."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from config.policy import load_policy
from config.settings import DEFAULT_POLICY_DIR
from connectors.enrichment import Company, Firmographics
from models.records import Channel, Prediction, RawRecordIn
from pipeline.process import PipelineContext
from sla.policies import load_policies
from sla.service import timer_starter
from store import raw
from store.db import transaction
from tests.builders import T0

FIRMS = Firmographics(
    {
        "brightwater-analytics.com": Company(
            "brightwater-analytics.com", "Brightwater Analytics", "Software", 60, "US"
        ),
        "megacorp-industries.com": Company(
            "megacorp-industries.com", "Megacorp Industries", "Manufacturing", 20000, "DE"
        ),
    },
    frozenset({"gmail.com"}),
)


class KeywordModel:
    """A transparent stand-in for a trained model: it is the pipeline under test, not the classifier."""

    version = "test-keywords"

    def predict(self, frame: pd.DataFrame) -> list[Prediction]:
        out = []
        for subject, body in zip(frame["subject"], frame["body"], strict=True):
            text = f"{subject} {body}".lower()
            intent = "spam" if "casino" in text else "pricing" if "cost" in text else "sales_demo"
            confident = "maybe" not in text
            out.append(
                Prediction(
                    intent=intent,
                    confidence=0.97 if confident else 0.4,
                    threshold=0.8,
                    abstained=not confident,
                    explanation=(("demo", 0.5),),
                    model_version=self.version,
                )
            )
        return out


@pytest.fixture
def context() -> PipelineContext:
    return PipelineContext(
        policy=load_policy(DEFAULT_POLICY_DIR),
        firmographics=FIRMS,
        model=KeywordModel(),
        start_timers=timer_starter(load_policies()),
    )


def store(
    factory: sessionmaker[Session], channel: Channel, payloads: list[bytes], source: str = "test"
) -> None:
    records = [
        RawRecordIn(
            source=source, channel=channel, external_key=f"{channel.value}-{i}", payload=p, received_at=T0
        )
        for i, p in enumerate(payloads)
    ]
    with transaction(factory) as session:
        raw.save_batch(session, records, source=source, state={"n": len(records)}, now=T0)


class ShadowKeywordModel(KeywordModel):
    """A candidate that disagrees on purpose: it calls everything support."""

    version = "test-shadow"

    def predict(self, frame: pd.DataFrame) -> list[Prediction]:
        return [
            p.model_copy(update={"intent": "support", "model_version": self.version})
            for p in super().predict(frame)
        ]
