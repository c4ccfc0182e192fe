"""Where a registered model lives, found without loading it.

Loading a model needs scikit-learn, which takes a second or two to import. The pipeline's main process
only writes to the database, so it passes a `ModelArtifact` (a version, a file and its provenance: a
few kilobytes) to the worker processes that classify, and each loads the model there, once.
`models.registry` owns the lifecycle and the checks made on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from models.errors import ConfigError
from store import model_registry as repo
from store.tables import ModelVersion

if TYPE_CHECKING:
    from models.classifier import TriageModel
    from models.scoring import Scorer

# Loaded scorers by (version, file hash): artifacts never change once registered.
_scorers: dict[tuple[str, str], Scorer] = {}


@dataclass(frozen=True)
class ModelArtifact:
    """One registered model's artifact file and provenance (picklable, cheap to send)."""

    version: str
    path: Path
    provenance: dict[str, Any]

    def load(self) -> TriageModel:
        """The model, loaded once per process and checked (library versions, SHA-256, allowed types)."""
        from models.registry import load_artifact

        return load_artifact(self)

    def load_scorer(self) -> Scorer | TriageModel:
        """What the pipeline predicts with: the saved scoring arrays (numpy only, a fraction of a second),
        or the whole model for an artifact registered before scorers were saved. Cached per process."""
        name, sha256 = self.provenance.get("scorer_file"), self.provenance.get("scorer_sha256")
        if not name or not sha256:
            return self.load()
        key = (self.version, str(sha256))
        scorer = _scorers.get(key)
        if scorer is None:
            from models.scoring import load_scorer  # numpy and scipy: light, but not needed to find a file

            scorer = load_scorer(
                self.path.parent / str(name),
                sha256=str(sha256),
                version=self.version,
                novelty_floor=float(self.provenance["novelty_floor"]),
            )
            _scorers[key] = scorer
        return scorer


def registered_version(session: Session, version: str) -> ModelVersion:
    """The row of a registered version; a clear error names the command that lists them."""
    row = repo.get_version(session, version)
    if row is None:
        raise ConfigError(f"no model version {version!r}; `triage model list` shows the registered ones")
    return row


def find_artifact(session: Session, home: Path, version: str) -> ModelArtifact:
    """The artifact of a registered version; a relative path is under `home`."""
    row = registered_version(session, version)
    path = Path(row.artifact_path)
    return ModelArtifact(version, path if path.is_absolute() else Path(home) / path, dict(row.provenance))


def artifact_with_status(session: Session, home: Path, status: str) -> ModelArtifact | None:
    """The artifact of the active or the shadow model, or None when there is none."""
    row = repo.version_with_status(session, status)
    return find_artifact(session, home, row.version) if row is not None else None
