"""The largest ServedModel the CRD admits: every list at its maxItems, every map at its
maxProperties, every string at its maxLength, each value still valid for its field's pattern
and CEL rules (crds/servedmodel.yaml). What a tenant who wants to exhaust the operator would
create; tests/integration/test_tenancy_bounds.py and `python -m bench.bounds` create it.

Deterministic: `largest(name, i)` differs from `largest(name, j)` in every long string, so no
two copies share memory through string interning.
"""

from __future__ import annotations

from typing import Any

GROUP, VERSION = "serving.servedmodel.io", "v1alpha1"
# The CRD's bounds (a unit test reads them back from crds/servedmodel.yaml).
MAX_NAME = 52
VERSIONS = 64
URI = 2048
ENDPOINT = 512
DNS_SUBDOMAIN = 253
SERVE_VERSIONS = 64
LABELS, LABEL_NAME = 16, 63
STORE_PATH = 1024
IMAGE = 512
RESOURCES, RESOURCE_NAME, QUANTITY = 16, 317, 64
NODE_SELECTOR, LABEL_KEY, LABEL_VALUE = 32, 317, 63
TOLERATIONS = 32
BATCH_SIZES, MAX_BATCH = 64, 1048576
METRICS, MATCH_LABELS, MATCH_EXPRESSIONS, MATCH_VALUES = 4, 4, 2, 4
STEPS = 20
PARENT_REFS = 8
# The pod settings of spec.server and spec.exporter.
NODE_TERMS, NODE_EXPRESSIONS, NODE_FIELDS, NODE_VALUES = 2, 4, 1, 8
POD_TERMS, NAMESPACES, LABEL_KEYS = 1, 4, 2
SPREAD = 3
PULL_SECRETS = 4
POD_LABELS, ANNOTATION = 16, 512
ENV, ENV_NAME, ENV_VALUE = 16, 128, 512
EXTRA_ARGS, EXTRA_ARG = 32, 256
PEERS, CIDR = 4, 43
PROMETHEUS = "http://prometheus.monitoring.svc:9090/"


def _fill(seed: str, size: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz0123456789") -> str:
    """`size` characters from alphabet, starting with seed (made unique by the caller)."""
    body = "".join(alphabet[(i * 7 + len(seed)) % len(alphabet)] for i in range(size))
    return (seed + body)[:size]


def _dns_subdomain(seed: str, size: int = DNS_SUBDOMAIN) -> str:
    """A DNS subdomain of exactly `size` characters: labels of 63 joined by dots."""
    text = _fill(seed, size)
    chars = list(text)
    for i in range(63, size, 64):
        chars[i] = "."
    if chars[-1] == ".":
        chars[-1] = "x"
    return "".join(chars)


def _hostname(seed: str) -> str:
    """A route hostname of DNS_SUBDOMAIN characters: labels of 63 letters and digits, the last
    one starting with a letter (never an IP address)."""
    first = _fill(seed, 63)
    return ".".join([first, "b" * 63, "c" * 63, "d" * (DNS_SUBDOMAIN - 3 * 64)])


def _label_key(seed: str) -> str:
    """A qualified-name-shaped key of LABEL_KEY characters (prefix/name)."""
    return _dns_subdomain(seed, LABEL_KEY - 64) + "/" + _fill(seed, 63)


def _quantity(i: int) -> str:
    """A quantity of QUANTITY characters: 0.000…0<i> (tiny, so within every CEL bound)."""
    digits = str(i + 1)
    return "0." + "0" * (QUANTITY - 2 - len(digits)) + digits


def _resources(seed: str) -> dict[str, Any]:
    def block(kind: str) -> dict[str, str]:
        return {
            _dns_subdomain(f"{seed}{kind}{r}x", RESOURCE_NAME - 64)
            + "/"
            + _fill(f"{seed}{r}", 63): _quantity(r)
            for r in range(RESOURCES)
        }

    return {"limits": block("l"), "requests": block("r")}


def _selector(seed: str) -> dict[str, Any]:
    return {
        "matchLabels": {
            _label_key(f"{seed}l{k}"): _fill(f"{seed}{k}", LABEL_VALUE) for k in range(MATCH_LABELS)
        },
        "matchExpressions": [
            {
                "key": _label_key(f"{seed}e{e}"),
                "operator": "In",
                "values": [_fill(f"{seed}{e}v{v}", LABEL_VALUE) for v in range(MATCH_VALUES)],
            }
            for e in range(MATCH_EXPRESSIONS)
        ],
    }


def _node_term(seed: str) -> dict[str, Any]:
    def requirement(r: str) -> dict[str, Any]:
        return {
            "key": _label_key(f"{seed}{r}"),
            "operator": "In",
            "values": [_fill(f"{seed}{r}v{v}", LABEL_VALUE) for v in range(NODE_VALUES)],
        }

    return {
        "matchExpressions": [requirement(f"e{e}") for e in range(NODE_EXPRESSIONS)],
        "matchFields": [requirement(f"f{f}") for f in range(NODE_FIELDS)],
    }


def _pod_term(seed: str) -> dict[str, Any]:
    return {
        "labelSelector": _selector(f"{seed}l"),
        "namespaceSelector": _selector(f"{seed}n"),
        "namespaces": [_fill(f"{seed}ns{n}", 63) for n in range(NAMESPACES)],
        "topologyKey": _label_key(f"{seed}t"),
        "matchLabelKeys": [_label_key(f"{seed}m{k}") for k in range(LABEL_KEYS)],
        "mismatchLabelKeys": [_label_key(f"{seed}x{k}") for k in range(LABEL_KEYS)],
    }


def _pod_affinity(seed: str) -> dict[str, Any]:
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            _pod_term(f"{seed}r{t}") for t in range(POD_TERMS)
        ],
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": _pod_term(f"{seed}p{t}")} for t in range(POD_TERMS)
        ],
    }


def _pod_settings(seed: str, env_prefix: str) -> dict[str, Any]:
    """spec.server's and spec.exporter's shared pod settings, each at its bound."""
    return {
        "nodeSelector": {
            _label_key(f"{seed}n{k}"): _fill(f"{seed}{k}", LABEL_VALUE)
            for k in range(NODE_SELECTOR)
        },
        "tolerations": [
            {
                "key": _label_key(f"{seed}t{t}"),
                "operator": "Equal",
                "value": _fill(f"{seed}{t}", LABEL_VALUE),
                "effect": "NoExecute",
                "tolerationSeconds": 2**62,
            }
            for t in range(TOLERATIONS)
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [_node_term(f"{seed}nr{t}") for t in range(NODE_TERMS)]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "preference": _node_term(f"{seed}np{t}")}
                    for t in range(NODE_TERMS)
                ],
            },
            "podAffinity": _pod_affinity(f"{seed}pa"),
            "podAntiAffinity": _pod_affinity(f"{seed}aa"),
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1000,
                "topologyKey": _label_key(f"{seed}s{c}"),
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": _selector(f"{seed}s{c}"),
                "minDomains": 1000,
                "nodeAffinityPolicy": "Honor",
                "nodeTaintsPolicy": "Honor",
                "matchLabelKeys": [_label_key(f"{seed}s{c}k{k}") for k in range(LABEL_KEYS)],
            }
            for c in range(SPREAD)
        ],
        "priorityClassName": _dns_subdomain(f"{seed}pc"),
        "runtimeClassName": _dns_subdomain(f"{seed}rc"),
        "imagePullSecrets": [{"name": _dns_subdomain(f"{seed}ps{p}")} for p in range(PULL_SECRETS)],
        "podLabels": {
            _label_key(f"{seed}pl{k}"): _fill(f"{seed}{k}", LABEL_VALUE) for k in range(POD_LABELS)
        },
        "podAnnotations": {
            _label_key(f"{seed}pn{k}"): _fill(f"{seed}{k}", ANNOTATION) for k in range(POD_LABELS)
        },
        # Names the operator does not set (the exporter's reserve AWS_*, GOOGLE_*, GCE_*...).
        "env": [
            {
                "name": _fill(f"{env_prefix}{seed}{e}_", ENV_NAME),
                "value": _fill(f"{seed}{e}", ENV_VALUE),
            }
            for e in range(ENV)
        ],
    }


def _metric(seed: str) -> dict[str, Any]:
    return {
        "type": "Object",
        "object": {
            "describedObject": {
                "apiVersion": _label_key(f"{seed}a"),
                "kind": _fill(
                    f"K{seed}", 63, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ),
                "name": _dns_subdomain(f"{seed}n"),
            },
            "metric": {"name": _dns_subdomain(f"{seed}m"), "selector": _selector(seed)},
            "target": {"type": "Value", "value": _quantity(1), "averageValue": _quantity(2)},
        },
    }


def _cidr(n: int) -> str:
    """An IPv6 CIDR of CIDR (43) characters."""
    return ":".join(f"fd{n:02x}" for _ in range(8)) + "/128"


def _version(seed: str, version: int) -> dict[str, Any]:
    bucket = _fill(f"b{seed}{version}", 63)
    uri = f"s3://{bucket}/"
    return {
        "version": version,
        "allowUnsafeDeserialization": False,
        "source": {
            "uri": uri + _fill(f"{seed}{version}k", URI - len(uri)),
            "sha256": _fill(f"{version:x}", 64, "0123456789abcdef"),
            # The credentials admission policy checks at most 8 distinct Secrets and 4 CA-bundle
            # ConfigMaps per change (manifests/base/credentials-admission.yaml): the largest
            # spec it admits names that many, each at full length.
            "credentialsSecretRef": {"name": _dns_subdomain(f"{seed}{version % 8}s")},
            "s3": {
                "endpoint": "https://" + _fill(f"{seed}{version}e", ENDPOINT - len("https://")),
                "region": _fill(f"{seed}{version}r", 64),
                "pathStyle": True,
                "verifyTLS": True,
                "caBundle": {
                    "configMapName": _dns_subdomain(f"{seed}{version % 4}c"),
                    "key": _fill(f"{seed}{version}k", DNS_SUBDOMAIN),
                },
                "anonymous": False,
            },
        },
    }


def largest(name: str, i: int = 0) -> dict[str, Any]:
    """The largest ServedModel the CRD admits, named `name` (copy number i)."""
    seed = f"{i}x"
    versions = [_version(seed, v) for v in range(1, VERSIONS + 1)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {
            "modelName": _fill(f"M{seed}", 128),
            "versions": versions,
            "serve": {
                "policy": "Specific",
                "count": 64,
                "versions": list(range(1, SERVE_VERSIONS + 1)),
                "labels": {
                    _fill(f"l{seed}{n}", LABEL_NAME, "abcdefghijklmnopqrstuvwxyz_"): n + 1
                    for n in range(LABELS)
                },
            },
            "store": {
                "pvc": {"claimName": _dns_subdomain(f"{seed}pvc"), "path": _fill(seed, STORE_PATH)},
                "retention": {"keepUndeclared": 1000},
            },
            "server": {
                "image": _fill(f"registry.example/{seed}", IMAGE),
                "replicas": 1000,
                "resources": _resources(f"{seed}s"),
                **_pod_settings(seed, "S"),
                # Flags the operator does not set, each --name=value.
                "extraArgs": [
                    "--" + _fill(f"x{seed}{a}_", 16) + "=" + _fill(f"{seed}{a}", EXTRA_ARG - 19)
                    for a in range(EXTRA_ARGS)
                ],
                "disruptionBudget": {"enabled": True, "maxUnavailable": "100%"},
                "networkPolicy": {
                    "enabled": True,
                    # Selector peers, and one IP block (a peer is one or the other).
                    "from": [
                        {
                            "podSelector": _selector(f"{seed}fp{p}"),
                            "namespaceSelector": _selector(f"{seed}fn{p}"),
                        }
                        for p in range(PEERS - 1)
                    ]
                    + [{"ipBlock": {"cidr": _cidr(0), "except": [_cidr(x + 1) for x in range(4)]}}],
                },
                "batching": {
                    "maxBatchSize": MAX_BATCH,
                    "batchTimeoutMicros": 60_000_000,
                    "maxEnqueuedBatches": 1_000_000,
                    "numBatchThreads": 1024,
                    "allowedBatchSizes": [
                        MAX_BATCH - BATCH_SIZES + n for n in range(1, BATCH_SIZES + 1)
                    ],
                    "padVariableLengthInputs": True,
                },
                "monitoring": {"prometheus": True},
                "configPollSeconds": 600,
                "startupTimeoutSeconds": 7200,
                "autoscaling": {
                    "minReplicas": 1000,
                    "maxReplicas": 1000,
                    "targetCPUUtilizationPercentage": 100,
                    "metrics": [_metric(f"{seed}{m}") for m in range(METRICS)],
                },
                "recycle": {
                    "afterReloads": 1_000_000,
                    "memory": {
                        "threshold": _quantity(7),
                        "prometheus": {
                            "address": PROMETHEUS + _fill(f"{seed}r", 2048 - len(PROMETHEUS)),
                        },
                        "intervalSeconds": 3600,
                    },
                },
            },
            "exporter": {
                "image": _fill(f"registry.example/e{seed}", IMAGE),
                "serviceAccountName": _dns_subdomain(f"{seed}sa"),
                "parallelism": 16,
                "backoffLimit": 10,
                "activeDeadlineSeconds": 86400,
                "ttlSecondsAfterFinished": 2592000,
                "resources": _resources(f"{seed}e"),
                "verify": {"samples": 1024, "atol": 1e300, "rtol": 1e300},
                "warmup": {"requests": 1000},
                **_pod_settings(f"{seed}x", "E"),
            },
            "rollout": {
                "canary": VERSIONS,
                "steps": list(range(100 - STEPS + 1, 101)),
                "intervalSeconds": 86400,
                "paused": True,
                "promote": False,
                "abort": False,
                "analysis": {
                    "prometheus": {
                        "address": PROMETHEUS + _fill(f"{seed}p", 2048 - len(PROMETHEUS)),
                    },
                    "maxErrorRate": 1,
                    "maxP99LatencySeconds": 3600,
                    "minRequests": 1_000_000_000,
                },
                "parentRefs": [
                    {
                        "name": _dns_subdomain(f"{seed}g{r}"),
                        "sectionName": _dns_subdomain(f"{seed}s{r}"),
                        "port": 65535,
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                    }
                    for r in range(PARENT_REFS)
                ],
                # Hostnames: DNS names whose last label starts with a letter (no IP address).
                "hostnames": [_hostname(f"h{seed}{h}") for h in range(16)],
            },
        },
    }
