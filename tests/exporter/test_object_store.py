"""s3:// and gs:// sources against a real S3-compatible server (SeaweedFS on loopback): the
exporter's CLI with credentials from the environment, as an exporter Job gets them."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from testing.localcluster.s3 import Identity, S3Server
from tests.exporter.helpers import CLI, into_store


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, models: dict[str, Path]) -> str:
    fs = s3_server.filesystem()
    name = "exporter-tests"
    if not fs.exists(name):
        fs.mkdir(name)
    fs.put_file(str(models["sequential"]), f"{name}/mnist/v1.keras")
    fs.put(str(models["tf_savedmodel"]), f"{name}/saved/doubler", recursive=True)
    return name


def _export(
    server: S3Server,
    uri: str,
    tmp: Path,
    identity: Identity | None,
    *extra: str,
    endpoint: str | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if identity is not None:
        env |= {
            "AWS_ACCESS_KEY_ID": identity.access_key,
            "AWS_SECRET_ACCESS_KEY": identity.secret_key,
        }
    result = tmp / "result.json"
    done = subprocess.run(
        [
            CLI,
            uri,
            *into_store(tmp / "store", result),
            f"--endpoint-url={endpoint or server.endpoint}",
            "--path-style",
            "--region=us-east-1",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    outcome = json.loads(result.read_text()) if result.exists() else {}
    for secret in (server.writer.secret_key, server.reader.secret_key):
        assert secret not in done.stdout + done.stderr + json.dumps(outcome), "a secret leaked"
    return done, outcome


def test_a_keras_file_exports_with_credentials_from_the_environment(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    done, result = _export(s3_server, f"s3://{bucket}/mnist/v1.keras", tmp_path, s3_server.reader)
    assert done.returncode == 0, done.stderr
    assert result["source"] == f"s3://{bucket}/mnist/v1.keras"
    assert (tmp_path / "store" / "m" / "1" / "saved_model.pb").is_file()


@pytest.mark.parametrize("key", ["mnist/v1.keras", "saved/doubler/"])
def test_the_credentials_fetch_and_the_export_run_apart(
    s3_server: S3Server, bucket: str, key: str, tmp_path: Path
) -> None:
    """As an exporter Job runs it: `fetch` with the keys in its environment, then the export
    of the fetched copy in a process whose environment has no credentials at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    keys = {
        "AWS_ACCESS_KEY_ID": s3_server.reader.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.reader.secret_key,
    }
    into = tmp_path / "fetched"
    into.mkdir()
    fetched = subprocess.run(
        [
            CLI,
            "fetch",
            f"s3://{bucket}/{key}",
            f"--into={into}",
            f"--result-file={tmp_path / 'fetch.json'}",
            f"--endpoint-url={s3_server.endpoint}",
            "--path-style",
            "--region=us-east-1",
        ],
        capture_output=True,
        text=True,
        env=env | keys,
        timeout=300,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    digest = json.loads((tmp_path / "fetch.json").read_text())["fetched"]["sha256"]
    exported = subprocess.run(
        [
            CLI,
            f"--fetched={into}",
            f"--store={tmp_path / 'store'}",
            "--model-name=m",
            "--version=1",
            f"--result-file={tmp_path / 'r.json'}",
            f"--sha256={digest}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["source"] == f"s3://{bucket}/{key}"  # as a one-process export says
    assert result["sourceSha256"] == digest
    for text in (fetched.stdout, fetched.stderr, exported.stdout, exported.stderr):
        assert s3_server.reader.secret_key not in text


def test_a_savedmodel_directory_prefix_is_copied_and_verified(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    done, result = _export(s3_server, f"s3://{bucket}/saved/doubler/", tmp_path, s3_server.reader)
    assert done.returncode == 0, done.stderr
    assert result["sourceFormat"] == "tf-savedmodel"
    assert result["signature"]["outputs"] == {"doubled": {"dtype": "float32", "shape": [-1, 3]}}


def test_a_prefix_checksum_is_the_manifest_of_its_files(
    s3_server: S3Server, bucket: str, models: dict[str, Path], tmp_path: Path
) -> None:
    """The same files uploaded under a prefix hash like the directory they came from."""
    from servedmodel_exporter import manifest

    expected = manifest.of_directory(models["tf_savedmodel"])
    done, result = _export(
        s3_server,
        f"s3://{bucket}/saved/doubler/",
        tmp_path,
        s3_server.reader,
        f"--sha256={expected}",
    )
    assert done.returncode == 0, done.stderr
    assert result["sourceSha256"] == expected


@pytest.mark.parametrize("key", ["mnist/v1.keras", "saved/doubler/"], ids=["object", "prefix"])
def test_an_object_over_the_size_limit_is_source_too_large(
    s3_server: S3Server, bucket: str, tmp_path: Path, key: str
) -> None:
    done, result = _export(
        s3_server, f"s3://{bucket}/{key}", tmp_path, s3_server.reader, "--max-source-bytes=1000"
    )
    assert (done.returncode, result["reason"]) == (23, "SourceTooLarge"), result
    assert not (tmp_path / "store" / "m" / "1").exists()


def test_wrong_credentials_are_access_denied(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    wrong = Identity(s3_server.reader.access_key, "not-the-secret-key")
    done, result = _export(s3_server, f"s3://{bucket}/mnist/v1.keras", tmp_path, wrong)
    assert (done.returncode, result["reason"]) == (18, "AccessDenied")
    assert "access denied" in result["message"]


def test_no_credentials_on_a_private_bucket_are_access_denied(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    done, result = _export(
        s3_server, f"s3://{bucket}/mnist/v1.keras", tmp_path, None, "--anonymous"
    )
    assert (done.returncode, result["reason"]) == (18, "AccessDenied")


@pytest.mark.parametrize(
    "uri",
    ["s3://exporter-tests/mnist/v9.keras", "s3://no-such-bucket/mnist/v1.keras"],
    ids=["missing-object", "missing-bucket"],
)
def test_missing_objects_and_buckets_are_not_found(
    s3_server: S3Server, bucket: str, tmp_path: Path, uri: str
) -> None:
    done, result = _export(s3_server, uri, tmp_path, s3_server.reader)
    assert (done.returncode, result["reason"]) == (11, "SourceNotFound"), result


def test_an_unreachable_endpoint(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    done, result = _export(
        s3_server,
        f"s3://{bucket}/mnist/v1.keras",
        tmp_path,
        s3_server.reader,
        endpoint="http://127.0.0.1:9",
    )
    assert (done.returncode, result["reason"]) == (10, "SourceUnreachable")
    assert "unreachable" in result["message"]


def test_tls_verification_with_a_ca_bundle_without_and_disabled(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/mnist/v1.keras"
    done, _ = _export(
        s3_server,
        uri,
        tmp_path / "a",
        s3_server.reader,
        f"--ca-bundle={s3_server.ca_file}",
        endpoint=s3_server.https_endpoint,
    )
    assert done.returncode == 0, done.stderr
    done, result = _export(
        s3_server, uri, tmp_path / "b", s3_server.reader, endpoint=s3_server.https_endpoint
    )
    assert (done.returncode, result["reason"]) == (10, "SourceUnreachable")  # untrusted certificate
    done, _ = _export(
        s3_server,
        uri,
        tmp_path / "c",
        s3_server.reader,
        "--no-verify-tls",
        endpoint=s3_server.https_endpoint,
    )
    assert done.returncode == 0, done.stderr


class _GcsErrors(http.server.BaseHTTPRequestHandler):
    """Answers every GCS JSON-API request with one HTTP error, as Google would for it."""

    status = 404

    def do_GET(self) -> None:
        body = json.dumps({"error": {"code": self.status, "message": "the test says so"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "code", "reason"), [(404, 11, "SourceNotFound"), (403, 18, "AccessDenied")]
)
def test_gs_errors_map_onto_the_same_reasons(
    tmp_path: Path, status: int, code: int, reason: str
) -> None:
    """Without Google: gcsfs against a local endpoint speaking GCS's error format."""
    handler = type("Handler", (_GcsErrors,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    result = tmp_path / "r.json"
    try:
        done = subprocess.run(
            [
                CLI,
                "gs://bucket/model.keras",
                "--store",
                str(tmp_path),
                "--model-name",
                "m",
                "--version",
                "1",
                "--anonymous",
                f"--endpoint-url=http://127.0.0.1:{server.server_address[1]}",
                "--result-file",
                str(result),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    finally:
        server.shutdown()
    outcome = json.loads(result.read_text())
    assert (done.returncode, outcome["reason"]) == (code, reason), outcome
