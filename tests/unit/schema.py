"""The CRDs' schemas held against the pydantic models, shared by the spec tests
(test_spec.py, test_modelserver_spec.py, test_routes.py): the schema of a CRD, its defaults by
camelCase path, a value followed along such a path through a parsed model, a walk of both
that lists the fields only one of them has, and the fields that lack a description."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"
ABSENT = object()


def crd_schema(name: str = "servedmodel.yaml") -> dict[str, Any]:
    """The openAPIV3Schema of crds/<name>."""
    crd = yaml.safe_load((CRDS / name).read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def crd_defaults(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Every default of the schema (but empty objects), by camelCase path."""
    out = {}
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        if "default" in sub and sub["default"] != {}:
            out[here] = sub["default"]
        out.update(crd_defaults(sub, here))
    return out


def defaults_not_held(parsed: Any, defaults: dict[str, Any]) -> list[str]:
    """The paths of `defaults` (crd_defaults) whose default the parsed model does not hold (an
    object's default, key by key); a path under an optional object not set is skipped."""
    wrong = []
    for path, default in defaults.items():
        value = value_at(parsed, path)
        if value is ABSENT:
            continue
        if isinstance(default, dict):
            wrong += [path for key, v in default.items() if value_at(value, key) != v]
        elif value != default:
            wrong.append(path)
    return wrong


def undescribed(schema: dict[str, Any], path: str = "") -> list[str]:
    """The path of every field under the schema (but metadata) that has no description."""
    missing = []
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(here)
        missing += undescribed(sub, here)
    if "items" in schema:
        missing += undescribed(schema["items"], path + "[]")
    return missing


def _by_alias(model_cls: Any) -> dict[str, tuple[str, Any]]:
    """camelCase name (as the CRD spells it) -> (python attribute, annotation)."""
    return {f.alias or n: (n, f.annotation) for n, f in model_cls.model_fields.items()}


def _nested_models(annotation: Any) -> list[Any]:
    """The pydantic models inside an annotation (X, X | None, tuple[X, ...])."""
    out = []
    for candidate in getattr(annotation, "__args__", (annotation,)):
        if hasattr(candidate, "model_fields"):
            out.append(candidate)
        out += [d for d in getattr(candidate, "__args__", ()) if hasattr(d, "model_fields")]
    return out


def value_at(obj: Any, path: str) -> Any:
    """Follow a camelCase path (as in the CRD) through the parsed model's attributes; ABSENT
    when an optional object on the way is not set (its defaults apply once it is)."""
    for part in path.split("."):
        if obj is None:
            return ABSENT
        attribute, _ = _by_alias(type(obj))[part]
        obj = getattr(obj, attribute)
    return obj


def walk_both(
    schema: dict[str, Any], model_cls: Any, path: str, crd_only: list[str], model_only: list[str]
) -> None:
    """Compare one object level of the CRD schema with one pydantic model, then recurse."""
    props = schema.get("properties") or {}
    if "items" in schema:
        props = schema["items"].get("properties") or {}
    fields = _by_alias(model_cls)
    crd_only += [f"{path}.{name}" for name in props if name not in fields]
    model_only += [f"{path}.{name}" for name in fields if name not in props]
    for name, sub in props.items():
        if name in fields:
            for nested in _nested_models(fields[name][1]):
                walk_both(sub, nested, f"{path}.{name}", crd_only, model_only)
