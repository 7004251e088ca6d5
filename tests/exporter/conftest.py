"""Tiny real Keras models in every format the exporter takes, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CUSTOM = "tests.exporter.custom_layers"


def _build(out: Path) -> dict[str, Path]:
    import keras
    import numpy as np
    import tensorflow as tf

    from tests.exporter import custom_layers

    paths: dict[str, Path] = {}

    def save(name: str, model: Any, filename: str) -> None:
        paths[name] = out / filename
        model.save(paths[name])

    keras.utils.set_random_seed(7)
    save(
        "sequential",
        keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3)]),
        "sequential.keras",
    )
    a, b = keras.Input((3,), name="alpha"), keras.Input((2,), name="beta")
    joined = keras.layers.Concatenate()([a, b])
    save(
        "functional",
        keras.Model(
            {"alpha": a, "beta": b},
            {
                "score": keras.layers.Dense(1, name="score")(joined),
                "probs": keras.layers.Dense(2, activation="softmax", name="probs")(joined),
            },
        ),
        "functional.keras",
    )
    sub = custom_layers.TwoTower(3)
    sub(np.zeros((1, 5), "float32"))
    save("subclassed", sub, "subclassed.keras")
    save(
        "custom_layer",
        keras.Sequential([keras.Input((4,)), custom_layers.Scale(3.0), keras.layers.Dense(2)]),
        "custom-layer.keras",
    )
    save(
        "h5",
        keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
        ),
        "legacy.h5",
    )
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 4)(ids))
    save("embedding", keras.Model(ids, keras.layers.Dense(2)(pooled)), "embedding.keras")
    seq = keras.Input((None, 3), name="sequence")
    save(
        "dynamic",
        keras.Model(seq, keras.layers.Dense(2)(keras.layers.LSTM(4)(seq))),
        "dynamic.keras",
    )
    words = keras.Input((1,), dtype="string", name="word")
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish"])(words)
    embedded = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(lookup))
    save("string", keras.Model(words, keras.layers.Dense(1)(embedded)), "string.keras")
    save("noisy", keras.Sequential([keras.Input((4,)), custom_layers.EagerOnly()]), "noisy.keras")

    unzipped = out / "unzipped.keras.d"
    import zipfile

    with zipfile.ZipFile(paths["sequential"]) as archive:
        archive.extractall(unzipped)
    paths["keras_dir"] = unzipped

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"doubled": x * 2.0}

    module = Doubler()
    paths["tf_savedmodel"] = out / "tf-savedmodel"
    tf.saved_model.save(
        module, str(paths["tf_savedmodel"]), signatures={"serving_default": module.serve}
    )

    # A Keras-2 SavedModel can only be written by tf_keras, in its own process.
    paths["keras2_savedmodel"] = out / "keras2-savedmodel"
    script = (
        "import tf_keras as k\n"
        "m = k.Sequential([k.layers.Dense(3, input_shape=(5,), name='dense')])\n"
        f"m.save({str(paths['keras2_savedmodel'])!r}, save_format='tf')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )
    (out / "not-a-model.keras").write_bytes(os.urandom(2048))
    paths["random_bytes"] = out / "not-a-model.keras"
    (out / "truncated.keras").write_bytes(paths["sequential"].read_bytes()[:500])
    paths["truncated"] = out / "truncated.keras"
    return paths


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("models"))
