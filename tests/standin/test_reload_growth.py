"""The stand-in's test knob STANDIN_RELOAD_GROWTH_BYTES (testing/tfserving_standin/growth.py):
every config reload that changes what is served keeps that many bytes resident, as TF
Serving's memory grows on reloads (tensorflow/serving#1215); the same file polled again, and
the first config, keep nothing. What the local kubelet reports as the container's working set
(testing/localcluster/cadvisor.py) is this resident memory."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from testing.localcluster import cadvisor
from testing.tfserving_standin.growth import ENV
from tests.standin.helpers import (
    MONITORING,
    Models,
    StandIn,
    models_config,
    standard_args,
    wait_for,
    write_configmap,
)

GROWTH = 64 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _kept(s: StandIn) -> list[str]:
    return [line for line in s.log().splitlines() if f"({ENV}," in line]


def _serve(s: StandIn, versions: list[int]) -> None:
    write_configmap(
        s.workdir / "config",
        {
            "models.config": models_config([{"name": "m", "versions": versions}]),
            "monitoring.config": MONITORING,
        },
    )


def test_each_reload_that_changes_the_config_keeps_memory_resident(
    models: Models, make_standin: Callable[..., StandIn]
) -> None:
    s = make_standin(
        standard_args(1),
        config={
            "models.config": models_config([{"name": "m", "versions": [1]}]),
            "monitoring.config": MONITORING,
        },
        store={"m": {1: models.version_dir(1), 2: models.version_dir(2)}},
        env={ENV: str(GROWTH)},
    )
    s.wait_ready("m")
    time.sleep(2)  # a few polls of the same first file: no growth
    assert _kept(s) == []
    before = _rss(s.proc.pid)
    _serve(s, [1, 2])
    wait_for(lambda: len(_kept(s)) == 1, timeout=30)
    _serve(s, [2])
    wait_for(lambda: len(_kept(s)) == 2, timeout=30)
    assert _kept(s)[-1].endswith(f"{2 * GROWTH} in all")
    time.sleep(3)  # the same file, polled again: nothing more
    assert len(_kept(s)) == 2
    grown = _rss(s.proc.pid) - before
    assert grown >= 2 * GROWTH * 0.95, f"RSS grew by {grown} bytes"


def test_the_kubelet_reports_a_containers_resident_memory() -> None:
    """cadvisor.exposition: one working-set series per running container, labelled as a
    kubelet labels it; the value is its process group's resident memory."""
    pid = os.getpid()
    container = cadvisor.Container("ml", "mnist-5d8f-a1b2c", "uid-1", "tfserving", "img", pid)
    gone = cadvisor.Container("ml", "mnist-5d8f-zzzzz", "uid-2", "tfserving", "img", 999_999_999)
    text = cadvisor.exposition([container, gone], lambda p: _rss(p) if p == pid else 0)
    lines = text.splitlines()
    assert lines[:2] == [
        "# HELP container_memory_working_set_bytes Current working set of the container in bytes",
        "# TYPE container_memory_working_set_bytes gauge",
    ]
    [series] = lines[2:]
    assert series.startswith(
        'container_memory_working_set_bytes{container="tfserving",id="/kubepods/poduid-1/'
        'tfserving",image="img",name="tfserving",namespace="ml",pod="mnist-5d8f-a1b2c"} '
    )
    assert abs(int(series.rsplit(" ", 1)[1]) - _rss(pid)) < 64 << 20
    # The process group's resident memory: this process's group holds this process.
    assert cadvisor.resident_bytes(os.getpgid(pid)) >= _rss(pid) * 0.9
