"""The model registry: skops artifacts with provenance under TRIAGE_HOME, lifecycle in the database.

Files: `<home>/models/<version>/model.skops` (the fitted Pipeline and class centroids; never pickle) and
`provenance.json` beside it (a copy of what the `model_versions` row holds: training-data hash, library
versions, labels, thresholds, metrics, who trained it). The database is the truth for the lifecycle:
status (candidate | shadow | active | retired), who approved a promotion and when, and an append-only
`model_events` history that makes rollback one step.

A machine never promotes: `promote` needs a person's name, and names of machine actors are refused.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sklearn
import skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sqlalchemy.orm import Session

from models.artifact import ModelArtifact, artifact_with_status, find_artifact, registered_version
from models.classifier import TriageModel
from models.errors import ConfigError, FatalError
from models.scoring import file_sha256
from models.training import TrainResult
from store import model_registry as repo
from store.common import utcnow
from store.tables import ModelVersion

MODEL_FILE = "model.skops"
SCORER_FILE = "scorer.npz"
PROVENANCE_FILE = "provenance.json"
ARTIFACT_FORMAT = 1
# The only non-default types an artifact may contain. Loading refuses anything else, so a tampered or
# foreign file cannot make skops construct arbitrary objects.
ALLOWED_TYPES = frozenset(
    {
        "models.classifier.TemperatureCalibratedClassifier",
        "models.classifier.TextJoiner",
        "scipy.sparse._csr.csr_matrix",
    }
)
MACHINE_ACTORS = frozenset({"system", "retrain", "prefect", "automation", "scheduler", "bot", "flow"})

_cache: dict[tuple[str, str], TriageModel] = {}
_cache_lock = threading.Lock()


class ApprovalRequired(ConfigError):
    """A promotion without the name of the person who approves it."""


def new_version_id() -> str:
    """A sortable, unique version id such as `m-20261124-013512-ab12cd`."""
    return f"m-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _vectorisers(pipeline: Pipeline) -> dict[str, TfidfVectorizer]:
    union = pipeline.named_steps["features"].named_transformers_["text"].named_steps["tfidf"]
    return {name: vectoriser for name, vectoriser in union.transformer_list}


def _payload(model: TriageModel) -> dict[str, Any]:
    """What goes into the skops file. Vocabularies travel as arrays of terms: skops would store a
    vocabulary dict one node per term (a 150,000-term model took minutes and hundreds of MB)."""
    pipeline = copy.deepcopy(model.pipeline)
    vocabularies: dict[str, npt.NDArray[np.str_]] = {}
    for name, vectoriser in _vectorisers(pipeline).items():
        vocabularies[name] = np.asarray(vectoriser.get_feature_names_out(), dtype=np.str_)
        del vectoriser.vocabulary_
    return {
        "format": ARTIFACT_FORMAT,
        "pipeline": pipeline,
        "vocabularies": vocabularies,
        "centroids": model.centroids,
    }


def _pipeline_from_payload(payload: dict[str, Any]) -> Pipeline:
    pipeline: Pipeline = payload["pipeline"]
    for name, vectoriser in _vectorisers(pipeline).items():
        terms = payload["vocabularies"][name].tolist()
        vectoriser.vocabulary_ = {term: index for index, term in enumerate(terms)}
    return pipeline


def register_candidate(
    session: Session, home: Path, result: TrainResult, *, trained_by: str, data_description: str
) -> str:
    """Store the artifact and provenance under `home` and add a *candidate* row; returns the version.

    The caller commits. The model in `result` takes the new version id.
    """
    version = new_version_id()
    model = result.model
    directory = Path(home) / "models" / version
    directory.mkdir(parents=True, exist_ok=False)
    artifact = directory / MODEL_FILE
    sio.dump(_payload(model), artifact)
    untrusted = sorted(sio.get_untrusted_types(file=artifact))
    unexpected = sorted(set(untrusted) - ALLOWED_TYPES)
    if unexpected:
        artifact.unlink()
        raise FatalError(f"the model contains types the registry does not allow: {unexpected}")
    now = utcnow()
    provenance: dict[str, Any] = {
        "version": version,
        "format": ARTIFACT_FORMAT,
        "created_at": now.isoformat(),
        "trained_by": trained_by,
        "data_description": data_description,
        "data_hash": result.data_hash,
        "n_rows": result.n_rows,
        "label_counts": result.label_counts,
        "labels": list(model.labels),
        "oos_label": model.oos_label,
        "thresholds": model.thresholds,
        "novelty_floor": model.novelty_floor,
        "metrics": result.metrics,
        "reference": result.reference,
        "params": result.params,
        "training_seconds": result.training_seconds,
        "libraries": result.libraries,
        "trusted_types": untrusted,
        "artifact_sha256": file_sha256(artifact),
        # The scoring arrays the pipeline's workers load without scikit-learn (models.scoring).
        "scorer_file": SCORER_FILE,
        "scorer_sha256": model.scorer.save(directory / SCORER_FILE),
    }
    (directory / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    repo.add_version(
        session,
        version=version,
        artifact_path=f"models/{version}/{MODEL_FILE}",
        provenance=provenance,
        created_at=now,
    )
    repo.add_event(
        session, version=version, action="register", actor=trained_by, previous_active=None, created_at=now
    )
    model.version = version
    return version


def read_artifact(path: Path, provenance: dict[str, Any], *, version: str) -> TriageModel:
    """Load one artifact file after checking library versions, integrity and the types it contains."""
    # A missing file first: it is the plainer fault, and its provenance may say nothing.
    if not path.exists():
        raise FatalError(
            f"the artifact of model {version} is missing: {path}; restore TRIAGE_HOME/models from backup"
        )
    trained_with = provenance.get("libraries", {}).get("scikit-learn")
    if trained_with != sklearn.__version__:
        raise FatalError(
            f"model {version} was trained with scikit-learn {trained_with}, but scikit-learn "
            f"{sklearn.__version__} is installed; loading it could silently change predictions. Retrain it "
            f"here (`triage model train ...`) or install scikit-learn=={trained_with}."
        )
    expected_hash = provenance.get("artifact_sha256")
    if expected_hash and file_sha256(path) != expected_hash:
        raise FatalError(
            f"the artifact of model {version} ({path}) does not match its recorded SHA-256; restore it"
        )
    untrusted = sio.get_untrusted_types(file=path)
    unexpected = sorted(set(untrusted) - ALLOWED_TYPES)
    if unexpected:
        raise FatalError(f"the artifact of model {version} contains types that are not allowed: {unexpected}")
    payload = sio.load(path, trusted=sorted(untrusted))
    return TriageModel(
        version=version,
        pipeline=_pipeline_from_payload(payload),
        thresholds=provenance["thresholds"],
        centroids=payload["centroids"],
        novelty_floor=provenance["novelty_floor"],
        oos_label=provenance.get("oos_label"),
    )


def load_artifact(artifact: ModelArtifact) -> TriageModel:
    """The model of an artifact, cached in this process (artifacts are immutable; a load takes a while).

    Raises FatalError when the artifact was made under another scikit-learn or was altered.
    """
    key = (artifact.version, str(artifact.provenance.get("artifact_sha256")))
    with _cache_lock:
        cached = _cache.get(key)
    trained_with = artifact.provenance.get("libraries", {}).get("scikit-learn")
    if cached is not None and trained_with == sklearn.__version__:
        return cached
    model = read_artifact(artifact.path, artifact.provenance, version=artifact.version)
    with _cache_lock:
        _cache[key] = model
    return model


def load_model(session: Session, home: Path, version: str) -> TriageModel:
    """The model of a registered `version` (see `load_artifact`)."""
    return load_artifact(find_artifact(session, home, version))


def check_loadable(session: Session, home: Path, version: str) -> None:
    """Load the whole model and what the pipeline scores with: a missing or altered file, or one made
    under another scikit-learn, is refused before a promotion or shadowing makes the pipeline use it."""
    artifact = find_artifact(session, home, version)
    load_artifact(artifact)
    artifact.load_scorer()


def clear_cache() -> None:
    """Forget loaded models (tests; a long-running process never needs it: artifacts are immutable)."""
    with _cache_lock:
        _cache.clear()


def active_version(session: Session) -> str | None:
    """The version the pipeline acts on, if any."""
    row = repo.version_with_status(session, "active")
    return row.version if row else None


def shadow_version(session: Session) -> str | None:
    """The version scored beside the active one without acting, if any."""
    row = repo.version_with_status(session, "shadow")
    return row.version if row else None


def newest_candidate(session: Session) -> str | None:
    """The most recently registered candidate, if any."""
    candidates = [row for row in repo.list_versions(session) if row.status == "candidate"]
    return candidates[0].version if candidates else None


def load_active(session: Session, home: Path) -> TriageModel | None:
    """The active model, or None before the first promotion."""
    artifact = artifact_with_status(session, home, "active")
    return artifact.load() if artifact else None


def load_shadow(session: Session, home: Path) -> TriageModel | None:
    """The shadow model, or None."""
    artifact = artifact_with_status(session, home, "shadow")
    return artifact.load() if artifact else None


def _person(name: str | None, *, what: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned:
        raise ApprovalRequired(f"{what} needs the name of the person who approves it (--approved-by NAME)")
    if cleaned.lower() in MACHINE_ACTORS:
        raise ApprovalRequired(
            f"{what} needs a person's name, not {cleaned!r}: a machine never promotes alone"
        )
    return cleaned


class UnmappedLabels(ConfigError):
    """A model with labels the taxonomy does not know: their enquiries could only go to people."""


def unmapped_labels(row: ModelVersion, taxonomy_intents: Collection[str]) -> list[str]:
    """The model's labels that are not intents of the taxonomy (its out-of-scope label aside: that one
    means "not ours" and goes to people by design)."""
    provenance = row.provenance or {}
    oos = provenance.get("oos_label")
    known = set(taxonomy_intents)
    return [str(label) for label in provenance.get("labels", []) if label not in known and label != oos]


def promote(
    session: Session,
    version: str,
    *,
    approved_by: str,
    home: Path,
    taxonomy_intents: Collection[str] | None = None,
    allow_unmapped: bool = False,
) -> list[str]:
    """Make `version` the active model, signed by a named person; the old active one is retired.

    Records approved_by and promoted_at on the row and a `promote` event naming the previous active
    version, which is what `rollback` returns to. A model whose files under `home` do not load is
    refused. Given the taxonomy's intents, a model with labels outside it is refused (UnmappedLabels)
    unless `allow_unmapped`: enquiries of such a label would silently go to people only. Returns the
    unmapped labels (recorded with the sign-off). The caller commits.
    """
    approver = _person(approved_by, what="promotion")
    row = registered_version(session, version)
    unmapped = unmapped_labels(row, taxonomy_intents) if taxonomy_intents is not None else []
    if unmapped and not allow_unmapped:
        shown = ", ".join(unmapped[:20]) + (f" and {len(unmapped) - 20} more" if len(unmapped) > 20 else "")
        raise UnmappedLabels(
            f"model {version} has {len(unmapped)} label(s) the taxonomy does not know: {shown}. Their "
            "enquiries would all go to people (Human-only). Add them to the taxonomy (`triage taxonomy "
            "init --data FILE --text-col T --label-col L` writes one from the training data), or promote "
            "anyway with --allow-unmapped."
        )
    check_loadable(session, home, version)
    current = repo.version_with_status(session, "active", lock=True)
    if current is not None and current.version == version:
        raise ConfigError(f"model {version} is already active")
    now = utcnow()
    if current is not None:
        current.status = "retired"
    row.status = "active"
    row.approved_by = approver
    row.promoted_at = now
    # Provenance keeps every sign-off (a model can be promoted again after a rollback); a new dict, so
    # the JSON column is seen as changed.
    approval: dict[str, Any] = {"approved_by": approver, "at": now.isoformat()}
    if unmapped:
        approval["unmapped_labels"] = unmapped
    approvals = [*row.provenance.get("approvals", []), approval]
    row.provenance = {**row.provenance, "approvals": approvals}
    repo.add_event(
        session,
        version=version,
        action="promote",
        actor=approver,
        previous_active=current.version if current else None,
        created_at=now,
    )
    return unmapped


def rollback(session: Session, *, actor: str) -> str:
    """Return to the model that was active before the current one; returns that version.

    The current model is retired. Repeated rollbacks walk further back through the promotions.
    """
    who = (actor or "").strip()
    if not who:
        raise ConfigError("rollback needs the name of who does it (--actor NAME)")
    current = repo.version_with_status(session, "active", lock=True)
    if current is None:
        raise ConfigError("there is no active model to roll back")
    promotion = repo.last_event(session, version=current.version, action="promote")
    if promotion is None or promotion.previous_active is None:
        raise ConfigError(f"model {current.version} has no previous active model to return to")
    previous = registered_version(session, promotion.previous_active)
    now = utcnow()
    current.status = "retired"
    previous.status = "active"
    previous.promoted_at = now
    repo.add_event(
        session,
        version=previous.version,
        action="rollback",
        actor=who,
        previous_active=current.version,
        created_at=now,
    )
    return previous.version


def set_shadow(session: Session, version: str, *, actor: str, home: Path) -> None:
    """Score `version` beside the active model from now on; a previous shadow goes back to candidate.
    A model whose files under `home` do not load is refused."""
    row = registered_version(session, version)
    check_loadable(session, home, version)
    if row.status == "active":
        raise ConfigError(f"model {version} is active; only another model can shadow it")
    current = repo.version_with_status(session, "shadow", lock=True)
    if current is not None and current.version != version:
        current.status = "candidate"
    row.status = "shadow"
    repo.add_event(
        session,
        version=version,
        action="shadow",
        actor=actor,
        previous_active=active_version(session),
        created_at=utcnow(),
    )


def clear_shadow(session: Session, *, actor: str) -> str | None:
    """Stop shadow scoring; returns the version that was shadowing, if any."""
    current = repo.version_with_status(session, "shadow", lock=True)
    if current is None:
        return None
    current.status = "candidate"
    repo.add_event(
        session,
        version=current.version,
        action="unshadow",
        actor=actor,
        previous_active=None,
        created_at=utcnow(),
    )
    return current.version


def summary(row: ModelVersion) -> dict[str, Any]:
    """One version as a JSON-ready dict for listings."""
    provenance = row.provenance or {}
    metrics = provenance.get("metrics", {})
    return {
        "version": row.version,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "trained_by": provenance.get("trained_by"),
        "n_rows": provenance.get("n_rows"),
        "labels": len(provenance.get("labels", [])),
        "oos_label": provenance.get("oos_label"),
        "target_precision": provenance.get("params", {}).get("target_precision"),
        "out_of_fold_accuracy": metrics.get("out_of_fold_accuracy"),
        "out_of_fold_coverage": metrics.get("out_of_fold_coverage"),
        "approved_by": row.approved_by,
        "promoted_at": row.promoted_at.isoformat() if row.promoted_at else None,
    }


def list_versions(session: Session) -> list[ModelVersion]:
    """Every registered version's row (version, status, provenance, approved_by, ...), newest first."""
    return repo.list_versions(session)


def list_summaries(session: Session) -> list[dict[str, Any]]:
    """Every registered version, newest first, as JSON-ready dicts (see `summary`)."""
    return [summary(row) for row in repo.list_versions(session)]


def describe(session: Session, version: str) -> dict[str, Any]:
    """Everything known about one version: summary, full provenance and its lifecycle events."""
    row = registered_version(session, version)
    return {
        **summary(row),
        "artifact_path": row.artifact_path,
        "provenance": row.provenance,
        "events": [
            {
                "action": event.action,
                "actor": event.actor,
                "previous_active": event.previous_active,
                "at": event.created_at.isoformat(),
            }
            for event in repo.list_events(session, version=version)
        ],
    }
