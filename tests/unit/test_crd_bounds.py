"""Every list, map and string of the ServedModel spec has a bound, every integer that sizes
something a maximum, and testing/largest.py reaches each bound (so the tests that create "the
largest ServedModel the API admits" really do). The API server's own refusals are in
tests/integration/test_crd.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from testing import largest

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "servedmodel.yaml").read_text())
[SCHEMA] = [v["schema"]["openAPIV3Schema"] for v in CRD["spec"]["versions"]]
SPEC = SCHEMA["properties"]["spec"]

# Integers without a maximum, and why none is needed: identities and durations that size
# nothing the operator or TF Serving allocates.
UNBOUNDED_INTEGERS = {
    "spec.versions[].version",  # a name (int64), as TF Serving's own
    "spec.serve.versions[]",  # must name a declared version (CEL)
    "spec.serve.labels{}",  # must name a declared version (CEL)
    "spec.rollout.canary",  # must name a declared version (CEL)
    "spec.rollout.steps[]",  # 1-100 (CEL)
    "spec.server.tolerations[].tolerationSeconds",  # a duration Kubernetes takes as it is
    "spec.exporter.tolerations[].tolerationSeconds",
    "spec.server.autoscaling.metrics[].resource.target.averageUtilization",
}


def walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def _normal(path: str) -> str:
    return path.replace(".containerResource.", ".resource.").replace(".pods.", ".resource.")


def test_every_list_map_and_string_of_the_spec_is_bounded() -> None:
    unbounded = []
    for path, node in walk(SPEC, "spec"):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), f"{path}: any object"
        kind = node.get("type") or (
            "int-or-string" if node.get("x-kubernetes-int-or-string") else None
        )
        bound = {"array": "maxItems", "string": "maxLength", "int-or-string": "maxLength"}.get(
            str(kind)
        )
        if kind == "object" and "additionalProperties" in node:
            bound = "maxProperties"
        if bound is not None and bound not in node and "enum" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_every_integer_that_sizes_something_has_a_maximum() -> None:
    unbounded = {
        path
        for path, node in walk(SPEC, "spec")
        if node.get("type") == "integer" and "maximum" not in node
    }
    # A port, bounded by its format (int32) and by the Gateway API itself.
    unbounded.discard("spec.rollout.parentRefs[].port")
    allowed = UNBOUNDED_INTEGERS | {
        p.replace(".resource.", f".{kind}.")
        for p in UNBOUNDED_INTEGERS
        for kind in ("containerResource", "pods", "object", "external")
    }
    assert unbounded <= allowed, sorted(unbounded - allowed)
    assert SPEC["properties"]["server"]["properties"]["replicas"]["maximum"] == 1000


def test_the_bounds_are_stated_where_kubectl_explain_shows_them() -> None:
    versions = SPEC["properties"]["versions"]
    assert f"At most {versions['maxItems']} entries" in versions["description"]
    for part in ("server", "exporter"):
        resources = SPEC["properties"][part]["properties"]["resources"]
        assert "ephemeral-storage at most" in resources["description"]
        assert "1Ti" in resources["description"]


def test_the_largest_servedmodel_reaches_every_bound() -> None:
    """Walk testing/largest.py's object beside the schema: every list at maxItems, every map
    at maxProperties, every string at maxLength, every bounded integer at its maximum, save
    the few values a CEL rule or another field forbids at the bound."""
    below: list[str] = []

    def visit(schema: dict[str, Any], value: Any, path: str) -> None:
        if isinstance(value, list):
            if "maxItems" in schema and len(value) != schema["maxItems"]:
                below.append(f"{path} ({len(value)}/{schema['maxItems']})")
            for item in value:
                visit(schema.get("items") or {}, item, f"{path}[]")
        elif isinstance(value, dict):
            if "additionalProperties" in schema:
                if "maxProperties" in schema and len(value) != schema["maxProperties"]:
                    below.append(f"{path} ({len(value)}/{schema['maxProperties']})")
                for item in value.values():
                    visit(schema["additionalProperties"], item, f"{path}{{}}")
            for name, child in (schema.get("properties") or {}).items():
                if name not in value:
                    below.append(f"{path}.{name} (absent)")
                else:
                    visit(child, value[name], f"{path}.{name}")
        elif isinstance(value, str) and "maxLength" in schema:
            if len(value) != schema["maxLength"]:
                below.append(f"{path} ({len(value)}/{schema['maxLength']})")
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value != schema.get("maximum", value)
        ):
            below.append(f"{path} ({value}/{schema['maximum']})")

    visit(SPEC, largest.largest("x" * largest.MAX_NAME)["spec"], "spec")
    found = set(below)
    # One MetricSpec type per metric (the largest, Object), one source kind per version (s3),
    # and the values that CEL or Kubernetes tie to others.
    allowed = {
        *(
            f"spec.server.autoscaling.metrics[].{kind} (absent)"
            for kind in ("resource", "containerResource", "pods", "external")
        ),
        "spec.server.autoscaling.metrics[].object.target.averageUtilization (absent)",
        "spec.versions[].source.gcs (absent)",
        # Refused by CEL (v1alpha1 takes literal values only); its shape is there to say so.
        "spec.server.env[].valueFrom (absent)",
        "spec.exporter.env[].valueFrom (absent)",
        # A NetworkPolicy peer is an IP block or selectors, never both.
        "spec.server.networkPolicy.from[].ipBlock (absent)",
        "spec.server.networkPolicy.from[].podSelector (absent)",
        "spec.server.networkPolicy.from[].namespaceSelector (absent)",
        "spec.rollout.parentRefs[].namespace (absent)",  # default: the ServedModel's own
        "spec.rollout.parentRefs[].group (25/253)",  # gateway.networking.k8s.io
        "spec.rollout.parentRefs[].kind (7/63)",  # Gateway
        "spec.server.batching.allowedBatchSizes[] (1048513/1048576)",  # ascending to the max
        # A member's (CEL refuses them beside the other server fields; a member is smaller).
        "spec.server.modelServerRef (absent)",
        "spec.server.memory (absent)",
    }
    allowed |= {
        f"spec.server.batching.allowedBatchSizes[] ({n}/1048576)" for n in range(1048513, 1048576)
    }
    assert found <= allowed, sorted(found - allowed)
