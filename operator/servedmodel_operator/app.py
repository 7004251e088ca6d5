"""The operator process: parse flags, configure logging, run kopf.

Honours KUBECONFIG (or in-cluster credentials); watches all namespaces unless --namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import os

import kopf

from servedmodel_operator.adapters import logs, metrics
from servedmodel_operator.api.site import (
    OPERATOR_NAMESPACE,
    OPERATOR_POD_LABELS,
    SCRAPER_NAMESPACES,
    Site,
    parse_labels,
)
from servedmodel_operator.api.spec import DEFAULT_EXPORTER_IMAGE, DEFAULT_SERVER_IMAGE
from servedmodel_operator.controller.runtime import Options
from servedmodel_operator.parts.admission.policy import (
    CREDENTIALS_OPT_IN,
    DEFAULT_OBJECT_STORE_ENDPOINTS,
    OWN_NAMESPACE_GATEWAYS,
    Policy,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="servedmodel-operator", description=__doc__)
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--exporter-image",
        default=os.environ.get("SERVEDMODEL_EXPORTER_IMAGE", DEFAULT_EXPORTER_IMAGE),
        help="exporter image for ServedModels that name none (env SERVEDMODEL_EXPORTER_IMAGE)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("SERVEDMODEL_WORKERS", "8")),
        help="reconciles running at once (env SERVEDMODEL_WORKERS)",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("SERVEDMODEL_LIVENESS", ""),
        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--readiness",
        default=os.environ.get("SERVEDMODEL_READINESS", ""),
        help="serve the readiness probe here, e.g. http://0.0.0.0:8081/readyz: 200 once this "
        "replica can serve (the leader, or a standby whose watch caches are filled), 503 before "
        "and while it shuts down (env SERVEDMODEL_READINESS)",
    )
    policy = parser.add_argument_group(
        "policy", "what a ServedModel may ask for (see README: Multi-tenancy and threat model)"
    )
    policy.add_argument(
        "--allowed-server-images",
        default=os.environ.get("SERVEDMODEL_ALLOWED_SERVER_IMAGES", DEFAULT_SERVER_IMAGE),
        help="comma-separated glob patterns of TF Serving images ServedModels may use "
        f"(env SERVEDMODEL_ALLOWED_SERVER_IMAGES; default {DEFAULT_SERVER_IMAGE})",
    )
    policy.add_argument(
        "--allowed-exporter-images",
        default=os.environ.get("SERVEDMODEL_ALLOWED_EXPORTER_IMAGES", ""),
        help="comma-separated glob patterns of exporter images ServedModels may use "
        "(env SERVEDMODEL_ALLOWED_EXPORTER_IMAGES; default: --exporter-image only)",
    )
    policy.add_argument(
        "--claim-opt-in",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_CLAIM_OPT_IN", True),
        help="PVCs must carry serving.servedmodel.io/model-store or /model-source=true to be "
        "used (env SERVEDMODEL_CLAIM_OPT_IN; default on)",
    )
    policy.add_argument(
        "--service-account-opt-in",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_SERVICE_ACCOUNT_OPT_IN", True),
        help="exporter ServiceAccounts must carry serving.servedmodel.io/exporter=allowed "
        "(env SERVEDMODEL_SERVICE_ACCOUNT_OPT_IN; default on)",
    )
    policy.add_argument(
        "--allow-unsafe-models",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_ALLOW_UNSAFE_MODELS", False),
        help="let versions set allowUnsafeDeserialization (env SERVEDMODEL_ALLOW_UNSAFE_MODELS; "
        "default off)",
    )
    policy.add_argument(
        "--allowed-prometheus-addresses",
        default=os.environ.get("SERVEDMODEL_ALLOWED_PROMETHEUS_ADDRESSES", ""),
        help="comma-separated URL patterns (scheme://host[:port][/path]; '*' within one host "
        "label, or as the port) of the Prometheus a rollout's analysis may query "
        "(env SERVEDMODEL_ALLOWED_PROMETHEUS_ADDRESSES; default none)",
    )
    policy.add_argument(
        "--allowed-gateways",
        default=os.environ.get("SERVEDMODEL_ALLOWED_GATEWAYS", OWN_NAMESPACE_GATEWAYS),
        help="comma-separated <namespace>/<name> patterns ('*' globs; {namespace} is the "
        "ServedModel's) of the Gateways a rollout's routes may attach to "
        f"(env SERVEDMODEL_ALLOWED_GATEWAYS; default {OWN_NAMESPACE_GATEWAYS}: its own namespace)",
    )
    policy.add_argument(
        "--allowed-route-hostnames",
        default=os.environ.get("SERVEDMODEL_ALLOWED_ROUTE_HOSTNAMES", ""),
        help="comma-separated hostname patterns ('*' within one DNS label; {namespace} and "
        "{name} are the ServedModel's) a rollout's routes may carry "
        "(env SERVEDMODEL_ALLOWED_ROUTE_HOSTNAMES; default none)",
    )
    policy.add_argument(
        "--allowed-object-store-endpoints",
        default=os.environ.get(
            "SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS", ",".join(DEFAULT_OBJECT_STORE_ENDPOINTS)
        ),
        help="comma-separated URL patterns (scheme://host[:port], '*' within one host label) "
        "of the s3/gcs endpoints an exporter holding credentials may use "
        "(env SERVEDMODEL_ALLOWED_OBJECT_STORE_ENDPOINTS; default the providers' own: "
        f"{', '.join(DEFAULT_OBJECT_STORE_ENDPOINTS)})",
    )
    policy.add_argument(
        "--credentials-opt-in",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_CREDENTIALS_OPT_IN", False),
        help=f"Secrets and ConfigMaps must carry {CREDENTIALS_OPT_IN}=true to be handed to an "
        "exporter: for clusters without the ValidatingAdmissionPolicy "
        "servedmodel-credentials-need-read-access (env SERVEDMODEL_CREDENTIALS_OPT_IN; "
        "default off)",
    )
    policy.add_argument(
        "--allowed-priority-classes",
        default=os.environ.get("SERVEDMODEL_ALLOWED_PRIORITY_CLASSES", ""),
        help="comma-separated glob patterns of the PriorityClasses ServedModels' pods may name "
        "(env SERVEDMODEL_ALLOWED_PRIORITY_CLASSES; default none: priorityClassName unset)",
    )
    policy.add_argument(
        "--allowed-runtime-classes",
        default=os.environ.get("SERVEDMODEL_ALLOWED_RUNTIME_CLASSES", ""),
        help="comma-separated glob patterns of the RuntimeClasses ServedModels' pods may name "
        "(env SERVEDMODEL_ALLOWED_RUNTIME_CLASSES; default none: runtimeClassName unset)",
    )
    policy.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_NETWORK_POLICY", False),
        help="give every ServedModel that leaves spec.server.networkPolicy.enabled unset a "
        "NetworkPolicy around its TF Serving pods (env SERVEDMODEL_NETWORK_POLICY; default off)",
    )
    policy.add_argument(
        "--metrics-scraper-namespaces",
        default=os.environ.get(
            "SERVEDMODEL_METRICS_SCRAPER_NAMESPACES", _labels_text(SCRAPER_NAMESPACES)
        ),
        help="labels (k=v,...) of the namespaces whose pods may scrape TF Serving's metrics "
        "through the NetworkPolicy (env SERVEDMODEL_METRICS_SCRAPER_NAMESPACES; default "
        f"{_labels_text(SCRAPER_NAMESPACES)}; empty: none)",
    )
    parser.add_argument(
        "--operator-pod-labels",
        default=os.environ.get(
            "SERVEDMODEL_OPERATOR_POD_LABELS", _labels_text(OPERATOR_POD_LABELS)
        ),
        help="labels (k=v,...) of the operator's own pods, which the NetworkPolicy admits to the "
        "TF Serving pods from namespace POD_NAMESPACE (env SERVEDMODEL_OPERATOR_POD_LABELS)",
    )
    parser.add_argument(
        "--metrics-address",
        default=os.environ.get("SERVEDMODEL_METRICS_ADDRESS", ""),
        help="serve Prometheus metrics at host:port/metrics, e.g. 0.0.0.0:9090 "
        "(env SERVEDMODEL_METRICS_ADDRESS; default off)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("SERVEDMODEL_LEADER_ELECT", False),
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease "
        "reconciles (env SERVEDMODEL_LEADER_ELECT)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE", "servedmodel-system"),
        help="namespace of the Lease (env POD_NAMESPACE; default servedmodel-system)",
    )
    parser.add_argument(
        "--leader-election-id", default="servedmodel-operator", help="name of the Lease"
    )
    parser.add_argument("--log-level", default=os.environ.get("SERVEDMODEL_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=os.environ.get("SERVEDMODEL_LOG_FORMAT", "text"),
        help="text, or one JSON object per line (env SERVEDMODEL_LOG_FORMAT)",
    )
    return parser.parse_args(argv)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _patterns(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def policy_of(args: argparse.Namespace) -> Policy:
    """The policy from the flags; a pattern that does not parse stops the operator here."""
    try:
        return Policy(
            server_images=_patterns(args.allowed_server_images),
            exporter_images=_patterns(args.allowed_exporter_images) or (args.exporter_image,),
            require_claim_opt_in=args.claim_opt_in,
            require_service_account_opt_in=args.service_account_opt_in,
            allow_unsafe_models=args.allow_unsafe_models,
            prometheus_addresses=_patterns(args.allowed_prometheus_addresses),
            gateways=_patterns(args.allowed_gateways),
            route_hostnames=_patterns(args.allowed_route_hostnames),
            object_store_endpoints=_patterns(args.allowed_object_store_endpoints),
            require_credentials_opt_in=args.credentials_opt_in,
            priority_classes=_patterns(args.allowed_priority_classes),
            runtime_classes=_patterns(args.allowed_runtime_classes),
        )
    except ValueError as exc:
        raise SystemExit(f"servedmodel-operator: invalid policy: {exc}") from None


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def site_of(args: argparse.Namespace) -> Site:
    return Site(
        operator_namespace=os.environ.get("POD_NAMESPACE") or OPERATOR_NAMESPACE,
        operator_pod_labels=parse_labels(args.operator_pod_labels),
        scraper_namespaces=parse_labels(args.metrics_scraper_namespaces),
        network_policy=args.network_policy,
    )


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena; with a pool of reconcile
    threads that is most of the resident memory. Two arenas keep it flat (the effect of
    MALLOC_ARENA_MAX=2, applied before any thread starts)."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, 2)


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    from servedmodel_operator.controller import handlers  # noqa: F401 - registers the handlers

    options = Options(
        exporter_image=args.exporter_image,
        workers=args.workers,
        policy=policy_of(args),
        site=site_of(args),
        readiness=args.readiness or None,
        namespaces=tuple(args.namespace),
        leader_election=(args.leader_election_namespace, args.leader_election_id)
        if args.leader_elect
        else None,
    )
    if args.metrics_address:
        metrics.serve(args.metrics_address)
    memo = kopf.Memo(options=options)
    # What the imports made (modules, classes, functions, pydantic's and protobuf's tables)
    # lives as long as the process: out of the cyclic collector's full passes, which otherwise
    # walk it again every time (see Runtime._filled for the caches).
    gc.freeze()
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            memo=memo,
            liveness_endpoint=args.liveness or None,
            standalone=True,
        )
    )
    return 0
