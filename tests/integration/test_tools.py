"""The tools testing/localcluster/build.py builds for features to come, checked where they will run:
Prometheus (built without its web UI's assets) answers its query API on loopback, and the
Gateway API's standard-channel CRDs are accepted by the local cluster's API server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from testing.localcluster import build
from testing.localcluster import cluster as localcluster
from testing.localcluster.waiting import wait_for
from tests.integration.helpers import free_port, kubectl


def test_prometheus_scrapes_and_answers_queries_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "self", "static_configs": [{"targets": [address]}]}
                ],
            }
        )
    )
    binary = build.build_prometheus() / "prometheus"
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.listen-address={address}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def up() -> list[dict[str, object]] | None:
            try:
                answer = requests.get(
                    f"http://{address}/api/v1/query", params={"query": "up"}, timeout=2
                ).json()
            except requests.RequestException:
                return None
            assert answer["status"] == "success"
            result: list[dict[str, object]] = answer["data"]["result"]
            return result or None

        [sample] = wait_for("Prometheus to scrape itself", up, timeout=60)
        assert sample["metric"] == {"__name__": "up", "instance": address, "job": "self"}
        assert sample["value"][1] == "1"  # type: ignore[index]
        version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert f"tags:             {build.PROMETHEUS_TAGS}" in version
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.cluster
def test_the_gateway_api_standard_crds_are_accepted_by_the_api_server(
    cluster: localcluster.Cluster,
) -> None:
    paths = build.gateway_api_crds()
    kinds = {}
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                kinds[doc["metadata"]["name"]] = doc["kind"]
    assert kinds["httproutes.gateway.networking.k8s.io"] == "CustomResourceDefinition"
    assert kinds["gateways.gateway.networking.k8s.io"] == "CustomResourceDefinition"
    assert kinds["grpcroutes.gateway.networking.k8s.io"] == "CustomResourceDefinition"
    args = [arg for path in paths for arg in ("-f", str(path))]
    done = kubectl(cluster, "apply", "--server-side", "--dry-run=server", *args)
    assert "httproutes.gateway.networking.k8s.io serverside-applied (server dry run)" in done.stdout
