"""Which exported versions are served (pure)."""

from __future__ import annotations

from servedmodel_operator.parts.serving.selection import select

from tests.unit.builders import model

THREE = [{"version": v, "source": {"uri": f"file:///m{v}.keras"}} for v in (1, 2, 3)]


def test_latest_serves_the_newest_exported_versions() -> None:
    assert select(model(versions=THREE, serve={"count": 2}), {1, 2, 3}).versions == (2, 3)
    assert select(model(versions=THREE), {1, 2}).versions == (2,)


def test_all_and_specific() -> None:
    assert select(model(versions=THREE, serve={"policy": "All"}), {1, 3}).versions == (1, 3)
    m = model(versions=THREE, serve={"policy": "Specific", "versions": [1, 3]})
    assert select(m, {1, 2, 3}).versions == (1, 3)
    assert select(m, {2}).versions == ()


def test_labelled_versions_are_served_too_once_exported() -> None:
    m = model(versions=THREE, serve={"labels": {"stable": 1, "canary": 3}})
    served = select(m, {1, 2})
    assert served.versions == (1, 2)
    assert served.labels == {"stable": 1}
    assert served.pending_labels == {"canary": 3}


def test_versions_removed_from_the_spec_are_never_served() -> None:
    assert select(model(), {1, 2, 7}).versions == (2,)
    assert select(model(serve={"policy": "All"}), {7}).versions == ()


def test_nothing_exported_serves_nothing() -> None:
    assert select(model(), set()).versions == ()
