"""The local kubelet's `/metrics/cadvisor`: the memory of the serving pods the runner runs, in
the series and labels a real kubelet serves, for the reload memory guard
(spec.server.recycle.memory) and its tests.

A real kubelet serves cAdvisor's container metrics on :10250/metrics/cadvisor (cadvisor
metrics/prometheus.go), one series per container labelled by the kubelet with `container`,
`pod`, `namespace`, `image`, `name` and `id` (pkg/kubelet/server/server.go,
containerPrometheusLabelsFunc). `container_memory_working_set_bytes` is the container cgroup's
memory usage less its inactive file pages: what the kubelet compares with memory limits and
eviction thresholds. The runner runs no cgroups, so here the working set is the resident set
(RSS) of the container's processes (its process group): the anonymous memory TF Serving keeps
after reloads counts in both. Only the gauge the guard reads is served, over HTTP on a
loopback port (a real kubelet: HTTPS with authentication and authorisation), and only for the
serving pods the runner runs (kwok's simulated pods have no processes).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PATH = "/metrics/cadvisor"
WORKING_SET = "container_memory_working_set_bytes"
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Container:
    """One running container: its pod and the process group it runs in."""

    namespace: str
    pod: str
    pod_uid: str
    name: str
    image: str
    pid: int  # the container's first process; its process group is the container


def resident_bytes(pgid: int, proc: Path = Path("/proc")) -> int:
    """The RSS of every process in process group `pgid` (0 once it is gone)."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:  # gone meanwhile
            continue
        # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            total += int(statm[1]) * _PAGE
    return total


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(containers: Iterable[Container], rss: Callable[[int], int]) -> str:
    """Prometheus text format, as cAdvisor writes the gauge (help text included)."""
    lines = [
        f"# HELP {WORKING_SET} Current working set of the container in bytes",
        f"# TYPE {WORKING_SET} gauge",
    ]
    for c in sorted(containers, key=lambda c: (c.namespace, c.pod)):
        value = rss(c.pid)
        if value <= 0:
            continue
        labels = {
            "container": c.name,
            "id": f"/kubepods/pod{c.pod_uid}/{c.name}",
            "image": c.image,
            "name": c.name,
            "namespace": c.namespace,
            "pod": c.pod,
        }
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{WORKING_SET}{{{text}}} {value}")
    return "\n".join(lines) + "\n"


def serve(port: int, containers: Callable[[], list[Container]]) -> ThreadingHTTPServer:
    """Serve /metrics/cadvisor on 127.0.0.1:`port` in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self.send_error(404)
                return
            body = exposition(containers(), resident_bytes).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="cadvisor", daemon=True).start()
    return server
