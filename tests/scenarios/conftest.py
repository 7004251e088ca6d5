"""The serving scenarios' two backends and the Keras models they serve (see backends.py).

`make test` runs the scenarios on the `standin` backend and reports the `kind` ones as NOT RUN
where Docker is missing; `make e2e-kind` runs them on `kind` and fails if it cannot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.localcluster import cluster as localcluster
from tests.scenarios.backends import Backend, KindBackend, StandinBackend, kind_missing
from tests.scenarios.models import INSTANCES, SEEDS


@pytest.fixture(
    scope="module",
    params=["standin", pytest.param("kind", marks=pytest.mark.e2e)],
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    if request.param == "kind":
        reason = kind_missing()
        if reason and os.environ.get("E2E_REQUIRED"):
            pytest.fail(f"make e2e-kind needs Docker and kind: {reason}")
        if reason:
            pytest.skip(f"e2e suite not run: {reason}")
        with KindBackend() as kind:
            yield kind
        return
    cluster: localcluster.Cluster = request.getfixturevalue("cluster")
    with StandinBackend(cluster, tmp_path_factory.mktemp("scenarios")) as local:
        yield local


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = tmp_path_factory.mktemp("scenario-models")
    script = f"""
import keras
for version, seed in {SEEDS!r}.items():
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3, name="logits")])
    m.save({str(out)!r} + f"/v{{version}}.keras")
"""
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    return {v: out / f"v{v}.keras" for v in SEEDS}


@pytest.fixture(scope="session")
def keras_outputs(keras_files: dict[int, Path]) -> dict[int, Any]:
    """Each version's Keras outputs for INSTANCES: what every prediction must match."""
    import keras
    import numpy as np

    return {
        v: np.asarray(keras.saving.load_model(path)(np.asarray(INSTANCES, "float32")))
        for v, path in keras_files.items()
    }


@pytest.fixture(scope="session")
def exported_versions(
    keras_files: dict[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Path]:
    """Each Keras version exported once, by the exporter itself, into a template store: a
    scenario where exporting is not the point seeds its store with copies, and its exporter
    Jobs then find each version there from the same source (they write nothing, and load no
    TensorFlow). One process for every version: one TensorFlow import."""
    out = tmp_path_factory.mktemp("exported")
    script = f"""
from pathlib import Path
from servedmodel_exporter import export
for version, source in { ({v: str(p) for v, p in keras_files.items()})!r}.items():
    export.run(export.Request(source, Path({str(out)!r}), "template", version))
"""
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return {v: out / "template" / str(v) for v in keras_files}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed scenario on the stand-in carries what the operator applied, was refused and
    could not read: CI keeps only the report, not the operator's log file."""
    report = yield
    if report.failed and call.when == "call":
        backend = getattr(item, "funcargs", {}).get("backend") or getattr(item, "funcargs", {}).get(
            "served"
        )
        if isinstance(backend, StandinBackend):
            marks = ("cannot read", "applying", "WARNING", "ERROR", "refused")
            lines = [
                line
                for line in backend.operator.log().splitlines()
                if any(m in line for m in marks)
            ]
            report.sections.append(
                ("operator log (what it applied, refused, could not read)", "\n".join(lines[-120:]))
            )
    return report
