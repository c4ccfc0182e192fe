"""A trained model's scoring half as plain arrays: no scikit-learn, no pandas, no pickle.

`Scorer` holds what turns enquiries into calibrated predictions: the fitted vocabularies and IDF
weights, the calibrated logit weights, per-intent thresholds, the out-of-scope label and the class
centroids that notice text unlike anything in training. `models.classifier.TriageModel` builds one from
its fitted Pipeline and predicts through it. The registry also saves it as `scorer.npz` beside the skops
artifact, so the pipeline's worker processes load a model with numpy alone (`np.load(...,
allow_pickle=False)`) in a fraction of a second, where importing scikit-learn and skops costs two to
three seconds per process.

Tokenising follows the fitted vectorisers' settings (lower case; word n-grams from the token pattern;
`char_wb` character n-grams); `Tokeniser.from_vectoriser` refuses settings it does not reproduce, and
`tests/models/test_scoring.py` holds its counts to scikit-learn's own.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.errors import FatalError
from models.records import Prediction

EXPLANATION_TERMS = 5
WORD_CACHE_SIZE = 200_000  # distinct words whose character n-gram columns are kept (a few tens of MB)
SCORER_FORMAT = 1
# The feature columns a scorer reads (models.classifier.FEATURE_COLUMNS).
COLUMNS = ("subject", "body", "channel", "free_mail", "segment")
# What scikit-learn's CountVectorizer collapses before cutting character n-grams.
_WHITE_SPACES = re.compile(r"\s\s+")

FloatArray = npt.NDArray[np.float64]
Columns = Mapping[str, Sequence[Any]]


@dataclass(frozen=True)
class Tokeniser:
    """The terms of one text, as a fitted word or `char_wb` vectoriser cuts them."""

    analyzer: str  # "word" | "char_wb"
    ngram_range: tuple[int, int]
    token_pattern: str = r"(?u)\b\w\w+\b"
    lowercase: bool = True

    @classmethod
    def from_vectoriser(cls, vectoriser: Any) -> Tokeniser:
        """The tokeniser of a fitted TfidfVectorizer; settings it cannot reproduce are an error."""
        unsupported = {
            name: getattr(vectoriser, name)
            for name, default in (
                ("input", "content"),
                ("preprocessor", None),
                ("tokenizer", None),
                ("stop_words", None),
                ("strip_accents", None),
                ("binary", False),
                ("use_idf", True),
                ("norm", "l2"),
            )
            if getattr(vectoriser, name) != default
        }
        if vectoriser.analyzer not in ("word", "char_wb"):
            unsupported["analyzer"] = vectoriser.analyzer
        if vectoriser.analyzer == "word" and re.compile(vectoriser.token_pattern).groups > 0:
            unsupported["token_pattern"] = vectoriser.token_pattern
        if unsupported:
            raise ValueError(f"the scorer cannot reproduce these vectoriser settings: {unsupported}")
        return cls(
            vectoriser.analyzer,
            tuple(vectoriser.ngram_range),
            vectoriser.token_pattern,
            bool(vectoriser.lowercase),
        )

    def terms(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        low, high = self.ngram_range
        if self.analyzer == "word":
            return _word_ngrams(re.findall(self.token_pattern, text), low, high)
        return _char_wb_ngrams(_WHITE_SPACES.sub(" ", text), low, high)


def _word_ngrams(tokens: list[str], low: int, high: int) -> list[str]:
    terms = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        terms.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return terms


def _char_wb_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside word boundaries, each word padded with one space on either side; a word
    shorter than n gives itself once."""
    terms: list[str] = []
    sizes = range(low, high + 1)
    for word in text.split():
        padded = f" {word} "
        length = len(padded)
        if length > high:  # the common case: every size fits
            terms += [padded[i : i + n] for n in sizes for i in range(length - n + 1)]
            continue
        for n in sizes:
            if length <= n:
                terms.append(padded)
                break
            terms += [padded[i : i + n] for i in range(length - n + 1)]
    return terms


@dataclass
class TextFeatures:
    """One fitted TF-IDF block: tokeniser, vocabulary (term → column) and IDF weights."""

    tokeniser: Tokeniser
    terms: npt.NDArray[np.str_]
    idf: npt.NDArray[np.float32]
    sublinear_tf: bool
    vocabulary: dict[str, int] = field(init=False, repr=False)
    _word_columns: dict[str, list[int]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.vocabulary = {term: index for index, term in enumerate(self.terms.tolist())}

    def columns(self, text: str) -> list[int]:
        """The vocabulary column of every known term of `text`, repeated as often as the term occurs."""
        if self.tokeniser.analyzer != "char_wb":
            return [
                column
                for column in map(self.vocabulary.get, self.tokeniser.terms(text))
                if column is not None
            ]
        # A word's character n-grams depend on the word alone, and words repeat (Zipf): cut each distinct
        # word once and keep its columns. The most common words stay cached; the cache stops growing.
        cache, vocabulary, (low, high) = self._word_columns, self.vocabulary, self.tokeniser.ngram_range
        found: list[int] = []
        for word in (text.lower() if self.tokeniser.lowercase else text).split():
            known = cache.get(word)
            if known is None:
                known = [vocabulary[term] for term in _char_wb_ngrams(word, low, high) if term in vocabulary]
                if len(cache) < WORD_CACHE_SIZE:
                    cache[word] = known
            found += known
        return found

    def matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Sublinear TF × IDF, rows L2-normalised, as TfidfVectorizer.transform computes it."""
        indices: list[int] = []
        indptr = [0]
        for text in texts:
            indices += self.columns(text)
            indptr.append(len(indices))
        # One entry per occurrence; sum_duplicates turns them into sorted counts, in C.
        matrix = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int32), indptr),
            shape=(len(texts), len(self.terms)),
        )
        matrix.sum_duplicates()
        if self.sublinear_tf:
            np.log(matrix.data, out=matrix.data)
            matrix.data += 1.0
        matrix.data *= self.idf[matrix.indices]
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        norms = np.sqrt(np.bincount(rows, weights=matrix.data.astype(np.float64) ** 2, minlength=len(texts)))
        norms[norms == 0] = 1.0
        matrix.data /= norms[rows].astype(np.float32)
        return matrix


def _text(value: Any) -> str:
    """A cell as text; None and NaN (pandas' missing value) become the empty string."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: FloatArray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


@dataclass
class Scorer:
    """Everything prediction needs, as arrays. Features are laid out as the Pipeline lays them out:
    word block, character block (together the text block), then the one-hot structured columns."""

    version: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    novelty_floor: float
    oos_label: str | None
    max_chars: int
    word: TextFeatures
    char: TextFeatures
    categories: tuple[tuple[Any, ...], ...]  # channel values, free-mail values, segment values
    weights: npt.NDArray[np.float32]  # features × classes, calibrated logits
    bias: npt.NDArray[np.float32]
    centroids: sp.csr_matrix  # classes × text features, unit length
    explained_names: npt.NDArray[np.str_] = field(init=False, repr=False)
    explained_weights: npt.NDArray[np.float32] = field(init=False, repr=False)
    centroids_t: sp.csr_matrix = field(init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [label for label in self.labels if label not in self.thresholds]
        if missing:
            raise ValueError(f"no threshold for labels {missing}")
        self.text_width = len(self.word.terms) + len(self.char.terms)
        self.n_features = self.text_width + sum(len(values) for values in self.categories)
        # value → output column, per structured column, as OneHotEncoder lays them out.
        self.meta_columns: list[dict[Any, int]] = []
        offset = self.text_width
        for values in self.categories:
            self.meta_columns.append({value: offset + position for position, value in enumerate(values)})
            offset += len(values)
        # Only readable features explain: words and structured values. Character n-grams also vote, but
        # "ard a" tells a reviewer nothing, so their explaining weight is zero.
        names = np.full(self.n_features, "", dtype=object)
        names[: len(self.word.terms)] = self.word.terms.tolist()
        meta_names = [
            f"{column}_{value}"
            for column, values in zip(("channel", "free_mail", "segment"), self.categories, strict=True)
            for value in values
        ]
        names[self.text_width :] = meta_names
        self.explained_names = names
        readable = names != ""
        self.explained_weights = np.ascontiguousarray((self.weights * readable[:, None]).T)
        padded = sp.hstack(
            [
                self.centroids,
                sp.csr_matrix((self.centroids.shape[0], self.n_features - self.text_width), dtype=np.float32),
            ],
            format="csr",
        )
        self.centroids_t = sp.csr_matrix(padded.T, dtype=np.float32)
        self._threshold_array = np.array([self.thresholds[label] for label in self.labels])
        self._oos_index = self.labels.index(self.oos_label) if self.oos_label in self.labels else -1

    def features(self, columns: Columns) -> sp.csr_matrix:
        """The Pipeline's feature matrix for these columns (COLUMNS), without its per-call overhead."""
        missing = [name for name in COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"feature frame lacks columns {missing}; expected {list(COLUMNS)}")
        texts = [
            f"{_text(subject)}\n{_text(body)}"[: self.max_chars]
            for subject, body in zip(columns["subject"], columns["body"], strict=True)
        ]
        rows: list[int] = []
        positions: list[int] = []
        structured = zip(columns["channel"], columns["free_mail"], columns["segment"], strict=True)
        for row, (channel, free_mail, segment) in enumerate(structured):
            values = (
                _text(channel) or "unknown",
                bool(free_mail) if free_mail is not None and free_mail == free_mail else False,
                _text(segment) or "unknown",
            )
            for mapping, value in zip(self.meta_columns, values, strict=True):
                column = mapping.get(value)
                if column is not None:
                    rows.append(row)
                    positions.append(column - self.text_width)
        meta = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, positions)),
            shape=(len(texts), self.n_features - self.text_width),
        )
        blocks = [self.word.matrix(texts), self.char.matrix(texts), meta]
        return sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float32)

    def predict_arrays(self, columns: Columns) -> dict[str, Any]:
        """Raw arrays for a batch: feature matrix, probabilities, chosen index, confidence, similarity,
        abstained."""
        matrix = self.features(columns)
        logits = np.asarray(matrix @ self.weights, dtype=np.float64) + self.bias
        probabilities = _softmax(logits)
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
        """Cosine similarity of each row's text features to the nearest class centroid (structured
        columns do not count)."""
        in_text = matrix.indices < self.text_width
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        squares = np.bincount(
            rows,
            weights=np.where(in_text, matrix.data.astype(np.float64) ** 2, 0.0),
            minlength=matrix.shape[0],
        )
        norms = np.sqrt(squares)
        norms[norms == 0] = 1.0
        scores = np.asarray((matrix @ self.centroids_t).toarray(), dtype=np.float64).max(axis=1)
        similarity: FloatArray = scores / norms
        return similarity

    def explain(
        self, matrix: sp.csr_matrix, chosen: npt.NDArray[np.intp]
    ) -> list[tuple[tuple[str, float], ...]]:
        """Top terms per row by contribution (feature value × weight) to the chosen intent's logit."""
        counts = np.diff(matrix.indptr)
        row_of_entry = np.repeat(np.arange(matrix.shape[0]), counts)
        contributions = matrix.data * self.explained_weights[chosen[row_of_entry], matrix.indices]
        # Entries sorted by row, then by falling contribution; keep the first few positive ones per row.
        order = np.lexsort((-contributions, row_of_entry))
        rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
        keep = (rank < EXPLANATION_TERMS) & (contributions[order] > 0)
        result: list[list[tuple[str, float]]] = [[] for _ in range(matrix.shape[0])]
        for row, column, weight in zip(
            row_of_entry[order][keep].tolist(),
            matrix.indices[order][keep].tolist(),
            contributions[order][keep].tolist(),
            strict=True,
        ):
            result[row].append((str(self.explained_names[column]), round(weight, 4)))
        return [tuple(terms) for terms in result]

    def predict(self, columns: Columns) -> list[Prediction]:
        """One Prediction per row, in order."""
        if len(columns.get("body", ())) == 0:
            return []
        arrays = self.predict_arrays(columns)
        explanations = self.explain(arrays["matrix"], arrays["chosen"])
        thresholds = self._threshold_array.tolist()
        return [
            Prediction(
                intent=self.labels[index],
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

    def save(self, path: Path) -> str:
        """Write the arrays to `path` (.npz, no pickled objects); returns the file's SHA-256."""
        meta = {
            "format": SCORER_FORMAT,
            "labels": list(self.labels),
            "thresholds": self.thresholds,
            "oos_label": self.oos_label,
            "max_chars": self.max_chars,
            "categories": [list(values) for values in self.categories],
            "tokenisers": {
                name: {
                    "analyzer": block.tokeniser.analyzer,
                    "ngram_range": list(block.tokeniser.ngram_range),
                    "token_pattern": block.tokeniser.token_pattern,
                    "lowercase": block.tokeniser.lowercase,
                    "sublinear_tf": block.sublinear_tf,
                }
                for name, block in (("word", self.word), ("char", self.char))
            },
        }
        centroids = sp.csr_matrix(self.centroids, dtype=np.float32)
        with path.open("wb") as handle:
            np.savez(
                handle,
                meta=np.asarray(json.dumps(meta, sort_keys=True)),
                word_terms=self.word.terms,
                word_idf=self.word.idf,
                char_terms=self.char.terms,
                char_idf=self.char.idf,
                weights=self.weights,
                bias=self.bias,
                centroid_data=centroids.data,
                centroid_indices=centroids.indices,
                centroid_indptr=centroids.indptr,
                centroid_shape=np.asarray(centroids.shape),
            )
        return file_sha256(path)


def load_scorer(path: Path, *, sha256: str, version: str, novelty_floor: float) -> Scorer:
    """Read a saved scorer after checking its SHA-256; numpy refuses any pickled object in it."""
    if not path.exists():
        raise FatalError(f"the scorer of model {version} is missing: {path}; restore TRIAGE_HOME/models")
    if file_sha256(path) != sha256:
        raise FatalError(f"the scorer of model {version} ({path}) does not match its recorded SHA-256")
    with np.load(path, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        if meta.get("format") != SCORER_FORMAT:
            raise FatalError(
                f"the scorer of model {version} has format {meta.get('format')}, not {SCORER_FORMAT}"
            )

        def block(name: str) -> TextFeatures:
            settings = dict(meta["tokenisers"][name])
            sublinear = bool(settings.pop("sublinear_tf"))
            settings["ngram_range"] = tuple(settings["ngram_range"])
            return TextFeatures(
                Tokeniser(**settings), saved[f"{name}_terms"], saved[f"{name}_idf"], sublinear_tf=sublinear
            )

        centroids = sp.csr_matrix(
            (saved["centroid_data"], saved["centroid_indices"], saved["centroid_indptr"]),
            shape=tuple(saved["centroid_shape"].tolist()),
        )
        return Scorer(
            version=version,
            labels=tuple(meta["labels"]),
            thresholds={str(k): float(v) for k, v in meta["thresholds"].items()},
            novelty_floor=novelty_floor,
            oos_label=meta["oos_label"],
            max_chars=int(meta["max_chars"]),
            word=block("word"),
            char=block("char"),
            categories=tuple(tuple(values) for values in meta["categories"]),
            weights=saved["weights"],
            bias=saved["bias"],
            centroids=centroids,
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
