"""ServedModelSpec parsing, and its defaults held equal to the CRD schema's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from servedmodel_operator.api.names import derived_name
from servedmodel_operator.api.spec import (
    MAX_NAME,
    InvalidSpec,
    ServedModelSpec,
    ServePolicy,
    Spec,
)

from tests.unit.builders import body, model
from tests.unit.schema import (
    crd_defaults,
    crd_schema,
    defaults_not_held,
    undescribed,
    walk_both,
)

CRD = Path(__file__).resolve().parents[2] / "crds" / "servedmodel.yaml"


def test_parses_a_minimal_body_with_defaults() -> None:
    m = model()
    assert m.model_name == "mnist"
    assert m.declared_versions == (1, 2)
    assert m.spec.serve.policy is ServePolicy.LATEST and m.spec.serve.count == 1
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
    with pytest.raises(ValidationError, match="frozen"):
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


LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_derived_names_are_valid_at_the_maximum_lengths() -> None:
    b = body()
    b["metadata"]["name"] = "a" * MAX_NAME
    m = ServedModelSpec.from_body(b)
    job = m.job_name(2**63 - 1, "0123456789")
    assert len(job) <= 63 and LABEL_VALUE.match(job), job
    assert job.endswith(f"-export-v{2**63 - 1}-01234567")
    for name in (m.deployment_name, m.service_name, m.name):
        assert len(name) <= 63 and LABEL_VALUE.match(name)
    assert m.configmap_name == "a" * MAX_NAME + "-tfserving"


def test_a_cut_name_never_ends_in_a_dash_or_dot_and_two_long_names_do_not_collide() -> None:
    base = "m" * 40 + "-" + "x" * 20
    cut = derived_name(base, "-suffix", limit=50)
    assert len(cut) == 50 and cut.endswith("-suffix") and "--" not in cut
    other = derived_name(base[:-1] + "y", "-suffix", limit=50)
    assert cut != other
    dash_at_the_cut = derived_name("m" * 30 + "-" + "n" * 10, "-suffix", limit=47)
    assert dash_at_the_cut.startswith("m" * 30 + "-") and "--" not in dash_at_the_cut
    assert derived_name("short", "-suffix") == "short-suffix"


@pytest.mark.parametrize("name", ["model.v2", "1model", "a" * (MAX_NAME + 1), "Model", "m-"])
def test_names_that_break_derived_objects_are_invalid(name: str) -> None:
    b = body()
    b["metadata"]["name"] = name
    with pytest.raises(InvalidSpec, match="DNS-1035"):
        ServedModelSpec.from_body(b)


@pytest.mark.parametrize(
    "broken",
    [
        {"store": {"pvc": {"claimName": "models", "path": "a/../b"}}},
        {"store": {"pvc": {"claimName": "models", "path": "/abs"}}},
        {"store": {"pvc": {"claimName": "../x"}}},
        {"versions": [{"version": 1, "source": {"uri": "pvc://train/a/../../etc"}}]},
        {
            "versions": [
                {
                    "version": 1,
                    "source": {"uri": "s3://b/k", "credentialsSecretRef": {"name": "a/b"}},
                }
            ]
        },
        {"exporter": {"serviceAccountName": "../default"}},
    ],
)
def test_references_that_could_leave_their_object_are_invalid(broken: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        ServedModelSpec.from_body(body(**broken))


def test_version_entry_digest_is_stable_and_sensitive() -> None:
    a, b = model().spec.versions
    assert a.digest() == model().spec.versions[0].digest()
    assert a.digest() != b.digest()


def test_every_crd_default_equals_the_models_default() -> None:
    spec_schema = crd_schema()["properties"]["spec"]
    parsed = Spec.model_validate(
        {
            "versions": [{"version": 1, "source": {"uri": "file:///m"}}],
            "store": {"pvc": {"claimName": "m"}},
        }
    )
    defaults = crd_defaults(spec_schema)
    assert len(defaults) >= 12
    not_store = {p: d for p, d in defaults.items() if not p.startswith("store.")}
    assert defaults_not_held(parsed, not_store) == []


def test_every_schema_field_has_a_description() -> None:
    assert undescribed(crd_schema()) == []


def test_the_crd_spec_and_the_model_have_the_same_fields_both_ways() -> None:
    """A field added to the CRD but not to the model, or to the model but not to the CRD."""
    crd_only: list[str] = []
    model_only: list[str] = []
    walk_both(crd_schema()["properties"]["spec"], Spec, "spec", crd_only, model_only)
    assert crd_only == [], "in the CRD, unknown to ServedModelSpec"
    assert model_only == [], "in ServedModelSpec, missing from the CRD"


def test_defaults_inside_optional_objects_apply_once_they_are_set() -> None:
    m = model(server={"autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 70}})
    assert m.spec.server.autoscaling is not None
    assert m.spec.server.autoscaling.min_replicas == 1
    assert m.spec.exporter.ttl_seconds_after_finished == 86400


SCHEMA_KEYS = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "pattern",
    "additionalProperties",
    "anyOf",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def test_every_schema_node_uses_only_openapi_keys() -> None:
    """A stray key is usually YAML gone wrong (a comma inside a flow mapping's description)."""
    wrong: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        wrong.extend(f"{path}: {k}" for k in node if k not in SCHEMA_KEYS)
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[{key}]")

    walk(crd_schema(), "")
    assert wrong == []
