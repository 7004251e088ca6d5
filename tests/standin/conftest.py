"""The stand-in suite's fixtures (the models, exported once per session; stand-in processes
stopped after each test) and its terminal summary. Helpers are in helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.standin.helpers import MO_X, Models, StandIn, export_dense, launch, write_warmup


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    import keras
    import numpy as np

    root = tmp_path_factory.mktemp("standin-models")
    expected = {v: export_dense(root / "versions" / str(v), seed=v) for v in (1, 2, 3)}
    write_warmup(root / "versions" / "2", records=3)
    corrupt = root / "versions" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "saved_model.pb").write_bytes(b"this is not a SavedModel")

    keras.utils.set_random_seed(11)
    x = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, activation="relu")(x)
    mo = keras.Model(
        x,
        {
            "score": keras.layers.Dense(1, name="score")(hidden),
            "probs": keras.layers.Dense(2, activation="softmax", name="probs")(hidden),
        },
    )
    mo.export(str(root / "mo" / "1"), format="tf_saved_model", verbose=False)
    out = mo(np.asarray(MO_X, "float32"))
    mo_expected = {k: np.asarray(v) for k, v in out.items()}
    return Models(root, expected, mo_expected)


_SUITE_SELECTED = pytest.StashKey[bool]()


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_SUITE_SELECTED] = any(
        item.nodeid.split("::")[0].endswith("test_tfserving_suite.py") for item in session.items
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """TF Serving's own suite (test_tfserving_suite.py): its tests that were not run, and why."""
    config = terminalreporter.config
    if not config.stash.get(_SUITE_SELECTED, False):
        return
    from tests.standin import test_tfserving_suite as suite

    run = config.stash.get(suite.RUN_KEY, None)
    ran = "" if run is None else f"; {len(run.report['results'])} run in {run.seconds:.0f} s"
    terminalreporter.write_sep(
        "=",
        f"TF Serving's own end-to-end suite: {len(suite.OUT_OF_SCOPE)} tests NOT RUN{ran}",
        yellow=True,
        bold=True,
    )
    for name, reason in suite.OUT_OF_SCOPE.items():
        terminalreporter.write_line(f"NOT RUN {name}: {reason}")


@pytest.fixture
def make_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., StandIn]]:
    started: list[StandIn] = []

    def make(args: list[str], **kwargs: Any) -> StandIn:
        s = launch(tmp_path_factory, args, **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()
