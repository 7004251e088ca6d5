"""The shape every part of a reconcile returns, and what every part is given.

A reconcile is composed of parts (admission, exports, delivery, serving, autoscaling,
retention), each a pure `plan(...)` over its own slice of what was observed. Each returns a
Part: the objects it wants (with the live object the watch caches hold, for drift), the owned
objects it wants gone, what it found (typed per part, read by the status conditions), the
events it posts, and when to look again regardless of watch events. plan.py composes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from servedmodel_operator.api.site import Site
from servedmodel_operator.api.spec import ServedModelSpec
from servedmodel_operator.parts.observed import Observed

F = TypeVar("F")

Desired = tuple[dict[str, Any], Mapping[str, Any] | None]  # (manifest, its live object)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str  # CamelCase
    message: str


@dataclass(frozen=True)
class Context:
    """What every part is given: the parsed spec, what was observed, the reconcile's one
    clock (every part judges the same instant), the operator's default exporter image, and
    what the operator knows of its own place in the cluster (api/site.py)."""

    model: ServedModelSpec
    observed: Observed
    now: str
    exporter_image: str
    site: Site = field(default_factory=Site)


@dataclass(frozen=True)
class Part(Generic[F]):
    findings: F
    desired: tuple[Desired, ...] = ()
    delete: tuple[Mapping[str, Any], ...] = ()
    events: tuple[Event, ...] = ()
    requeue: float | None = None  # seconds until a look is due even if nothing changes
