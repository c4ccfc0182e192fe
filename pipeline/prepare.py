"""The CPU-bound half of a batch: parse, enrich, classify. It needs no database.

So it can run in worker processes, on the next batch, while the main process writes the current one:
that is how a run uses both cores. Everything here is picklable: a `Preparer` travels to each worker
once (the pool's initializer), then only raw payloads and results cross the process boundary. Its
models travel as `ModelArtifact`s (a path and provenance) and each worker loads them itself, so the main
process never imports scikit-learn and no model is pickled through a pipe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from config.hook_mappings import HookMappings
from config.policy import LanePolicy
from connectors.enrichment import Firmographics
from models.artifact import ModelArtifact
from models.errors import SkippableError
from models.records import EnquiryIn, Enrichment, Prediction
from pipeline.enrich import enrich
from pipeline.isolation import DEFAULT_BUDGET_SECONDS, PrepareTimeout, RecordTimer, bisect, problem_text
from pipeline.normalise import RawPayload, normalise_payload

if TYPE_CHECKING:
    from models.scoring import Columns

NO_MODEL_VERSION = "none"


class Classifier(Protocol):
    """What the pipeline needs of a model (models.scoring.Scorer and models.classifier.TriageModel)."""

    @property
    def version(self) -> str: ...

    def predict(self, columns: Columns) -> list[Prediction]: ...


# A model in memory (tests, callers that already hold one), one to load where it is used, or none.
ModelSource = Classifier | ModelArtifact | None


def loaded(model: ModelSource) -> Classifier | None:
    return model.load_scorer() if isinstance(model, ModelArtifact) else model


@dataclass(frozen=True, slots=True)
class Prepared:
    """One raw record, interpreted: a quarantine reason, or an enquiry (with its enrichment and,
    unless it is an auto-reply, the model's prediction and the shadow model's, if one runs)."""

    enquiry: EnquiryIn | None
    problem: str | None = None
    enrichment: Enrichment | None = None
    prediction: Prediction | None = None
    shadow: Prediction | None = None


def feature_columns(enquiries: Sequence[EnquiryIn], enrichments: Sequence[Enrichment]) -> Columns:
    """The model's input columns (models.scoring.COLUMNS), as plain lists: no pandas in the workers."""
    return {
        "subject": [e.subject for e in enquiries],
        "body": [e.body for e in enquiries],
        "channel": [e.channel.value for e in enquiries],
        "free_mail": [e.free_mail for e in enrichments],
        "segment": [e.segment for e in enrichments],
    }


def no_model_predictions(count: int) -> list[Prediction]:
    """Without an active model nothing is automated: every enquiry goes to people."""
    return [
        Prediction(
            intent="other", confidence=0.0, threshold=1.0, abstained=True, model_version=NO_MODEL_VERSION
        )
        for _ in range(count)
    ]


@dataclass(frozen=True)
class Preparer:
    """Parse, enrich and classify a chunk of raw payloads; returns results and CPU seconds per stage
    (CPU, not wall: in a worker sharing the cores with the main process, wall time would count waiting)."""

    model: ModelSource
    firmographics: Firmographics
    lanes: LanePolicy
    max_body_chars: int
    shadow: ModelSource = None
    hook_mappings: HookMappings | None = None  # the policy's hooks.yaml: tools' fields → ours
    # Wall-clock seconds one record's parse may take (None: no limit); see pipeline.isolation.
    budget_seconds: float | None = DEFAULT_BUDGET_SECONDS

    def load_models(self) -> None:
        """Load the models now (a worker's start-up) rather than on its first chunk."""
        loaded(self.model)
        loaded(self.shadow)

    def __call__(self, items: Sequence[RawPayload]) -> tuple[list[Prepared], dict[str, float]]:
        """Prepare every item; never raises for one item's sake: whatever a record raises (or a budget
        it overruns) becomes that record's quarantine reason, and the others go on."""
        started = time.process_time()
        parsed: list[EnquiryIn | str] = []
        with RecordTimer(self.budget_seconds) as timer:
            for item in items:
                parsed.append(self._parse(item, timer))
        timings = {"normalise": time.process_time() - started}

        started = time.process_time()
        usable: list[EnquiryIn] = []
        enrichments: list[Enrichment] = []
        for index, entry in enumerate(parsed):
            if isinstance(entry, EnquiryIn) and not entry.skip_reason:
                try:
                    enrichments.append(enrich(entry, self.firmographics, self.lanes))
                except Exception as error:  # this record's enrichment, not the batch's
                    parsed[index] = problem_text(error, "could not be enriched")
                    continue
                usable.append(entry)
        timings["enrich"] = time.process_time() - started

        started = time.process_time()
        classified: list[tuple[Prediction, Prediction | None] | str] = []
        if usable:
            pairs = list(zip(usable, enrichments, strict=True))
            classified = bisect(
                pairs, self._classify, lambda _, error: problem_text(error, "could not be classified")
            )
        timings["classify"] = time.process_time() - started

        extra = iter(zip(enrichments, classified, strict=True))
        results: list[Prepared] = []
        for entry in parsed:
            if isinstance(entry, str):
                results.append(Prepared(None, problem=entry))
            elif entry.skip_reason:
                results.append(Prepared(entry))
            else:
                enrichment, outcome = next(extra)
                if isinstance(outcome, str):
                    results.append(Prepared(None, problem=outcome))
                else:
                    results.append(
                        Prepared(entry, enrichment=enrichment, prediction=outcome[0], shadow=outcome[1])
                    )
        return results, timings

    def _parse(self, item: RawPayload, timer: RecordTimer) -> EnquiryIn | str:
        try:
            timer.arm()
            try:
                return normalise_payload(
                    item, max_body_chars=self.max_body_chars, hook_mappings=self.hook_mappings
                )
            finally:
                timer.disarm()
        except PrepareTimeout as error:
            return problem_text(error)
        except SkippableError as error:
            return str(error) or error.__class__.__name__
        except Exception as error:  # any failure here is this one record's, never the batch's
            # A parser bug or a crafted message quarantines this record with the class and message.
            return problem_text(error)

    def _classify(
        self, pairs: Sequence[tuple[EnquiryIn, Enrichment]]
    ) -> list[tuple[Prediction, Prediction | None] | str]:
        """The model's (and the shadow's) predictions for these enquiries; raises when either fails,
        so `bisect` can find the one record at fault."""
        model, shadow = loaded(self.model), loaded(self.shadow)
        enquiries = [pair[0] for pair in pairs]
        columns = feature_columns(enquiries, [pair[1] for pair in pairs])
        predictions = model.predict(columns) if model is not None else no_model_predictions(len(enquiries))
        shadows: list[Prediction | None] = (
            list(shadow.predict(columns)) if shadow is not None else [None] * len(pairs)
        )
        if len(predictions) != len(pairs) or len(shadows) != len(pairs):
            raise ValueError(f"the model answered {len(predictions)} predictions for {len(pairs)} enquiries")
        return list(zip(predictions, shadows, strict=True))


_WORKER_PREPARER: Preparer | None = None


def init_worker(preparer: Preparer) -> None:
    """Pool initializer: load the models and keep the preparer in the worker for every chunk."""
    from threadpoolctl import threadpool_limits

    global _WORKER_PREPARER
    # One BLAS thread per worker: the workers already fill the cores, more threads only contend.
    threadpool_limits(1)
    preparer.load_models()
    _WORKER_PREPARER = preparer


def prepare_in_worker(items: list[RawPayload]) -> tuple[list[Prepared], dict[str, float]]:
    if _WORKER_PREPARER is None:
        raise RuntimeError("worker started without init_worker")
    return _WORKER_PREPARER(items)
