"""Store directories (pure): no two ServedModels' directories on one claim may overlap.

A ServedModel's versions live in `<store.pvc.path>/<modelName>` of its claim, which its pods
mount (a subPath). Two such directories overlap when one is the other or lies inside it, by
path segments (`team` overlaps `team/fraud`; `tea` does not): the later ServedModel would get
the other's versions mounted read-write in its exporter and prune Jobs, or read as its own. The
first (by creation time, then name) keeps its directory; the other is Stalled/StoreConflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from servedmodel_operator.api.layout import model_subpath
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.admission.policy import Refusal

Sharer = tuple[str, str, str]  # (created, name, directory) of a ServedModel on one claim
StoreKey = tuple[str, str, str, str]  # (namespace, claim, "dir" or "under", directory)


def store_key(namespace: str | None, spec: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, claim): every ServedModel on one store claim, under one key."""
    pvc = (spec.get("store") or {}).get("pvc") or {}
    return (str(namespace), str(pvc.get("claimName")))


def store_dir(name: str, spec: Mapping[str, Any]) -> str:
    """`<store.pvc.path>/<modelName>` with empty segments dropped: the model's directory."""
    pvc = (spec.get("store") or {}).get("pvc") or {}
    path = [p for p in str(pvc.get("path") or "").split("/") if p]
    return "/".join([*path, str(spec.get("modelName") or name)])


def store_keys(namespace: str | None, name: str, spec: Mapping[str, Any]) -> list[StoreKey]:
    """Where the store index keeps a ServedModel: at its directory ("dir"), and under its
    directory and each one above it ("under"). The models a directory overlaps are then found
    in a few lookups (overlap_keys), not by scanning every model of the claim: with thousands
    on one claim, that scan was the one part of a reconcile that grew with the fleet."""
    ns, claim = store_key(namespace, spec)
    parts = store_dir(name, spec).split("/")
    under = [(ns, claim, "under", "/".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return [(ns, claim, "dir", "/".join(parts)), *under]


def overlap_keys(namespace: str | None, name: str, spec: Mapping[str, Any]) -> list[StoreKey]:
    """Where the models whose directory overlaps this one's are kept: those at it or inside
    it (under it), and those at each directory above it."""
    ns, claim = store_key(namespace, spec)
    parts = store_dir(name, spec).split("/")
    above = [(ns, claim, "dir", "/".join(parts[:i])) for i in range(1, len(parts))]
    return [(ns, claim, "under", "/".join(parts)), *above]


def dirs_overlap(a: str, b: str) -> bool:
    """Whether one directory is the other or inside it, by path segments."""
    first, second = a.split("/"), b.split("/")
    shortest = min(len(first), len(second))
    return first[:shortest] == second[:shortest]


def earlier_overlapping(
    name: str, created: str, spec: Mapping[str, Any], sharers: Iterable[Sharer]
) -> tuple[Sharer, ...]:
    """Of the ServedModels on one claim (or those found at its overlap_keys), those whose
    directory overlaps this one's and that came first (by creation time, then name)."""
    mine, directory = (created, name), store_dir(name, spec)
    return tuple(
        sorted(
            {
                (str(when), str(other), str(theirs))
                for when, other, theirs in sharers
                if (when, other) < mine and other != name and dirs_overlap(theirs, directory)
            }
        )
    )


def store_conflict(model: ServedModelSpec, _created: str, name: str, theirs: str) -> Refusal:
    """Another ServedModel came first to a directory of the same claim that is this one's,
    or holds it, or lies inside it."""
    claim, mine = model.store.pvc.claim_name, model_subpath(model)
    mine_parts, their_parts = mine.split("/"), theirs.split("/")
    how = (
        "is the same directory"
        if mine_parts == their_parts
        else "lies inside it"
        if len(mine_parts) > len(their_parts)
        else "holds it"
    )
    return Refusal(
        "StoreConflict",
        f"ServedModel {name} already uses {claim}:{theirs} (it came first), and this one's "
        f"directory {claim}:{mine} {how}: the store directories (<store.pvc.path>/<modelName>) "
        "of two ServedModels on one claim must not overlap, or one's versions would be mounted "
        "read-write in the other's exporter and prune Jobs (or read as its versions); give "
        "this one another modelName or store.pvc.path",
    )
