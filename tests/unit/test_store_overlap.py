"""Store directories never overlap: on one claim, a ServedModel whose `<path>/<modelName>` is
another's, holds it or lies inside it (by path segments) is StoreConflict unless it came first
(parts/admission/stores.py: dirs_overlap, earlier_overlapping, store_conflict; the
store index)."""

from __future__ import annotations

from typing import Any

import pytest
from servedmodel_operator.adapters.cache import StoreIndex
from servedmodel_operator.api.spec import DEFAULT_EXPORTER_IMAGE
from servedmodel_operator.controller.runtime import keep_store
from servedmodel_operator.parts.admission.stores import (
    dirs_overlap,
    earlier_overlapping,
    overlap_keys,
    store_dir,
    store_key,
    store_keys,
)
from servedmodel_operator.parts.observed import Observed
from servedmodel_operator.parts.plan import plan

from tests.unit.builders import body, model

NOW = "2026-11-25T10:00:00Z"


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("team/fraud", "team/fraud", True),
        ("team", "team/fraud", True),
        ("team/fraud", "team", True),
        ("team/fraud/1", "team/fraud", True),  # modelName "1" under another model (refused too)
        ("tea", "team/fraud", False),  # segments, not characters
        ("team/fraud", "team/fraudster", False),
        ("team/fraud", "team/spam", False),
        ("a/team", "team", False),
    ],
)
def test_directories_overlap_by_segments(a: str, b: str, overlap: bool) -> None:
    assert dirs_overlap(a, b) is overlap
    assert dirs_overlap(b, a) is overlap


def _spec(path: str = "", model_name: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"store": {"pvc": {"claimName": "models", "path": path}}}
    if model_name:
        spec["modelName"] = model_name
    return spec


def test_a_models_directory_is_its_path_and_model_name_by_segments() -> None:
    assert store_dir("fraud", _spec()) == "fraud"
    assert store_dir("fraud", _spec("/team//a/")) == "team/a/fraud"
    assert store_dir("x", _spec("team", "fraud")) == "team/fraud"
    assert store_key("ml", _spec("team", "fraud")) == ("ml", "models")


def _body(name: str, created: str, **spec: Any) -> dict[str, Any]:
    b = body(**spec)
    b["metadata"].update(name=name, creationTimestamp=created)
    return b


def test_the_index_holds_a_model_at_its_directory_and_under_each_one_above() -> None:
    stores = StoreIndex()
    keep_store(
        stores, _body("hostile", "t2", store={"pvc": {"claimName": "models", "path": "team"}})
    )
    entry = ("t2", "hostile", "team/hostile")
    for key in (
        ("ml", "models", "dir", "team/hostile"),
        ("ml", "models", "under", "team"),
        ("ml", "models", "under", "team/hostile"),
    ):
        assert stores.get(key) == [entry]
    assert stores.get(("ml", "models", "dir", "team")) == []
    keep_store(stores, _body("hostile", "t2"), deleted=True)
    assert stores.get(("ml", "models", "under", "team")) == []
    # Where a model looks for overlaps: what is at or under its directory, what is above it.
    assert overlap_keys("ml", "x", _spec("team/fraud", "deep")) == [
        ("ml", "models", "under", "team/fraud/deep"),
        ("ml", "models", "dir", "team"),
        ("ml", "models", "dir", "team/fraud"),
    ]
    # Every overlapping model is found there, and no other.
    index: dict[Any, list[Any]] = {}
    for name, spec in (("a", _spec("team")), ("b", _spec("team/b")), ("c", _spec("other"))):
        for key in store_keys("ml", name, spec):
            index.setdefault(key, []).append(("t", name, store_dir(name, spec)))
    for name, spec, overlapping in (
        ("team", _spec(), {"a", "b"}),  # holds team/a and team/b
        ("x", _spec("team/a"), {"a"}),  # team/a/x lies inside team/a
        ("b", _spec("team"), {"b"}),  # is team/b
        ("y", _spec("oth"), set()),  # oth/y: a neighbour of nothing
    ):
        found_names = {e[1] for k in overlap_keys("ml", name, spec) for e in index.get(k, ())}
        assert found_names == overlapping, name


@pytest.mark.parametrize(
    ("mine", "created", "conflicts"),
    [
        # A model with modelName unset over another model's team/fraud: its team/<name>...
        (_spec("", "team"), "2026-11-25T10:00:00Z", ["fraud"]),
        # ...the same directory, a directory inside it, or holding it, all conflict.
        (_spec("team", "fraud"), "2026-11-25T10:00:00Z", ["fraud"]),
        (_spec("team/fraud", "copy"), "2026-11-25T10:00:00Z", ["fraud"]),
        # A neighbour does not.
        (_spec("team", "spam"), "2026-11-25T10:00:00Z", []),
        (_spec("tea", "m"), "2026-11-25T10:00:00Z", []),
        # The first owner keeps it: created before the other, nothing is earlier.
        (_spec("", "team"), "2026-11-25T08:00:00Z", []),
    ],
)
def test_the_later_of_two_overlapping_models_yields(
    mine: dict[str, Any], created: str, conflicts: list[str]
) -> None:
    sharers = [("2026-11-25T09:00:00Z", "fraud", "team/fraud"), (created, "me", "ignored")]
    b = _body("me", created, **mine)
    assert [name for _, name, _ in _earlier("me", b, sharers)] == conflicts


def _earlier(name: str, body: dict[str, Any], sharers: Any) -> Any:
    return earlier_overlapping(
        name, body["metadata"]["creationTimestamp"], body.get("spec") or {}, sharers
    )


def test_ties_on_creation_time_go_to_the_first_name() -> None:
    sharers = [("t", "alpha", "shared"), ("t", "beta", "shared")]
    assert _earlier("beta", _body("beta", "t", modelName="shared"), sharers) == (
        ("t", "alpha", "shared"),
    )
    assert _earlier("alpha", _body("alpha", "t", modelName="shared"), sharers) == ()


@pytest.mark.parametrize(
    ("spec", "theirs", "how"),
    [
        (
            {"modelName": "fraud", "store": {"pvc": {"claimName": "models", "path": "team"}}},
            "team/fraud",
            "is the same directory",
        ),
        (
            {"modelName": "team", "store": {"pvc": {"claimName": "models"}}},
            "team/fraud",
            "holds it",
        ),
        (
            {
                "modelName": "deeper",
                "store": {"pvc": {"claimName": "models", "path": "team/fraud"}},
            },
            "team/fraud",
            "lies inside it",
        ),
    ],
)
def test_the_refusal_names_the_other_model_the_directories_and_the_rule(
    spec: dict[str, Any], theirs: str, how: str
) -> None:
    p = plan(
        model(**spec),
        Observed(store_sharers=(("2026-11-25T09:00:00Z", "fraud", theirs),)),
        DEFAULT_EXPORTER_IMAGE,
        NOW,
    )
    assert p.apply == [] and p.delete == [] and p.status is not None
    stalled = next(c for c in p.status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "StoreConflict"
    message = stalled["message"]
    assert f"ServedModel fraud already uses models:{theirs} (it came first)" in message
    assert how in message and "must not overlap" in message
