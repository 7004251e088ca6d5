"""Tiny real Keras models in every format the exporter takes (conftest.py builds them once per
session).

Each builder writes one model under `out` and returns its path; MODELS names them all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CUSTOM = "tests.exporter.custom_layers"


def _save(model: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def sequential(out: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3)])
    return _save(model, out / "sequential.keras")


def functional(out: Path) -> Path:
    """Two named inputs, two named outputs (dicts on both sides)."""
    import keras

    a, b = keras.Input((3,), name="alpha"), keras.Input((2,), name="beta")
    joined = keras.layers.Concatenate()([a, b])
    outputs = {
        "score": keras.layers.Dense(1, name="score")(joined),
        "probs": keras.layers.Dense(2, activation="softmax", name="probs")(joined),
    }
    return _save(keras.Model({"alpha": a, "beta": b}, outputs), out / "functional.keras")


def multi_io_lists(out: Path) -> Path:
    """Inputs and outputs as lists: positional names on the way out (output_0, output_1)."""
    import keras

    a, b = keras.Input((3,), name="left"), keras.Input((2,), name="right")
    joined = keras.layers.Concatenate()([a, b])
    outputs = [keras.layers.Dense(1)(joined), keras.layers.Dense(4)(joined)]
    return _save(keras.Model([a, b], outputs), out / "multi-io-lists.keras")


def subclassed(out: Path) -> Path:
    import numpy as np

    from tests.exporter import custom_layers

    model = custom_layers.TwoTower(3)
    model(np.zeros((1, 5), "float32"))
    return _save(model, out / "subclassed.keras")


def custom_layer(out: Path) -> Path:
    import keras

    from tests.exporter import custom_layers

    model = keras.Sequential([keras.Input((4,)), custom_layers.Scale(3.0), keras.layers.Dense(2)])
    return _save(model, out / "custom-layer.keras")


def h5(out: Path) -> Path:
    import keras

    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    return _save(model, out / "legacy.h5")


def embedding(out: Path) -> Path:
    import keras

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 4)(ids))
    return _save(keras.Model(ids, keras.layers.Dense(2)(pooled)), out / "embedding.keras")


def dynamic(out: Path) -> Path:
    import keras

    seq = keras.Input((None, 3), name="sequence")
    model = keras.Model(seq, keras.layers.Dense(2)(keras.layers.LSTM(4)(seq)))
    return _save(model, out / "dynamic.keras")


def string(out: Path) -> Path:
    """A StringLookup: a lookup table the SavedModel must carry."""
    import keras

    words = keras.Input((1,), dtype="string", name="word")
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "fish"])(words)
    embedded = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(lookup))
    return _save(keras.Model(words, keras.layers.Dense(1)(embedded)), out / "string.keras")


def noisy(out: Path) -> Path:
    import keras

    from tests.exporter import custom_layers

    model = keras.Sequential([keras.Input((4,)), custom_layers.EagerOnly()])
    return _save(model, out / "noisy.keras")


def keras_dir(out: Path) -> Path:
    """An unzipped .keras archive."""
    unzipped = out / "unzipped.keras.d"
    with zipfile.ZipFile(sequential(out / "for-keras-dir")) as archive:
        archive.extractall(unzipped)
    return unzipped


def tf_savedmodel(out: Path) -> Path:
    import tensorflow as tf

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"doubled": x * 2.0}

    module = Doubler()
    path = out / "tf-savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def keras2_savedmodel(out: Path) -> Path:
    """A Keras-2 SavedModel can only be written by tf_keras, in its own process."""
    path = out / "keras2-savedmodel"
    script = (
        "import tf_keras as k\n"
        "m = k.Sequential([k.layers.Dense(3, input_shape=(5,), name='dense')])\n"
        f"m.save({str(path)!r}, save_format='tf')\n"
    )
    run_tf_keras(script)
    return path


def run_tf_keras(script: str) -> None:
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )


def random_bytes(out: Path) -> Path:
    path = out / "not-a-model.keras"
    path.write_bytes(os.urandom(2048))
    return path


def truncated(out: Path) -> Path:
    path = out / "truncated.keras"
    path.write_bytes(sequential(out / "for-truncated").read_bytes()[:500])
    return path


MODELS: dict[str, Callable[[Path], Path]] = {
    "sequential": sequential,
    "functional": functional,
    "multi_io_lists": multi_io_lists,
    "subclassed": subclassed,
    "custom_layer": custom_layer,
    "h5": h5,
    "embedding": embedding,
    "dynamic": dynamic,
    "string": string,
    "noisy": noisy,
    "keras_dir": keras_dir,
    "tf_savedmodel": tf_savedmodel,
    "keras2_savedmodel": keras2_savedmodel,
    "random_bytes": random_bytes,
    "truncated": truncated,
}


def build(out: Path) -> dict[str, Path]:
    import keras

    keras.utils.set_random_seed(7)
    paths = {}
    for name, builder in MODELS.items():
        (out / name).mkdir()
        paths[name] = builder(out / name)
    return paths
