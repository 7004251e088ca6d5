"""The stand-in suite's fixtures (the models, exported once per session; stand-in processes
stopped after each test). Helpers are in helpers.py; the terminal summary of TF Serving's own
suite is in summary.py (the root conftest calls it: under xdist only that one is loaded in the
controller process, which prints the summary)."""

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
