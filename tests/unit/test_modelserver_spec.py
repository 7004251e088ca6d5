"""The ModelServer kind and membership in the spec: parsing, the member's view of its server,
and the ModelServer CRD held equal to the model (fields, defaults, the shared server schema)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from servedmodel_operator.api.spec import (
    InvalidSpec,
    ModelServerSpec,
    ModelServerSpecBody,
    ServedModelSpec,
)

from tests.unit.builders import body, member_body, server_body
from tests.unit.schema import (
    crd_defaults,
    crd_schema,
    defaults_not_held,
    undescribed,
    walk_both,
)


def test_a_member_needs_no_store_and_takes_its_servers() -> None:
    member = ServedModelSpec.from_body(member_body("fraud", server={"memory": "256Mi"}))
    assert member.server_ref == "shared" and member.spec.store is None
    with pytest.raises(InvalidSpec, match="no store"):
        _ = member.store
    server = ModelServerSpec.from_body(
        server_body(server={"image": "tensorflow/serving:2.21.0", "replicas": 2})
    )
    joined = member.joined(server)
    assert joined.store.pvc.claim_name == "models" and joined.store.pvc.path == "shared"
    assert joined.spec.server.replicas == 2
    assert joined.server_ref == "shared" and joined.spec.server.memory == "256Mi"
    assert joined.model_name == "fraud" and joined.uid == "uid-fraud"


def test_a_servedmodel_without_a_store_or_a_server_is_refused() -> None:
    plain = body()
    del plain["spec"]["store"]
    with pytest.raises(InvalidSpec, match=r"spec\.store is required"):
        ServedModelSpec.from_body(plain)
    assert ServedModelSpec.from_body(body()).server_ref is None


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"name": "Shared"}},
        {"spec": {}},
        {"spec": {"store": {"pvc": {"claimName": "m", "path": "/abs"}}}},
        {"spec": {"store": {"pvc": {"claimName": "m"}}, "capacity": {"savedModelFactor": 0}}},
        {
            "spec": {
                "store": {"pvc": {"claimName": "m"}},
                "server": {"recycle": {"afterReloads": 5}},
            }
        },
    ],
)
def test_a_modelserver_that_cannot_be_parsed_is_invalid(change: dict[str, Any]) -> None:
    broken = server_body()
    for key, value in change.items():
        broken[key] = {**broken[key], **value} if key == "metadata" else value
    with pytest.raises(InvalidSpec):
        ModelServerSpec.from_body(broken)


def test_the_modelserver_crd_and_the_model_have_the_same_fields_both_ways() -> None:
    crd_only: list[str] = []
    model_only: list[str] = []
    spec = crd_schema("modelserver.yaml")["properties"]["spec"]
    walk_both(spec, ModelServerSpecBody, "spec", crd_only, model_only)
    # A ModelServer's server settings are the ServedModel's, less the membership fields and
    # the reload memory guard (a ServedModel's own pods only; refused in the model too).
    assert crd_only == [] and model_only == [
        "spec.server.modelServerRef",
        "spec.server.memory",
        "spec.server.recycle",
    ]


def test_every_modelserver_crd_default_equals_the_models_default() -> None:
    spec_schema = crd_schema("modelserver.yaml")["properties"]["spec"]
    parsed = ModelServerSpecBody.model_validate({"store": {"pvc": {"claimName": "m"}}})
    defaults = crd_defaults(spec_schema)
    assert len(defaults) >= 6
    assert defaults_not_held(parsed, defaults) == []


def _structure(node: Any) -> Any:
    """A schema without its descriptions (they name the kind they belong to)."""
    if isinstance(node, dict):
        return {k: _structure(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_structure(v) for v in node]
    return node


def test_the_shared_servers_settings_are_a_servedmodels_spec_server() -> None:
    """Whatever a ServedModel's spec.server gains (pod settings...), a ModelServer's gains too:
    its schema is the same, less modelServerRef, memory and the rules about them, and recycle
    (the reload memory guard is a ServedModel's own pods' only)."""
    ours = crd_schema("modelserver.yaml")["properties"]["spec"]["properties"]["server"]
    theirs = copy.deepcopy(
        crd_schema("servedmodel.yaml")["properties"]["spec"]["properties"]["server"]
    )
    for member_only in ("modelServerRef", "memory", "recycle"):
        del theirs["properties"][member_only]
    theirs["x-kubernetes-validations"] = [
        rule for rule in theirs["x-kubernetes-validations"] if "modelServerRef" not in rule["rule"]
    ]
    assert _structure(ours) == _structure(theirs)


def test_every_modelserver_schema_field_has_a_description() -> None:
    assert undescribed(crd_schema("modelserver.yaml")) == []
