"""testing/localcluster/build.py's cache: a component is built once, and a cached one that lacks
a binary added since (promtool beside prometheus) gets that binary, and only it, moved in."""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.localcluster import build


def test_a_component_is_built_once_into_place(tmp_path: Path) -> None:
    target = tmp_path / "tool-v1"
    calls = []

    def make(work: Path, out: Path) -> None:
        calls.append(work)
        (out / "tool").write_text("v1")

    assert build._install(target, make, ["tool"]) == target
    assert (target / "tool").read_text() == "v1"
    assert build._install(target, make, ["tool"]) == target
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["tool-v1"]  # no temporary left behind


def test_a_cached_component_without_a_newer_binary_gets_only_that_one(tmp_path: Path) -> None:
    target = tmp_path / "prometheus-v0.316.0"
    target.mkdir()
    (target / "prometheus").write_text("cached")

    def make(work: Path, out: Path) -> None:
        (out / "promtool").write_text("new")
        (out / "prometheus").write_text("rebuilt")

    build._install(target, make, list(build.PROMETHEUS_COMMANDS.values()))
    assert (target / "promtool").read_text() == "new"
    assert (target / "prometheus").read_text() == "cached"  # a running server's binary stays

    def must_not_run(work: Path, out: Path) -> None:
        pytest.fail("a complete component was built again")

    build._install(target, must_not_run, list(build.PROMETHEUS_COMMANDS.values()))


def test_the_prometheus_component_holds_promtool() -> None:
    assert build.PROMETHEUS_COMMANDS["github.com/prometheus/prometheus/cmd/promtool"] == "promtool"
    assert build.TOOLS["promtool"] == "prometheus"


def test_a_component_an_older_checkout_built_meanwhile_gets_what_it_lacks(tmp_path: Path) -> None:
    """The cache is shared: another checkout's code (without promtool) may finish first."""
    target = tmp_path / "prometheus-v0.316.0"

    def make(work: Path, out: Path) -> None:
        target.mkdir()  # theirs lands while ours builds
        (target / "prometheus").write_text("theirs")
        (out / "prometheus").write_text("ours")
        (out / "promtool").write_text("ours")

    build._install(target, make, list(build.PROMETHEUS_COMMANDS.values()))
    assert (target / "prometheus").read_text() == "theirs"
    assert (target / "promtool").read_text() == "ours"
