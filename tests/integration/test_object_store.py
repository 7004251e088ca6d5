"""s3:// sources through the operator: credentials from a Secret into the exporter Job's fetch
container only, the exporter's reasons in status, and a clear condition (no Job) while the
Secret is missing or incomplete, the same for both. Against a real S3-compatible server
(SeaweedFS) on loopback, an endpoint the operator's policy allows; the exports really run. The
serving pods are simulated (helpers.SIMULATED_SERVER_IMAGE): what they would serve is
test_exports.py's and test_serving.py's business."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from servedmodel_operator.parts.exports.part import CREDENTIALS_RECHECK_SECONDS

from testing.localcluster.operator_process import OperatorProcess
from testing.localcluster.s3 import Identity, S3Server
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import (
    GROUP,
    PLURAL,
    VERSION,
    Volume,
    condition,
    get_sm,
    servedmodel,
    simulated,
    wait_condition,
    wait_simulated_serving,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator_args(s3_server: S3Server) -> tuple[str, ...]:
    """Credentials go only to endpoints of the operator's allowlist: this one is allowed here."""
    return (f"--allowed-object-store-endpoints={s3_server.endpoint}",)


@pytest.fixture
def bucket(s3_server: S3Server, model_files: dict[str, Path], tmp_path: Path) -> str:
    fs = s3_server.filesystem()
    name = f"it-{uuid.uuid4().hex[:10]}"
    fs.mkdir(name)
    fs.put_file(str(model_files["model-a.keras"]), f"{name}/mnist/v1.keras")
    fs.put_file(str(model_files["model-b.h5"]), f"{name}/mnist/v2.h5")
    return name


def _secret(core: client.CoreV1Api, namespace: str, name: str, identity: Identity) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            string_data={
                "AWS_ACCESS_KEY_ID": identity.access_key,
                "AWS_SECRET_ACCESS_KEY": identity.secret_key,
            },
        ),
    )


def _s3_version(
    version: int, uri: str, server: S3Server, secret: str = "s3-creds"
) -> dict[str, Any]:
    return {
        "version": version,
        "source": {
            "uri": uri,
            "credentialsSecretRef": {"name": secret},
            "s3": {"endpoint": server.endpoint, "pathStyle": True, "region": "us-east-1"},
        },
    }


def _model(versions: list[dict[str, Any]]) -> dict[str, Any]:
    body = simulated(servedmodel("s3model", []))
    body["spec"]["versions"] = versions
    body["spec"]["serve"] = {"policy": "All"}
    return body


def _nothing_leaked(
    secret_value: str,
    namespace: str,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    custom: client.CustomObjectsApi,
    operator: OperatorProcess,
    runner_dir: Path,
) -> None:
    places = {
        "jobs": json.dumps(
            client.ApiClient().sanitize_for_serialization(batch.list_namespaced_job(namespace))
        ),
        "status": json.dumps(get_sm(custom, namespace, "s3model").get("status", {})),
        "events": json.dumps([e.message for e in core.list_namespaced_event(namespace).items]),
        "operator log": operator.log(),
        "exporter output": "".join(
            p.read_text(errors="replace") for p in runner_dir.glob(f"{namespace}_*/*.log")
        ),
    }
    for place, text in places.items():
        assert secret_value not in text, f"the secret leaked into {place}"
        assert base64.b64encode(secret_value.encode()).decode() not in text, (
            f"base64 secret in {place}"
        )


def test_exports_from_s3_with_credentials_from_a_secret(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    s3_server: S3Server,
    bucket: str,
    cluster: Any,
) -> None:
    operator = unstarted_operator
    operator.start()
    _secret(core, namespace, "s3-creds", s3_server.reader)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        _model(
            [
                _s3_version(1, f"s3://{bucket}/mnist/v1.keras", s3_server),
                _s3_version(2, f"s3://{bucket}/mnist/v2.h5", s3_server),
            ]
        ),
    )
    obj = wait_simulated_serving(custom, namespace, "s3model", replicas=1, timeout=240)
    assert [v["state"] for v in obj["status"]["versions"]] == ["Exported", "Exported"]
    assert (store.path / "s3model" / "2" / "saved_model.pb").is_file()
    [job] = batch.list_namespaced_job(
        namespace, label_selector="serving.servedmodel.io/version=1"
    ).items
    [fetch] = job.spec.template.spec.init_containers
    env = {e.name: e for e in fetch.env}
    assert env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref.name == "s3-creds"
    assert env["AWS_SECRET_ACCESS_KEY"].value is None
    # The container that loads the model never has them.
    [exporter] = job.spec.template.spec.containers
    assert all(e.value_from is None for e in exporter.env)
    assert not {e.name for e in exporter.env} & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    _nothing_leaked(
        s3_server.reader.secret_key,
        namespace,
        core,
        batch,
        custom,
        operator,
        cluster.state_dir / "runner",
    )


def test_wrong_credentials_and_a_missing_object_fail_with_the_exporters_reasons(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    store: Volume,
    s3_server: S3Server,
    bucket: str,
) -> None:
    unstarted_operator.start()
    _secret(core, namespace, "wrong", Identity(s3_server.reader.access_key, "not-the-secret"))
    _secret(core, namespace, "s3-creds", s3_server.reader)
    body = _model(
        [
            _s3_version(1, f"s3://{bucket}/mnist/v1.keras", s3_server, secret="wrong"),
            _s3_version(2, f"s3://{bucket}/mnist/missing.keras", s3_server),
        ]
    )
    body["spec"]["exporter"] = {"parallelism": 2}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def both_failed() -> dict[str, Any] | None:
        obj = get_sm(custom, namespace, "s3model")
        states = [v.get("state") for v in obj.get("status", {}).get("versions", [])]
        return obj if states == ["Failed", "Failed"] else None

    obj = wait_for("both exports to fail", both_failed, timeout=240)
    v1, v2 = obj["status"]["versions"]
    assert v1["reason"] == "AccessDenied" and "access denied" in v1["message"]
    assert v2["reason"] == "SourceNotFound"
    assert condition(obj, "Stalled")["status"] == "True"


def test_a_missing_secret_is_a_condition_without_a_job_until_it_appears(
    unstarted_operator: OperatorProcess,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    namespace: str,
    store: Volume,
    s3_server: S3Server,
    bucket: str,
) -> None:
    unstarted_operator.start()
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        _model([_s3_version(1, f"s3://{bucket}/mnist/v1.keras", s3_server)]),
    )
    obj = wait_condition(
        custom, namespace, "s3model", "Stalled", "True", reason="CredentialsMissing"
    )
    message = condition(obj, "Ready")["message"]
    assert message == (
        "version 1: SecretUnavailable: Secret s3-creds cannot be given to the exporter: it needs "
        "to exist in this namespace with the keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
    )
    assert batch.list_namespaced_job(namespace).items == []

    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3-creds"),
            string_data={"AWS_ACCESS_KEY_ID": "only-one-key"},
        ),
    )
    # Looked at again (every CREDENTIALS_RECHECK_SECONDS): a Secret without a key reads like no
    # Secret at all (no oracle of which Secrets and keys exist), and still no Job.
    time.sleep(CREDENTIALS_RECHECK_SECONDS + 5)
    assert condition(get_sm(custom, namespace, "s3model"), "Ready")["message"] == message
    assert batch.list_namespaced_job(namespace).items == []

    core.replace_namespaced_secret(
        "s3-creds",
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3-creds"),
            string_data={
                "AWS_ACCESS_KEY_ID": s3_server.reader.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.reader.secret_key,
            },
        ),
    )
    wait_simulated_serving(custom, namespace, "s3model", replicas=1, timeout=240)
