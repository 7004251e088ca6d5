"""ServedModelSpec parsing, and its defaults held equal to the CRD schema's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from servedmodel_operator.spec import InvalidSpec, Policy, ServedModelSpec, Spec

from tests.unit.builders import body, model

CRD = Path(__file__).resolve().parents[2] / "crds" / "servedmodel.yaml"


def _schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_parses_a_minimal_body_with_defaults() -> None:
    m = model()
    assert m.model_name == "mnist"
    assert m.declared_versions == (1, 2)
    assert m.spec.serve.policy is Policy.LATEST and m.spec.serve.count == 1
    assert m.spec.server.image == "tensorflow/serving:2.21.0"
    assert m.spec.exporter.verify.samples == 8
    assert (m.deployment_name, m.service_name, m.configmap_name) == (
        "mnist",
        "mnist",
        "mnist-tfserving",
    )


def test_model_name_overrides_the_object_name() -> None:
    assert model(modelName="digits").model_name == "digits"


def test_spec_is_frozen() -> None:
    m = model()
    with pytest.raises(Exception, match="frozen"):
        m.spec.serve.count = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "broken",
    [
        {"versions": []},
        {"versions": [{"version": 0, "source": {"uri": "file:///m.keras"}}]},
        {"store": {}},
    ],
)
def test_nonsense_raises_invalid_spec(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        ServedModelSpec.from_body(body(**broken))


def test_job_names_stay_valid_label_values_for_long_names() -> None:
    b = body()
    b["metadata"]["name"] = "a" * 63
    name = ServedModelSpec.from_body(b).job_name(12345, "0123456789")
    assert len(name) <= 63 and name.endswith("-export-v12345-01234567")


def test_version_entry_digest_is_stable_and_sensitive() -> None:
    a, b = model().spec.versions
    assert a.digest() == model().spec.versions[0].digest()
    assert a.digest() != b.digest()


def _defaults(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    out = {}
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        if "default" in sub and sub["default"] != {}:
            out[here] = sub["default"]
        out.update(_defaults(sub, here))
    return out


def _value(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_crd_default_equals_the_models_default() -> None:
    spec_schema = _schema()["properties"]["spec"]
    parsed = Spec.model_validate(
        {
            "versions": [{"version": 1, "source": {"uri": "file:///m"}}],
            "store": {"pvc": {"claimName": "m"}},
        }
    )
    snake = {
        "modelName": "model_name",
        "configPollSeconds": "config_poll_seconds",
        "startupTimeoutSeconds": "startup_timeout_seconds",
        "backoffLimit": "backoff_limit",
        "activeDeadlineSeconds": "active_deadline_seconds",
        "claimName": "claim_name",
    }
    defaults = _defaults(spec_schema)
    assert len(defaults) >= 12
    for path, default in defaults.items():
        python_path = ".".join(snake.get(p, p) for p in path.split("."))
        if python_path.startswith("store."):
            continue
        value = _value(parsed, python_path)
        if isinstance(default, dict):
            for key, v in default.items():
                assert getattr(value, snake.get(key, key)) == v, path
        else:
            assert value == default, path


def test_every_schema_field_has_a_description() -> None:
    missing = []

    def walk(schema: dict[str, Any], path: str) -> None:
        for name, sub in (schema.get("properties") or {}).items():
            here = f"{path}.{name}"
            if name != "metadata" and not sub.get("description"):
                missing.append(here)
            walk(sub, here)
        if "items" in schema:
            walk(schema["items"], path + "[]")

    walk(_schema(), "")
    assert missing == []


def test_every_spec_field_in_the_crd_is_known_to_the_model() -> None:
    unknown, seen = [], []

    def walk(schema: dict[str, Any], model_cls: Any, path: str) -> None:
        props = schema.get("properties") or {}
        if "items" in schema:
            props = schema["items"].get("properties") or {}
        for name, sub in props.items():
            fields = {f.alias or n: f for n, f in model_cls.model_fields.items()}
            seen.append(f"{path}.{name}")
            if name not in fields:
                unknown.append(f"{path}.{name}")
                continue
            annotation = fields[name].annotation
            inner = getattr(annotation, "__args__", (annotation,))
            for candidate in inner:
                if hasattr(candidate, "model_fields"):
                    walk(sub, candidate, f"{path}.{name}")
                for deeper in getattr(candidate, "__args__", ()):
                    if hasattr(deeper, "model_fields"):
                        walk(sub, deeper, f"{path}.{name}")

    walk(_schema()["properties"]["spec"], Spec, "spec")
    assert unknown == []
    assert {
        "spec.server.batching.maxBatchSize",
        "spec.versions.source.sha256",
        "spec.exporter.verify.atol",
        "spec.store.pvc.claimName",
    } <= set(seen)
