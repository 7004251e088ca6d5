"""The local runner's kubelet-like ConfigMap delivery (testing/localcluster/delivery.py and
podvolumes.py): each pod gets an update after its own delay, drawn from the window; a version
superseded before a pod's due time is never written to it; no pod waits longer than the
window's maximum after any update."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testing.localcluster import delivery
from testing.localcluster.delivery import DeliverySchedule
from testing.localcluster.podvolumes import PodVolumes


def fixed(*delays: float) -> Any:
    """A draw function returning these delays in turn (the window is checked separately)."""
    it = itertools.cycle(delays)
    return lambda low, high: next(it)


def test_parse_window() -> None:
    assert delivery.parse_window("1,5") == (1.0, 5.0)
    assert delivery.parse_window(" 0 , 60 ") == (0.0, 60.0)
    assert delivery.parse_window("2") == (2.0, 2.0)
    for bad in ("5,1", "-1,2", "a,b", "1,2,3", "", "nan,1"):
        with pytest.raises(ValueError, match="SERVEDMODEL_CONFIGMAP_DELAY"):
            delivery.parse_window(bad)


def test_window_file_round_trip_and_fallback(tmp_path: Path) -> None:
    path = tmp_path / delivery.WINDOW_FILE
    assert delivery.read_window(path) == delivery.DEFAULT_WINDOW  # no file yet
    delivery.write_window(path, (0.0, 60.0))
    assert path.read_text() == "0,60\n"
    assert delivery.read_window(path) == (0.0, 60.0)
    path.write_text("garbage")
    assert delivery.read_window(path, fallback=(1.0, 2.0)) == (1.0, 2.0)


def test_each_pod_gets_its_own_delay_from_the_window() -> None:
    schedule = DeliverySchedule(fixed(1.5, 4.0))
    schedule.changed(["pod-a", "pod-b"], now=100.0, window=(1.0, 5.0))
    assert schedule.pending() == {"pod-a": 101.5, "pod-b": 104.0}
    assert schedule.pop_due(101.0) == []
    assert schedule.pop_due(101.5) == [("pod-a", 1.5)]
    assert schedule.next_due() == 104.0
    assert schedule.pop_due(110.0) == [("pod-b", 10.0)]
    assert schedule.next_due() is None


def test_an_update_superseded_before_the_due_time_is_skipped() -> None:
    """A pending pod keeps its earlier due time (its next sync) and gets only the newest
    content then: the intermediate version is never delivered on its own."""
    schedule = DeliverySchedule(fixed(3.0, 4.0))
    schedule.changed(["pod-a"], now=0.0, window=(1.0, 5.0))  # due at 3
    schedule.changed(["pod-a"], now=1.0, window=(1.0, 5.0))  # drawn 4: due at 5, keeps 3
    assert schedule.pending() == {"pod-a": 3.0}
    assert schedule.pop_due(3.0) == [("pod-a", 3.0)]  # one delivery, waited since the first
    assert schedule.pending() == {}


def test_a_later_update_with_a_sooner_draw_moves_the_due_time_earlier() -> None:
    """No pod waits longer than the window's maximum after any update."""
    schedule = DeliverySchedule(fixed(5.0, 1.0))
    schedule.changed(["pod-a"], now=0.0, window=(1.0, 5.0))  # due at 5
    schedule.changed(["pod-a"], now=2.0, window=(1.0, 5.0))  # due at 3
    assert schedule.pending() == {"pod-a": 3.0}


def test_draws_stay_inside_the_window_and_differ_per_pod() -> None:
    schedule = DeliverySchedule()  # random.uniform
    pods = [f"pod-{i}" for i in range(50)]
    schedule.changed(pods, now=0.0, window=(1.0, 5.0))
    dues = schedule.pending().values()
    assert all(1.0 <= d <= 5.0 for d in dues)
    assert len({round(d, 6) for d in dues}) > 40


def test_forget_drops_a_deleted_pods_pending_delivery() -> None:
    schedule = DeliverySchedule(fixed(2.0))
    schedule.changed([("ns", "cm", "uid-1"), ("ns", "cm", "uid-2")], now=0.0, window=(2, 2))
    schedule.forget(lambda t: t[2] != "uid-1")  # type: ignore[index]
    assert list(schedule.pending()) == [("ns", "cm", "uid-2")]


class _ConfigMaps:
    """Stands for the API server's ConfigMap reads at pod start (the only API call here)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        return SimpleNamespace(data=dict(self.data))


def test_pod_volumes_write_late_per_pod_and_skip_superseded_versions(tmp_path: Path) -> None:
    api = _ConfigMaps()
    api.data = {"models.config": "v1"}
    delays = {"uid-a": 0.6, "uid-b": 1.3}
    draws: list[str] = []

    def draw(low: float, high: float) -> float:
        assert (low, high) == (0.5, 1.5)
        return delays[draws.pop(0)]

    volumes = PodVolumes(api, lambda: (0.5, 1.5), DeliverySchedule(draw))  # type: ignore[arg-type]
    dirs = {}
    for uid in delays:
        pod_dir = tmp_path / uid
        pod_dir.mkdir()
        dirs[uid] = volumes.resolve(
            "ns", uid, {"name": "config", "configMap": {"name": "cm"}}, pod_dir
        )
        assert (dirs[uid] / "models.config").read_text() == "v1"  # at pod start: at once

    def content(uid: str) -> str:
        return (dirs[uid] / "models.config").read_text()

    start = time.monotonic()
    draws += ["uid-a", "uid-b"]
    volumes.configmap_changed("ns", "cm", {"models.config": "v2"}, "2")
    time.sleep(0.1)
    draws += ["uid-a", "uid-b"]
    volumes.configmap_changed("ns", "cm", {"models.config": "v3"}, "3")
    assert content("uid-a") == content("uid-b") == "v1"  # nothing is instant
    seen: dict[str, list[tuple[float, str]]] = {"uid-a": [], "uid-b": []}
    while time.monotonic() - start < 2.0:
        for uid in seen:
            text = content(uid)
            if not seen[uid] or seen[uid][-1][1] != text:
                seen[uid].append((time.monotonic() - start, text))
        time.sleep(0.01)
    # Each pod went from v1 straight to v3 (v2 was superseded before its due time), pod a at
    # about 0.6 s, pod b at about 1.3 s.
    assert [t for _, t in seen["uid-a"]] == ["v1", "v3"]
    assert [t for _, t in seen["uid-b"]] == ["v1", "v3"]
    assert 0.55 <= seen["uid-a"][1][0] < 1.0
    assert 1.25 <= seen["uid-b"][1][0] < 1.8
    # A deleted pod gets nothing more.
    volumes.release("uid-a")
    draws += ["uid-b"]
    volumes.configmap_changed("ns", "cm", {"models.config": "v4"}, "4")
    time.sleep(1.6)
    assert content("uid-a") == "v3"
    assert content("uid-b") == "v4"
