"""Which pods the operator reads, and whose objects it writes: labels anyone can set decide
neither (kinds.serving_pod_owner, policy.foreign)."""

from __future__ import annotations

from typing import Any

import pytest
from servedmodel_operator.api import kinds
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.admission import policy
from servedmodel_operator.parts.serving import modelsconfig
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig
from servedmodel_operator.render import labels
from servedmodel_operator.render.configmap import configmap
from servedmodel_operator.render.deployment import canary_deployment, deployment
from servedmodel_operator.render.service import service, track_service

from tests.unit.builders import body


def _pod(
    instance: str = "mnist",
    track: str = "stable",
    digest: str = "6d9f8c7b5",
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": f"{instance}{'-canary' if track == 'canary' else ''}-{digest}",
        "uid": "rs-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/instance": instance,
                "app.kubernetes.io/component": "server",
                "app.kubernetes.io/managed-by": "servedmodel-operator",
                labels.TRACK_LABEL: track,
                kinds.POD_TEMPLATE_HASH: digest,
            },
            "ownerReferences": [ref if owner is None else owner],
        },
    }


def test_pods_of_its_own_replicasets_are_trusted() -> None:
    assert kinds.serving_pod_owner(_pod()) == "mnist"
    assert kinds.serving_pod_owner(_pod(track="canary")) == "mnist"


@pytest.mark.parametrize(
    "pod",
    [
        # A pod anyone created with the right labels and no owner, or another controller.
        {**_pod(), "metadata": {**_pod()["metadata"], "ownerReferences": []}},
        _pod(owner={"apiVersion": "batch/v1", "kind": "Job", "name": "x", "controller": True}),
        _pod(
            owner={
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": "mnist-6d9f8c7b5",
                "controller": True,
            }
        ),
        # The ReplicaSet of another Deployment, or not the controller.
        _pod(
            owner={
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "payments-6d9f8c7b5",
                "controller": True,
            }
        ),
        _pod(owner={"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "mnist-6d9f8c7b5"}),
        # A hash label that is not its ReplicaSet's, a track its Deployment does not have.
        _pod(
            owner={
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "mnist-other",
                "controller": True,
            }
        ),
        {
            **_pod(),
            "metadata": {
                **_pod()["metadata"],
                "labels": {**_pod()["metadata"]["labels"], labels.TRACK_LABEL: "shadow"},
            },
        },
        # A canary-labelled pod of the stable ReplicaSet (and the other way round).
        _pod(
            track="canary",
            owner={
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "mnist-6d9f8c7b5",
                "controller": True,
            },
        ),
        _pod(
            owner={
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "mnist-canary-6d9f8c7b5",
                "controller": True,
            }
        ),
    ],
)
def test_pods_that_only_carry_the_labels_are_not_read(pod: dict[str, Any]) -> None:
    assert kinds.serving_pod_owner(pod) is None
    assert kinds.SERVER_PODS.owner_of(pod) is None  # the serving pods' index key


def test_the_index_keys_trusted_pods_by_their_servedmodel() -> None:
    assert kinds.SERVER_PODS.owner_of(_pod()) == "mnist"
    assert kinds.SERVER_PODS.served_by(_pod()) == "mnist"


def _model(name: str, uid: str, **spec: Any) -> ServedModelSpec:
    b = body(**spec)
    b["metadata"].update(name=name, uid=uid)
    return ServedModelSpec.from_body(b)


def _live(manifest: dict[str, Any], owner: ServedModelSpec) -> dict[str, Any]:
    return {
        **manifest,
        "metadata": {**manifest["metadata"], "ownerReferences": [labels.owner_reference(owner)]},
    }


def test_a_name_ending_in_canary_cannot_take_another_models_rollout_objects() -> None:
    """ServedModel `a-canary`'s own objects have the names of `a`'s rollout objects. Whichever
    comes second finds the other's live object and is refused (ResourceConflict), both ways."""
    rollout = {"canary": 2}
    a = _model("a", "uid-a", rollout=rollout)
    squatter = _model("a-canary", "uid-squatter")
    a_rollout = [
        canary_deployment(a, 1),
        configmap(a, modelsconfig.render_for(a, ModelsConfig((2,), {})), labels.CANARY),
        *(track_service(a, t) for t in (labels.STABLE, labels.CANARY)),
    ]
    squatters = [
        deployment(squatter, True),
        service(squatter),
        configmap(squatter, modelsconfig.render_for(squatter, ModelsConfig((1,), {}))),
    ]
    names = {(m["kind"], m["metadata"]["name"]) for m in a_rollout}
    clashes = [m for m in squatters if (m["kind"], m["metadata"]["name"]) in names]
    assert {(m["kind"], m["metadata"]["name"]) for m in clashes} == {
        ("Deployment", "a-canary"),
        ("Service", "a-canary"),
        ("ConfigMap", "a-canary-tfserving"),
    }
    for mine in clashes:
        theirs = next(
            m
            for m in a_rollout
            if (m["kind"], m["metadata"]["name"]) == (mine["kind"], mine["metadata"]["name"])
        )
        # a came first: the squatter is refused...
        refused = policy.foreign(mine, _live(theirs, a), squatter.uid)
        assert refused is not None and refused.reason == "ResourceConflict"
        assert "uid-a" in refused.message
        # ...and the squatter came first: a's rollout is refused.
        refused = policy.foreign(theirs, _live(mine, squatter), a.uid)
        assert refused is not None and "uid-squatter" in refused.message
        # Each may rewrite its own.
        assert policy.foreign(theirs, _live(theirs, a), a.uid) is None
