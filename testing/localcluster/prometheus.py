"""A real Prometheus (built from Go modules, testing/localcluster/build.py) on loopback, scraping TF
Serving pods through Kubernetes pod discovery, for rollout analysis in tests and the demo, and
the local kubelet's /metrics/cadvisor (the runner's), for the reload memory guard.

The relabelling is the one the README asks of a production Prometheus: each pod's namespace,
ServedModel and track become the `namespace`, `servedmodel` and `track` labels. Pod IPs are
loopback addresses here, so it scrapes nothing outside 127.0.0.0/8.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import requests
import yaml

from testing.localcluster import build
from testing.localcluster.cluster import Cluster
from testing.localcluster.waiting import wait_for


def relabelling() -> list[dict[str, Any]]:
    """Scrape the pods that ask for it (prometheus.io annotations); label each series with the
    pod's namespace, ServedModel and track, as manifests/podmonitor does."""
    meta = "__meta_kubernetes_pod_"
    return [
        {
            "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
            "regex": "true",
            "action": "keep",
        },
        {
            "source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
            "regex": "(.+);(.+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {
            "source_labels": [f"{meta}annotation_prometheus_io_path"],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {
            "source_labels": [f"{meta}label_app_kubernetes_io_instance"],
            "target_label": "servedmodel",
        },
        {
            "source_labels": [f"{meta}label_serving_servedmodel_io_track"],
            "target_label": "track",
        },
        {"source_labels": [f"{meta}name"], "target_label": "pod"},
    ]


def kubelet_job(address: str) -> dict[str, Any]:
    """The kubelet's cAdvisor metrics (the reload memory guard's source), as kube-prometheus'
    kubelet ServiceMonitor scrapes them: /metrics/cadvisor, keeping the kubelet's own
    namespace, pod and container labels (honor_labels). Here one local kubelet, the runner."""
    return {
        "job_name": "kubelet",
        "metrics_path": "/metrics/cadvisor",
        "honor_labels": True,
        "static_configs": [{"targets": [address]}],
    }


def scrape_config(cluster: Cluster, interval: str = "2s") -> dict[str, Any]:
    pki = cluster.pki
    kubelet = cluster.kubelet_metrics
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            *([kubelet_job(kubelet)] if kubelet else []),
            {
                "job_name": "tensorflow-serving",
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "api_server": cluster.server,
                        "tls_config": {
                            "ca_file": str(pki / "ca.crt"),
                            "cert_file": str(pki / "admin.crt"),
                            "key_file": str(pki / "admin.key"),
                        },
                    }
                ],
                "relabel_configs": relabelling(),
            },
        ],
    }


class Prometheus:
    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.cluster, self.work = cluster, work
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> Prometheus:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(self.cluster)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with (self.work / "prometheus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(build.prometheus_dir() / "prometheus"),
                    f"--config.file={self.work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.address = f"http://127.0.0.1:{port}"
        wait_for(
            "Prometheus to be ready",
            lambda: requests.get(f"{self.address}/-/ready", timeout=2).ok,
            timeout=60,
            retry_on=(requests.RequestException,),
        )
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
