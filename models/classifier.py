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
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import LinearSVC
from sklearn.utils.parallel import Parallel, delayed

from models.records import Prediction

FEATURE_COLUMNS = ("subject", "body", "channel", "free_mail", "segment")
CHANNELS = ("email", "form", "chat", "unknown")
SEGMENTS = ("smb", "mid_market", "enterprise", "unknown")
EXPLANATION_TERMS = 5
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


def _text(value: Any) -> str:
    """A cell as text; None and NaN (pandas' missing value) become the empty string."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _tfidf(vectoriser: TfidfVectorizer, texts: list[str]) -> sp.csr_matrix:
    """`vectoriser.transform(texts)` without the input validation that dominates small batches: the
    counts come from CountVectorizer, then the same sublinear tf, idf weighting and L2 norm."""
    matrix = sp.csr_matrix(CountVectorizer.transform(vectoriser, texts), dtype=np.float32)
    if vectoriser.sublinear_tf:
        np.log(matrix.data, out=matrix.data)
        matrix.data += 1.0
    matrix.data *= vectoriser.idf_[matrix.indices]
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    norms = np.sqrt(np.bincount(rows, weights=matrix.data.astype(np.float64) ** 2, minlength=matrix.shape[0]))
    norms[norms == 0] = 1.0
    matrix.data /= norms[rows].astype(np.float32)
    return matrix


class TriageModel:
    """A fitted Pipeline plus what decides abstention; what the registry loads and the pipeline calls.

    An enquiry goes to people (abstained=True) when its calibrated confidence is below its intent's
    threshold, when the intent is the out-of-scope label, or when its text is unlike anything in training
    (cosine similarity to the nearest class centroid below `novelty_floor`).

    `predict` does not call the Pipeline's `transform`/`predict_proba`: their per-call validation and
    pandas indexing cost milliseconds, which would dominate single predictions. It applies the same fitted
    parts directly (the tests check that both paths give identical features and probabilities).
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
        self.version = version
        self.pipeline = pipeline
        self.thresholds = {str(label): float(value) for label, value in thresholds.items()}
        self.centroids = sp.csr_matrix(centroids, dtype=np.float32)
        self.novelty_floor = float(novelty_floor)
        self.oos_label = oos_label
        classifier: TemperatureCalibratedClassifier = pipeline.named_steps["classifier"]
        self.labels: tuple[str, ...] = tuple(str(label) for label in classifier.classes_)
        missing = [label for label in self.labels if label not in self.thresholds]
        if missing:
            raise ValueError(f"no threshold for labels {missing}")
        self._threshold_array = np.array([self.thresholds[label] for label in self.labels])
        self._oos_index = self.labels.index(oos_label) if oos_label in self.labels else -1

        features: ColumnTransformer = pipeline.named_steps["features"]
        text_pipeline: Pipeline = features.named_transformers_["text"]
        self._max_chars = int(text_pipeline.named_steps["join"].max_chars)
        union: FeatureUnion = text_pipeline.named_steps["tfidf"]
        self._word: TfidfVectorizer = union.transformer_list[0][1]
        self._char: TfidfVectorizer = union.transformer_list[1][1]
        self._text_slice: slice = features.output_indices_["text"]
        meta_slice: slice = features.output_indices_["meta"]
        self._n_features = max(part.stop for part in features.output_indices_.values())
        encoder: OneHotEncoder = features.named_transformers_["meta"]
        # value → output column, per structured column, as OneHotEncoder lays them out.
        self._meta_columns: list[dict[Any, int]] = []
        offset = meta_slice.start
        for categories in encoder.categories_:
            self._meta_columns.append({value: offset + position for position, value in enumerate(categories)})
            offset += len(categories)

        # Calibrated logits = X · W + b; kept transposed, float32, for one sparse × dense product per batch.
        self._weights = np.ascontiguousarray(classifier.logit_coefficients().T, dtype=np.float32)
        self._bias = classifier.logit_intercept().astype(np.float32)

        word_names = self._word.get_feature_names_out()
        meta_names = encoder.get_feature_names_out(["channel", "free_mail", "segment"])
        # Only readable features explain: words and structured values. Character n-grams also vote, but
        # "ard a" tells a reviewer nothing, so their explaining weight is zero. Full width, so that a
        # batch's matrix is used as it is (column slicing a sparse matrix costs more than the products).
        readable = np.zeros(self._n_features, dtype=bool)
        readable[self._text_slice.start : self._text_slice.start + len(word_names)] = True
        readable[meta_slice] = True
        self._explained_names = np.full(self._n_features, "", dtype=object)
        self._explained_names[self._text_slice.start : self._text_slice.start + len(word_names)] = word_names
        self._explained_names[meta_slice] = meta_names
        self._explained_weights = np.ascontiguousarray((self._weights * readable[:, None]).T)
        # Centroids transposed once, padded to the full feature width (zero outside the text block).
        padded = sp.hstack(
            [
                sp.csr_matrix((self.centroids.shape[0], self._text_slice.start), dtype=np.float32),
                self.centroids,
                sp.csr_matrix(
                    (self.centroids.shape[0], self._n_features - self._text_slice.stop), dtype=np.float32
                ),
            ],
            format="csr",
        )
        self._centroids_t = sp.csr_matrix(padded.T, dtype=np.float32)

    def features(self, frame: pd.DataFrame) -> sp.csr_matrix:
        """The Pipeline's feature matrix for `frame`, computed without its per-call overhead."""
        missing = [name for name in FEATURE_COLUMNS if name not in frame.columns]
        if missing:
            raise ValueError(f"feature frame lacks columns {missing}; expected {list(FEATURE_COLUMNS)}")
        texts = [
            f"{_text(subject)}\n{_text(body)}"[: self._max_chars]
            for subject, body in zip(frame["subject"].tolist(), frame["body"].tolist(), strict=True)
        ]
        word = _tfidf(self._word, texts)
        char = _tfidf(self._char, texts)
        columns: list[int] = []
        rows: list[int] = []
        structured = zip(
            frame["channel"].tolist(), frame["free_mail"].tolist(), frame["segment"].tolist(), strict=True
        )
        for row, (channel, free_mail, segment) in enumerate(structured):
            values = (
                _text(channel) if _text(channel) else "unknown",
                bool(free_mail) if free_mail is not None and free_mail == free_mail else False,
                _text(segment) if _text(segment) else "unknown",
            )
            for mapping, value in zip(self._meta_columns, values, strict=True):
                column = mapping.get(value)
                if column is not None:
                    rows.append(row)
                    columns.append(column)
        width = self._n_features - word.shape[1] - char.shape[1]
        start = word.shape[1] + char.shape[1]
        meta = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, [column - start for column in columns])),
            shape=(len(texts), width),
        )
        return sp.csr_matrix(sp.hstack([word, char, meta], format="csr"), dtype=np.float32)

    def predict_arrays(self, frame: pd.DataFrame) -> dict[str, Any]:
        """Raw arrays for a batch: feature matrix, probabilities, chosen index, confidence, similarity,
        abstained."""
        matrix = self.features(frame)
        logits = np.asarray(matrix @ self._weights, dtype=np.float64) + self._bias
        probabilities = softmax(logits, axis=1)
        chosen = np.argmax(probabilities, axis=1)
        confidence = probabilities[np.arange(len(chosen)), chosen]
        similarity = self.similarity(matrix)
        thresholds = self._threshold_array[chosen]
        abstained = (
            (confidence < thresholds)
            | (thresholds >= 1.0)
            | (similarity < self.novelty_floor)
            | (chosen == self._oos_index)
        )
        return {
            "matrix": matrix,
            "probabilities": probabilities,
            "chosen": chosen,
            "confidence": confidence,
            "similarity": similarity,
            "abstained": abstained,
        }

    def similarity(self, matrix: sp.csr_matrix) -> FloatArray:
        """Cosine similarity of each row's text features to the nearest class centroid, from the full
        feature matrix (structured columns do not count)."""
        in_text = (matrix.indices >= self._text_slice.start) & (matrix.indices < self._text_slice.stop)
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        squares = np.bincount(
            rows,
            weights=np.where(in_text, matrix.data.astype(np.float64) ** 2, 0.0),
            minlength=matrix.shape[0],
        )
        norms = np.sqrt(squares)
        norms[norms == 0] = 1.0
        scores = np.asarray((matrix @ self._centroids_t).toarray(), dtype=np.float64).max(axis=1)
        similarity: FloatArray = scores / norms
        return similarity

    def explain(
        self, matrix: sp.csr_matrix, chosen: npt.NDArray[np.intp]
    ) -> list[tuple[tuple[str, float], ...]]:
        """Top terms per row by contribution (feature value × weight) to the chosen intent's logit."""
        explained = matrix
        counts = np.diff(explained.indptr)
        row_of_entry = np.repeat(np.arange(explained.shape[0]), counts)
        contributions = explained.data * self._explained_weights[chosen[row_of_entry], explained.indices]
        # Entries sorted by row, then by falling contribution; keep the first few positive ones per row.
        order = np.lexsort((-contributions, row_of_entry))
        rank = np.arange(len(order)) - np.repeat(explained.indptr[:-1], counts)
        keep = (rank < EXPLANATION_TERMS) & (contributions[order] > 0)
        result: list[list[tuple[str, float]]] = [[] for _ in range(explained.shape[0])]
        for row, column, weight in zip(
            row_of_entry[order][keep].tolist(),
            explained.indices[order][keep].tolist(),
            contributions[order][keep].tolist(),
            strict=True,
        ):
            result[row].append((str(self._explained_names[column]), round(weight, 4)))
        return [tuple(terms) for terms in result]

    def predict(self, frame: pd.DataFrame) -> list[Prediction]:
        """One Prediction per row of `frame` (FEATURE_COLUMNS), in order."""
        if len(frame) == 0:
            return []
        arrays = self.predict_arrays(frame)
        explanations = self.explain(arrays["matrix"], arrays["chosen"])
        labels = self.labels
        thresholds = self._threshold_array.tolist()
        return [
            Prediction(
                intent=labels[index],
                confidence=min(max(confidence, 0.0), 1.0),
                threshold=thresholds[index],
                abstained=abstained,
                explanation=explanation,
                model_version=self.version,
            )
            for index, confidence, abstained, explanation in zip(
                arrays["chosen"].tolist(),
                arrays["confidence"].tolist(),
                arrays["abstained"].tolist(),
                explanations,
                strict=True,
            )
        ]
