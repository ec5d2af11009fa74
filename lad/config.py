"""Reading a stage's YAML config into its typed pydantic object, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


def format_validation(err: ValidationError) -> str:
    """pydantic's errors as 'field.path: message' joined by '; '."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors())


def apply_overrides(raw: dict, overrides: Optional[dict[str, Any]]) -> dict:
    """Replace values in place; dotted keys (train.max_steps) reach nested sections; None means unset."""
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def read_yaml_mapping(path: str | Path) -> dict:
    """The mapping at the top of the YAML file at ``path`` (empty file: {}); raises ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_yaml_config(path: str | Path, model: type[M], overrides: Optional[dict[str, Any]] = None) -> M:
    """``model`` from the YAML file at ``path`` with ``overrides`` applied; raises ConfigError."""
    raw = read_yaml_mapping(path)
    try:
        return model.model_validate(apply_overrides(raw, overrides))
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation(err)}") from None
