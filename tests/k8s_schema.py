"""Checking a Kubernetes object against the OpenAPI schema of its kind, as the models generated
from that schema describe it (kubeflow-trainer-api: pydantic models of Kubeflow Trainer v2's
OpenAPI spec; kubeflow-training: openapi-generator models of the training operator's, which name
the kubernetes client's models for the core types).

Unlike the API server, which drops unknown fields by default, a field the schema does not have is
a violation here: a misspelt field would otherwise vanish silently from the job that runs.
"""

from __future__ import annotations

import datetime
import re
import typing

from pydantic import BaseModel

_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "datetime": (str,), "date": (str,)}


def violations(value, schema, path: str = "") -> list[str]:
    """Where ``value`` (plain JSON data) departs from ``schema``: a pydantic model class, an
    openapi-generator model class, a typing annotation or an openapi-generator type string."""
    if isinstance(schema, str):
        return _by_name(value, schema, path)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return _pydantic(value, schema, path)
    if isinstance(schema, type) and hasattr(schema, "openapi_types"):
        return _generated(value, schema, path)
    return _annotation(value, schema, path)


def _primitive(value, kinds: tuple, path: str) -> list[str]:
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    return [] if ok else [f"{path or '.'}: expected {'/'.join(k.__name__ for k in kinds)}, got {type(value).__name__}"]


def _fields(value, allowed: dict, required: set, kind: str, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path or '.'}: expected an object ({kind}), got {type(value).__name__}"]
    out = [f"{path}.{k}: not a field of {kind}" for k in value if k not in allowed]
    out += [f"{path}.{k}: required by {kind}" for k in sorted(required) if k not in value]
    for key, item in value.items():
        if key in allowed:
            out += violations(item, allowed[key], f"{path}.{key}")
    return out


def _pydantic(value, model: type[BaseModel], path: str) -> list[str]:
    if "one_of_schemas" in model.model_fields:  # a oneOf of primitives (a Quantity: string or number)
        kinds = tuple(t for name in sorted(model.model_fields["one_of_schemas"].default) for t in _PRIMITIVES[name])
        return _primitive(value, kinds, path)
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    return _fields(value, {k: f.annotation for k, f in fields.items()}, {k for k, f in fields.items() if f.is_required()},
                   model.__name__, path)


def _generated(value, cls: type, path: str) -> list[str]:
    allowed = {cls.attribute_map[name]: kind for name, kind in cls.openapi_types.items()}
    return _fields(value, allowed, set(), cls.__name__, path)


def _by_name(value, name: str, path: str) -> list[str]:
    if name == "object":
        return []
    if name in _PRIMITIVES:
        return _primitive(value, _PRIMITIVES[name], path)
    if m := re.fullmatch(r"list\[(.+)\]", name):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [v for i, item in enumerate(value) for v in violations(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"dict\(str, (.+)\)", name):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [v for key, item in value.items() for v in violations(item, m.group(1), f"{path}.{key}")]
    import kubernetes.client.models as core
    from kubeflow.training import models as training

    cls = getattr(training, name, None) or getattr(core, name)
    return _generated(value, cls, path)


def _annotation(value, annotation, path: str) -> list[str]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return []
    if origin is typing.Annotated:
        return _annotation(value, args[0], path)
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return []
        found = [violations(value, a, path) for a in options]
        return [] if any(not f for f in found) else min(found, key=len)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [v for i, item in enumerate(value) for v in violations(item, args[0], f"{path}[{i}]")]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping, got {type(value).__name__}"]
        return [v for key, item in value.items() for v in violations(item, args[1], f"{path}.{key}")]
    if annotation in (datetime.datetime, datetime.date):
        return _primitive(value, (str,), path)
    if annotation is float:
        return _primitive(value, (int, float), path)
    if annotation in (str, int, bool):
        return _primitive(value, (annotation,), path)
    raise TypeError(f"{path}: no rule for the schema type {annotation!r}")
