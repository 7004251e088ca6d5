"""Client traffic for rollout tests and the demo: requests that name no version, sent to every
ready TF Serving pod of a ServedModel (stable and canary), straight to their loopback pod IPs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from kubernetes import client


class Traffic:
    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        model: str,
        body: Callable[[], Any],
        per_second: float | None = None,
    ) -> None:
        """`per_second`: the requests a second to all pods together (None: as fast as one
        thread sends them, one to each ready pod in turn)."""
        self.core, self.namespace, self.model, self.body = core, namespace, model, body
        self.per_second = per_second
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _pods(self) -> list[str]:
        selector = f"app.kubernetes.io/instance={self.model},app.kubernetes.io/component=server"
        return [
            p.status.pod_ip
            for p in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
            if p.status.pod_ip
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            ips = self._pods()
            for ip in ips:
                try:
                    response = session.post(
                        f"http://{ip}:8501/v1/models/{self.model}:predict",
                        json=self.body(),
                        timeout=10,
                    )
                    self.sent += 1
                    self.failed += response.status_code != 200
                except requests.RequestException:
                    self.failed += 1
                if self.per_second:
                    self.stop.wait(1.0 / self.per_second)
            if not self.per_second:
                time.sleep(0.05 if ips else 0.5)
            elif not ips:
                self.stop.wait(0.5)
