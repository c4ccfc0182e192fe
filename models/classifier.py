"""The intent classifier: one scikit-learn Pipeline, calibrated, that knows when to abstain.

The Pipeline turns an enquiry frame (FEATURE_COLUMNS) into word 1-2-gram and character 3-5-gram TF-IDF
features of subject and body plus one-hot structured features (channel, free mail, segment), then a
linear SVM whose scores are temperature-scaled into calibrated probabilities.

`TriageModel` wraps the fitted Pipeline with what the registry stores beside it: per-class thresholds,
the out-of-scope label, and class centroids used to notice text unlike anything seen in training. Its
`predict` returns `models.records.Prediction` objects with an explanation (the words that pushed the
chosen intent most), computed from the sparse row × coefficient products in one vectorised pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import LinearSVC
from sklearn.utils.parallel import Parallel, delayed

from models.records import Prediction
from models.scoring import Columns, Scorer, TextFeatures, Tokeniser

FEATURE_COLUMNS = ("subject", "body", "channel", "free_mail", "segment")
CHANNELS = ("email", "form", "chat", "unknown")
SEGMENTS = ("smb", "mid_market", "enterprise", "unknown")
# Long mails would make character n-grams slow; the opening of a message carries its intent.
DEFAULT_MAX_TEXT_CHARS = 3_000

FloatArray = npt.NDArray[np.float64]


def frame_from_texts(
    texts: Iterable[str],
    *,
    subjects: Iterable[str] | None = None,
    channels: Iterable[str] | None = None,
    free_mail: Iterable[bool] | None = None,
    segments: Iterable[str] | None = None,
) -> pd.DataFrame:
    """A feature frame from bare texts: text → body; missing columns get neutral values.

    Training files often hold only a text column; this is how they meet the structured model.
    """
    bodies = ["" if text is None else str(text) for text in texts]
    size = len(bodies)

    def column(values: Iterable[Any] | None, default: Any) -> list[Any]:
        if values is None:
            return [default] * size
        listed = list(values)
        if len(listed) != size:
            raise ValueError(f"expected {size} values for a feature column, got {len(listed)}")
        return listed

    return pd.DataFrame(
        {
            "subject": [str(value) for value in column(subjects, "")],
            "body": bodies,
            "channel": [str(value) for value in column(channels, "unknown")],
            "free_mail": [bool(value) for value in column(free_mail, False)],
            "segment": [str(value) for value in column(segments, "unknown")],
        },
        columns=list(FEATURE_COLUMNS),
    )


def check_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame restricted to FEATURE_COLUMNS with clean types; a missing column is an error."""
    missing = [name for name in FEATURE_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"feature frame lacks columns {missing}; expected {list(FEATURE_COLUMNS)}")
    return pd.DataFrame(
        {
            "subject": frame["subject"].fillna("").astype(str),
            "body": frame["body"].fillna("").astype(str),
            "channel": frame["channel"].fillna("unknown").astype(str),
            "free_mail": frame["free_mail"].fillna(False).astype(bool),
            "segment": frame["segment"].fillna("unknown").astype(str),
        }
    )


class TextJoiner(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Subject and body joined into one string per row, cut at `max_chars`, for the TF-IDF vectorisers."""

    def __init__(self, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> None:
        self.max_chars = max_chars

    def fit(self, X: pd.DataFrame, y: Any = None) -> TextJoiner:
        self.n_features_in_ = 2
        return self

    def transform(self, X: pd.DataFrame) -> npt.NDArray[np.object_]:
        subjects = X["subject"].fillna("").astype(str)
        bodies = X["body"].fillna("").astype(str)
        joined = (subjects + "\n" + bodies).str.slice(0, self.max_chars)
        texts: npt.NDArray[np.object_] = joined.to_numpy(dtype=object)
        return texts

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        return np.asarray(["text"], dtype=object)


def _as_logits(scores: FloatArray) -> FloatArray:
    """Decision scores as one column per class (a binary SVM gives one signed column)."""
    if scores.ndim == 1:
        return np.column_stack([-scores / 2.0, scores / 2.0])
    return scores


def fit_temperature(logits: FloatArray, y_index: npt.NDArray[np.intp]) -> float:
    """The temperature T minimising the log loss of softmax(logits / T) (Guo et al., 2017)."""
    rows = np.arange(len(y_index))

    def negative_log_likelihood(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y_index].mean())

    result = minimize_scalar(negative_log_likelihood, bounds=(-6.0, 4.0), method="bounded")
    return float(np.exp(result.x))


def _fit_one(estimator: Any, X: Any, labels: npt.NDArray[Any], rows: npt.NDArray[np.intp]) -> Any:
    return estimator.fit(X[rows], labels[rows])


class TemperatureCalibratedClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A linear classifier whose scores are temperature-scaled into calibrated probabilities.

    `fit` computes out-of-fold scores with `cv` stratified folds, fits the temperature on them, then fits
    the estimator on all rows: the calibration never sees in-sample scores (as CalibratedClassifierCV
    with ensemble=False, method="temperature"). The calibrated out-of-fold probabilities are kept in
    `oof_proba_` so training can choose abstention thresholds without fitting again; training deletes
    them before the model is stored.
    """

    def __init__(
        self, estimator: Any = None, cv: int = 5, random_state: int = 0, n_jobs: int | None = None
    ) -> None:
        self.estimator = estimator
        self.cv = cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Sequence[str] | npt.NDArray[Any]) -> TemperatureCalibratedClassifier:
        labels = np.asarray(y)
        self.classes_, y_index = np.unique(labels, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("training needs at least two labels")
        smallest = int(np.bincount(y_index).min())
        folds = min(self.cv, smallest)
        if folds < 2:
            raise ValueError("every label needs at least two examples to calibrate")
        base = clone(self.estimator) if self.estimator is not None else LinearSVC(C=0.5, tol=1e-3)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        splits = list(splitter.split(np.zeros(len(labels)), labels))
        # The folds and the final fit on all rows run in one parallel batch: 6 fits on 2 cores take
        # 3 rounds instead of the 4 that cross_val_predict followed by a final fit would take.
        everything = np.arange(len(labels))
        fitted = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_one)(clone(base), X, labels, rows)
            for rows in [*(train for train, _ in splits), everything]
        )
        oof_logits = np.zeros((len(labels), len(self.classes_)))
        for estimator, (_, held_out) in zip(fitted[:-1], splits, strict=True):
            if list(estimator.classes_) != list(self.classes_):
                raise ValueError("a cross-validation fold lacks a label; give every label more examples")
            oof_logits[held_out] = _as_logits(
                np.asarray(estimator.decision_function(X[held_out]), dtype=np.float64)
            )
        self.temperature_ = fit_temperature(oof_logits, y_index)
        self.oof_proba_ = softmax(oof_logits / self.temperature_, axis=1)
        self.estimator_ = fitted[-1]
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> FloatArray:
        """Calibrated logits: the estimator's scores divided by the temperature."""
        scores = np.asarray(self.estimator_.decision_function(X), dtype=np.float64)
        return _as_logits(scores) / self.temperature_

    def predict_proba(self, X: Any) -> FloatArray:
        return np.asarray(softmax(self.decision_function(X), axis=1))

    def predict(self, X: Any) -> npt.NDArray[Any]:
        return np.asarray(self.classes_[np.argmax(self.decision_function(X), axis=1)])

    def logit_coefficients(self) -> FloatArray:
        """Per-class weights of the calibrated logits (classes × features), for explanations."""
        coef = np.asarray(self.estimator_.coef_, dtype=np.float64)
        if coef.shape[0] == 1:
            coef = np.vstack([-coef[0] / 2.0, coef[0] / 2.0])
        return coef / self.temperature_

    def logit_intercept(self) -> FloatArray:
        """Per-class intercepts of the calibrated logits."""
        intercept = np.atleast_1d(np.asarray(self.estimator_.intercept_, dtype=np.float64))
        if intercept.shape[0] == 1:
            intercept = np.array([-intercept[0] / 2.0, intercept[0] / 2.0])
        return intercept / self.temperature_


def build_pipeline(*, seed: int = 0, folds: int = 5, c: float = 0.5, n_jobs: int | None = None) -> Pipeline:
    """The unfitted Pipeline: features (text TF-IDF + structured one-hot) → calibrated linear SVM."""
    text_features = Pipeline(
        [
            ("join", TextJoiner()),
            (
                "tfidf",
                FeatureUnion(
                    [
                        (
                            "word",
                            TfidfVectorizer(
                                ngram_range=(1, 2),
                                sublinear_tf=True,
                                max_features=60_000,
                                dtype=np.float32,
                                token_pattern=r"(?u)\b\w+\b",
                            ),
                        ),
                        (
                            "char",
                            TfidfVectorizer(
                                analyzer="char_wb",
                                ngram_range=(3, 5),
                                sublinear_tf=True,
                                min_df=2,
                                max_features=100_000,
                                dtype=np.float32,
                            ),
                        ),
                    ]
                ),
            ),
        ]
    )
    structured = OneHotEncoder(
        categories=[list(CHANNELS), [False, True], list(SEGMENTS)],
        handle_unknown="ignore",
        dtype=np.float32,
    )
    features = ColumnTransformer(
        [
            ("text", text_features, ["subject", "body"]),
            ("meta", structured, ["channel", "free_mail", "segment"]),
        ],
        sparse_threshold=1.0,
    )
    classifier = TemperatureCalibratedClassifier(
        LinearSVC(C=c, tol=1e-3), cv=folds, random_state=seed, n_jobs=n_jobs
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def class_centroids(
    text_matrix: sp.csr_matrix, y_index: npt.NDArray[np.intp], n_classes: int
) -> sp.csr_matrix:
    """Unit-length mean text vector of each class (classes × text features), sparse."""
    rows = _normalise_rows(text_matrix)
    indicator = sp.csr_matrix(
        (np.ones(len(y_index), dtype=np.float32), (y_index, np.arange(len(y_index)))),
        shape=(n_classes, len(y_index)),
    )
    return _normalise_rows(sp.csr_matrix(indicator @ rows))


def _normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags((1.0 / norms).astype(np.float32)) @ matrix, dtype=np.float32)


class TriageModel:
    """A fitted Pipeline plus what decides abstention; what training, evaluation and the registry use.

    An enquiry goes to people (abstained=True) when its calibrated confidence is below its intent's
    threshold, when the intent is the out-of-scope label, or when its text is unlike anything in training
    (cosine similarity to the nearest class centroid below `novelty_floor`).

    Prediction goes through a `models.scoring.Scorer` built from the fitted parts, not through the
    Pipeline's `transform`/`predict_proba`: their per-call validation and pandas indexing cost
    milliseconds, which would dominate single predictions (the tests check both give identical features
    and probabilities). The same Scorer, saved as arrays, is what the pipeline's workers load.
    """

    def __init__(
        self,
        *,
        version: str,
        pipeline: Pipeline,
        thresholds: dict[str, float],
        centroids: sp.csr_matrix,
        novelty_floor: float,
        oos_label: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.centroids = sp.csr_matrix(centroids, dtype=np.float32)
        classifier: TemperatureCalibratedClassifier = pipeline.named_steps["classifier"]
        features: ColumnTransformer = pipeline.named_steps["features"]
        text_pipeline: Pipeline = features.named_transformers_["text"]
        union: FeatureUnion = text_pipeline.named_steps["tfidf"]
        text_block, meta_block = features.output_indices_["text"], features.output_indices_["meta"]
        if text_block.start != 0 or meta_block.start != text_block.stop:
            raise ValueError(f"unexpected feature layout {features.output_indices_}")  # the Scorer's layout
        encoder: OneHotEncoder = features.named_transformers_["meta"]
        self.scorer = Scorer(
            version=version,
            labels=tuple(str(label) for label in classifier.classes_),
            thresholds={str(label): float(value) for label, value in thresholds.items()},
            novelty_floor=float(novelty_floor),
            oos_label=oos_label,
            max_chars=int(text_pipeline.named_steps["join"].max_chars),
            word=_text_features(union.transformer_list[0][1]),
            char=_text_features(union.transformer_list[1][1]),
            categories=tuple(tuple(values.tolist()) for values in encoder.categories_),
            # Calibrated logits = X · W + b; kept transposed, float32, for one sparse × dense product.
            weights=np.ascontiguousarray(classifier.logit_coefficients().T, dtype=np.float32),
            bias=classifier.logit_intercept().astype(np.float32),
            centroids=self.centroids,
        )

    # Registration names the version and training sets the novelty floor after construction.
    @property
    def version(self) -> str:
        return self.scorer.version

    @version.setter
    def version(self, value: str) -> None:
        self.scorer.version = value

    @property
    def novelty_floor(self) -> float:
        return self.scorer.novelty_floor

    @novelty_floor.setter
    def novelty_floor(self, value: float) -> None:
        self.scorer.novelty_floor = float(value)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.scorer.labels

    @property
    def thresholds(self) -> dict[str, float]:
        return self.scorer.thresholds

    @property
    def oos_label(self) -> str | None:
        return self.scorer.oos_label

    def features(self, frame: pd.DataFrame | Columns) -> sp.csr_matrix:
        """The Pipeline's feature matrix for `frame`, computed without its per-call overhead."""
        return self.scorer.features(_columns(frame))

    def predict_arrays(self, frame: pd.DataFrame | Columns) -> dict[str, Any]:
        """Raw arrays for a batch (see `Scorer.predict_arrays`)."""
        return self.scorer.predict_arrays(_columns(frame))

    def similarity(self, matrix: sp.csr_matrix) -> FloatArray:
        return self.scorer.similarity(matrix)

    def predict(self, frame: pd.DataFrame | Columns) -> list[Prediction]:
        """One Prediction per row of `frame` (FEATURE_COLUMNS), in order."""
        return self.scorer.predict(_columns(frame))


def _text_features(vectoriser: TfidfVectorizer) -> TextFeatures:
    return TextFeatures(
        Tokeniser.from_vectoriser(vectoriser),
        np.asarray(vectoriser.get_feature_names_out(), dtype=np.str_),
        np.asarray(vectoriser.idf_, dtype=np.float32),
        sublinear_tf=bool(vectoriser.sublinear_tf),
    )


def _columns(frame: pd.DataFrame | Columns) -> Columns:
    """Plain column lists; a DataFrame missing a column is refused by the scorer with its name."""
    if isinstance(frame, pd.DataFrame):
        return {name: frame[name].tolist() for name in FEATURE_COLUMNS if name in frame.columns}
    return frame
