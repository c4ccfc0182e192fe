"""Reading a YAML configuration file into a pydantic model, with errors that name file, field and line.

Every policy file (taxonomy, lanes, decision matrix, SLA, CRM mapping) is read through here, so a
mistake reads the same wherever it is: `path:line: field.path: what is wrong`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from models.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


def load_yaml_model(path: Path, model: type[Model], *, what: str) -> Model:
    """Parse `path` and validate it as `model`; every problem becomes one ConfigError listing them all."""
    # Imported here: the settings module imports this one, and a command that reads no policy file
    # (`triage status`) should not pay for PyYAML at start-up.
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what}: {error.strerror or error}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} must be a mapping of keys to values at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        root = yaml.compose(text)
        problems = []
        for item in error.errors():
            # Validator frames ("function-after[...]") are pydantic's, not fields of the file.
            location = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function"))]
            dotted = ".".join(str(part) for part in location) or "(top level)"
            line = yaml_line(root, location)
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where}: {dotted}: {item['msg']}")
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems)) from error


def yaml_line(node: Any, location: Sequence[Any]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location, or of its nearest parent."""
    import yaml

    line: int | None = None
    for part in location:
        if isinstance(node, yaml.MappingNode):
            found = next((pair for pair in node.value if pair[0].value == str(part)), None)
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
