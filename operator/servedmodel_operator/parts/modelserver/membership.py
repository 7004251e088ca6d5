"""A member's side of a ModelServer (pure): a ServedModel with spec.server.modelServerRef.

The member's reconcile keeps what a ServedModel's always keeps, its exports (Jobs it owns,
writing into `<server store>/<modelName>`) and its own status, and writes nothing of the
server's: no Deployment, ConfigMap or Service of its own (a leftover one from before it joined
is deleted). Its serving findings are read off the server: its entry of the shared
models.config, the server's pods and their readings of its model, the server's Deployment, and
what the ModelServer's status says about it (admitted, waiting for room, a model-name conflict,
versions withheld after a failed load). With those, the conditions and status of a dedicated
ServedModel keep their meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from servedmodel_operator.api.layout import GRPC_PORT, REST_PORT, model_url_path
from servedmodel_operator.api.names import Track
from servedmodel_operator.api.quantity import quantity_bytes
from servedmodel_operator.api.spec import ModelServerSpec, ServedModelSpec
from servedmodel_operator.parts.admission.policy import Refusal
from servedmodel_operator.parts.modelserver import members as membership
from servedmodel_operator.parts.modelserver.evidence import ServerState
from servedmodel_operator.parts.modelserver.shared import Claim, State, decide, size_text
from servedmodel_operator.parts.observed import Shared
from servedmodel_operator.parts.part import Context, Event, Part
from servedmodel_operator.parts.serving.modelsconfig import ModelsConfig, Transition
from servedmodel_operator.parts.serving.part import (
    DeploymentProgress,
    ServingFindings,
    serving_events,
)
from servedmodel_operator.parts.serving.selection import Served
from servedmodel_operator.render import modelserver as render

WAITING_FOR_SERVER = "WaitingForModelServer"


@dataclass(frozen=True)
class MemberFindings:
    """Where the member stands on its ModelServer."""

    server: str
    state: str  # Serving | Pending | Conflict (the ModelServer's view), or WAITING_FOR_SERVER
    reason: str
    message: str = ""
    failed: Mapping[int, str] = field(default_factory=dict)  # version -> TF Serving's error

    @property
    def waits_for_room(self) -> bool:
        return self.reason in ("InsufficientCapacity", "WaitingForCapacity")


def server_state(shared: Shared) -> ServerState:
    """The ModelServer's objects as a member's reconcile reads them."""
    return ServerState.of(shared.configmap, shared.deployment, shared.pods)


def not_found(model: ServedModelSpec, reason: str = "") -> Refusal:
    return Refusal(
        "ModelServerNotFound",
        f"ModelServer {model.server_ref} does not exist in namespace {model.namespace}"
        + (f" ({reason})" if reason else "")
        + ": a member joins a ModelServer of its own namespace; create it, or fix "
        "spec.server.modelServerRef",
    )


def findings(model: ServedModelSpec, shared: Shared, state: ServerState) -> MemberFindings:
    """The member's standing, from the ModelServer's status (its one writer's decision)."""
    status = (shared.server or {}).get("status") or {}
    server = str(model.server_ref)
    failed = {
        f.version: f.error
        for e in status.get("failedVersions") or []
        if (f := membership.Failure.of(e)) is not None
        and f.uid == model.uid
        and f.generation == model.generation
    }
    for row in status.get("waiting") or []:
        if row.get("name") == model.name and row.get("state") != "Leaving":
            return MemberFindings(
                server,
                str(row.get("state") or State.PENDING),
                str(row.get("reason") or ""),
                str(row.get("message") or ""),
                failed,
            )
    entry = state.file.entries.get(model.model_name)
    if entry is not None and entry.owner == model.uid:
        return MemberFindings(server, str(State.SERVING), "Serving", failed=failed)
    return MemberFindings(
        server,
        WAITING_FOR_SERVER,
        WAITING_FOR_SERVER,
        f"ModelServer {server} has not added model {model.model_name} to its models.config yet",
        failed,
    )


def refusals(model: ServedModelSpec, shared: Shared, member: MemberFindings) -> list[Refusal]:
    """A model-name conflict stops the member's writes too: its exports would go into the
    directory of the member that has the name. The member sees it itself, from the first
    reconcile (the server decides the same from the same rule, for its file)."""
    if shared.taken_by is not None:
        return [
            Refusal(
                "ModelNameConflict",
                f"ServedModel {shared.taken_by} already serves model {model.model_name} on "
                f"ModelServer {member.server} (it came first): give this one another modelName",
            )
        ]
    if member.state == str(State.CONFLICT):
        return [Refusal(member.reason or "ModelNameConflict", member.message)]
    return []


def wanted(model: ServedModelSpec, exported: frozenset[int], member: MemberFindings) -> Served:
    """What the ModelServer is asked to serve for it (parts/modelserver/members.claim)."""
    return membership.withheld(model, exported, member.failed)


def serving_plan(
    ctx: Context,
    exported: frozenset[int],
    shared: Shared,
    member: MemberFindings,
) -> Part[ServingFindings]:
    """The member's serving findings, from the server: its entry, the step the server takes
    for it (the same per-model step: `decide` for this member alone, capacity and conflicts
    aside, which the server's status says), the readings of its model. Its own serving objects
    from before it joined, if any, go."""
    model, observed = ctx.model, ctx.observed
    state = server_state(shared)
    want = wanted(model, exported, member)
    track = state.track(model.model_name, shared.reports)
    claim = Claim(
        model.name,
        model.uid,
        model.model_name,
        "",
        want if want.versions or want.declared else None,
        failed=frozenset(member.failed),
    )
    decision = decide(state.file, [claim], {model.model_name: state.evidence(shared.reports)})
    [outcome] = decision.outcomes
    transition = outcome.transition or Transition(track.config or ModelsConfig(()), ())
    if member.waits_for_room and member.state != str(State.SERVING):
        transition = Transition(track.config or ModelsConfig(()), ())
    findings = ServingFindings(want, transition, track, DeploymentProgress.of(shared.deployment))
    return Part(
        findings,
        delete=_leftovers(ctx),
        events=tuple(serving_events(observed.status, track.view)),
    )


def _leftovers(ctx: Context) -> tuple[Mapping[str, Any], ...]:
    """The member's own serving objects from before it joined (they go): its Deployment,
    ConfigMap, Service, PodDisruptionBudget and NetworkPolicy, those that exist."""
    names, observed = ctx.model.names, ctx.observed
    return tuple(
        o
        for o in (
            observed.child("Deployment", names.deployment),
            observed.child("ConfigMap", names.configmap),
            observed.child("Service", names.service),
            observed.child("PodDisruptionBudget", names.disruption_budget_of(Track.STABLE)),
            observed.child("NetworkPolicy", names.network_policy),
        )
        if o is not None
    )


def endpoints(model: ServedModelSpec, server: ModelServerSpec) -> dict[str, str]:
    """Clients reach a member through its server's Service, naming the member's model."""
    host = f"{server.names.service}.{server.namespace}.svc"
    return {
        "grpc": f"{host}:{GRPC_PORT}",
        "rest": f"http://{host}:{REST_PORT}{model_url_path(model)}",
    }


def status_section(
    model: ServedModelSpec, server: ModelServerSpec, member: MemberFindings, need: str = ""
) -> dict[str, Any]:
    out = {
        "name": server.name,
        "service": server.names.service,
        "store": membership.store_id(server),
        "state": member.state,
    }
    if need:
        out["memory"] = need
    return out


def need(
    model: ServedModelSpec, server: ModelServerSpec, status: Mapping[str, Any], shared: Shared
) -> str:
    """The memory the member's entry needs on each pod, as its server counts it."""
    entry = server_state(shared).file.config(model.model_name)
    if entry is None:
        return ""
    sizes = {
        int(v["version"]): int(v["savedModelBytes"])
        for v in status.get("versions") or []
        if isinstance(v.get("savedModelBytes"), int)
    }
    declared = model.spec.server.memory
    claim = Claim(
        model.name,
        model.uid,
        model.model_name,
        "",
        None,
        sizes=sizes,
        declared=quantity_bytes(str(declared)) if declared is not None else None,
        factor=server.spec.capacity.saved_model_factor,
    )
    return size_text(claim.need(set(entry.versions)))


def with_membership(
    status: dict[str, Any],
    model: ServedModelSpec,
    server: ModelServerSpec,
    member: MemberFindings,
    shared: Shared,
) -> dict[str, Any]:
    """A member's status: a ServedModel's, its endpoints the server's Service, plus which
    server serves it, where it stands there, and what its entry needs."""
    status["endpoints"] = endpoints(model, server)
    status["selector"] = render.selector_string(server)
    status["server"] = status_section(model, server, member, need(model, server, status, shared))
    if member.state != str(State.SERVING):
        # Not in the server's file: not a server being created, a member not added yet.
        for condition in status.get("conditions") or []:
            if condition.get("type") == "Available" and condition.get("status") != "False":
                condition.update(
                    status="Unknown",
                    reason=member.reason or WAITING_FOR_SERVER,
                    message=f"model {model.model_name} is not in ModelServer {server.name}'s "
                    "models.config" + (f": {member.message}" if member.message else ""),
                )
    return status


def membership_events(previous: Mapping[str, Any], member: MemberFindings) -> list[Event]:
    before = (previous.get("server") or {}).get("state")
    if before == member.state:
        return []
    if member.state == str(State.SERVING):
        return [
            Event(
                "Normal",
                "JoinedModelServer",
                f"served by ModelServer {member.server} (its models.config names this model)",
            )
        ]
    if member.waits_for_room or member.state == str(State.CONFLICT):
        return [Event("Warning", member.reason, f"ModelServer {member.server}: {member.message}")]
    return []


def exported_here(status: Mapping[str, Any], server: ModelServerSpec) -> Mapping[str, Any]:
    """The member's previous status as the exports part reads it: version states recorded for
    another store (before it joined, or another server's) do not count here. An export of a
    version already in this store from the same source writes nothing."""
    joined = status.get("server") or {}
    if joined.get("store") == membership.store_id(server) and joined.get("name") == server.name:
        return status
    return {k: v for k, v in status.items() if k != "versions"}


def exported_elsewhere(status: Mapping[str, Any], model: ServedModelSpec) -> Mapping[str, Any]:
    """A ServedModel that left its ModelServer: its versions were exported into the server's
    store; they count only if its own store is that one."""
    joined = status.get("server") or {}
    pvc = model.store.pvc
    mine = f"{pvc.claim_name}:{'/'.join(p for p in pvc.path.split('/') if p)}"
    if joined.get("store") == mine:
        return status
    return {k: v for k, v in status.items() if k != "versions"}
