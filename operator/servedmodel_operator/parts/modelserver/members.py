"""A ModelServer's members as claims on its shared file (pure): what each member wants served,
from its own spec and status, and how much memory that takes.

Read from the member's ServedModel (spec and status, as the watch caches hold them): the
ModelServer never writes a member, and a member never writes the ModelServer's objects.
- Exported versions: the member's status, only when it says they were exported into this
  server's store (`status.server.store`): a member that just joined from elsewhere re-exports
  (an export of a version already in the store from the same source writes nothing).
- Versions TF Serving failed to load on the shared pods are withheld (a label the spec moves to
  one stays where it is; a label already on one is dropped, with the version): a pod that
  starts with a model whose newest loaded version ends in error does not
  start at all (ServerCore::Create waits for every model of its first config and fails:
  server_core.cc, load_servables_fast.cc), which would take every member down with it. The
  failure is remembered in the ModelServer's status until the member's spec changes.
- Memory: the member's declared spec.server.memory, or the bytes of its SavedModels
  (status.versions[].savedModelBytes, from the exporter) times capacity.savedModelFactor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from servedmodel_operator.api.quantity import quantity_bytes
from servedmodel_operator.api.spec import InvalidSpec, ModelServerSpec, ServedModelSpec
from servedmodel_operator.parts.modelserver.shared import Claim
from servedmodel_operator.parts.serving.pods import PodReport
from servedmodel_operator.parts.serving.selection import Served, select
from servedmodel_operator.parts.text import safe

MAX_FAILURES = 100


def store_id(server: ModelServerSpec) -> str:
    """<claim>:<path>: which store a member's versions were exported into."""
    pvc = server.spec.store.pvc
    return f"{pvc.claim_name}:{'/'.join(p for p in pvc.path.split('/') if p)}"


@dataclass(frozen=True)
class Failure:
    """A member's version TF Serving failed to load on the shared pods."""

    member: str
    uid: str
    generation: int
    version: int
    error: str

    def to_status(self) -> dict[str, object]:
        return {
            "member": self.member,
            "uid": self.uid,
            "generation": self.generation,
            "version": self.version,
            "error": safe(self.error, 300),
        }

    @classmethod
    def of(cls, entry: Mapping[str, object]) -> Failure | None:
        try:
            return cls(
                str(entry["member"]),
                str(entry["uid"]),
                int(entry["generation"]),  # type: ignore[call-overload]
                int(entry["version"]),  # type: ignore[call-overload]
                str(entry.get("error") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Member:
    """A ServedModel that names the ModelServer: its spec as the server serves it (None when it
    cannot be parsed), and what its status says about its exports."""

    name: str
    created: str
    body: Mapping[str, object]
    model: ServedModelSpec | None
    error: str = ""

    @classmethod
    def of(cls, body: Mapping[str, object], server: ModelServerSpec) -> Member:
        meta = body.get("metadata") or {}
        assert isinstance(meta, Mapping)
        name, created = str(meta.get("name", "")), str(meta.get("creationTimestamp") or "")
        try:
            model = ServedModelSpec.from_body(body).joined(server)
        except InvalidSpec as exc:
            return cls(name, created, body, None, str(exc)[:300])
        return cls(name, created, body, model)

    @property
    def status(self) -> Mapping[str, object]:
        status = self.body.get("status") or {}
        return status if isinstance(status, Mapping) else {}

    def exported(self, server: ModelServerSpec) -> dict[int, int | None]:
        """version -> savedModelBytes (None: not reported) of the versions its status says are
        exported into this server's store."""
        joined = self.status.get("server") or {}
        if not isinstance(joined, Mapping) or joined.get("store") != store_id(server):
            return {}
        if joined.get("name") != server.name:
            return {}
        out: dict[int, int | None] = {}
        for entry in self.status.get("versions") or []:  # type: ignore[attr-defined]
            if isinstance(entry, Mapping) and entry.get("state") == "Exported":
                size = entry.get("savedModelBytes")
                try:
                    out[int(entry["version"])] = int(size) if size is not None else None
                except (KeyError, TypeError, ValueError):
                    continue
        return out


def failures_kept(
    previous: Iterable[Mapping[str, object]], members: Sequence[Member]
) -> list[Failure]:
    """The remembered load failures that still hold: same member object, same generation."""
    current = {(m.model.uid, m.model.generation) for m in members if m.model is not None}
    kept = [f for e in previous if (f := Failure.of(e)) is not None]
    return [f for f in kept if (f.uid, f.generation) in current]


def failures_seen(
    member: Member, configured: Iterable[int], reports: Mapping[str, PodReport], digest: str
) -> list[Failure]:
    """Versions of the member's current entry a pod reports failed, under that entry, that
    its current spec still serves. A failure is recorded against the member's generation: one
    that came after the version was dropped (the entry not rewritten yet when the server
    first looks) is not its to carry, and kept it Stalled until its next spec change."""
    assert member.model is not None
    wanted = set(select(member.model, configured).versions)  # a subset of configured
    out: dict[int, str] = {}
    for report in reports.values():
        if report.config != digest or report.error is not None:
            continue
        for version, state in report.versions.items():
            if version in wanted and state.failed:
                out.setdefault(version, state.error)
    return [
        Failure(member.name, member.model.uid, member.model.generation, v, e)
        for v, e in sorted(out.items())
    ]


def claim(member: Member, server: ModelServerSpec, failed: Iterable[int]) -> Claim | None:
    """The member's claim on the shared file (None: it cannot be parsed)."""
    model = member.model
    if model is None:
        return None
    exported = member.exported(server)
    broken = frozenset(failed)
    wanted = withheld(model, exported, broken)
    declared = model.spec.server.memory
    return Claim(
        member.name,
        model.uid,
        model.model_name,
        member.created,
        wanted if wanted.versions or wanted.declared else None,
        sizes={v: s for v, s in exported.items() if s is not None},
        declared=quantity_bytes(str(declared)) if declared is not None else None,
        factor=server.spec.capacity.saved_model_factor,
        failed=broken,
    )


def withheld(model: ServedModelSpec, exported: Iterable[int], failed: Iterable[int]) -> Served:
    """What a member asks to serve: versions that failed to load withheld, and a label to one
    kept where it is (as for a version still exporting: a move to it would be refused)."""
    return select(model, set(exported) - set(failed))


def capacity(server: ModelServerSpec) -> int | None:
    memory = server.spec.capacity.memory
    return quantity_bytes(str(memory)) if memory is not None else None
