"""Custom Keras objects for the exporter tests, importable with --custom-objects-module."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="servedmodel_tests")
class Scale(keras.layers.Layer):
    """A registered custom layer with its own weight and config."""

    def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="bias")

    def call(self, inputs: Any) -> Any:
        return inputs * self.factor + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="servedmodel_tests")
class TwoTower(keras.Model):
    """A registered subclassed model."""

    def __init__(self, units: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.left = keras.layers.Dense(units)
        self.right = keras.layers.Dense(units)

    def call(self, inputs: Any) -> Any:
        return self.left(inputs) - self.right(inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="servedmodel_tests")
class EagerOnly(keras.layers.Layer):
    """Adds 1 when run eagerly, nothing when traced: the export can never match the model."""

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        return inputs + 1.0 if tf.executing_eagerly() else inputs


@keras.saving.register_keras_serializable(package="servedmodel_tests")
class ShapeShifter(keras.Model):
    """Returns a dict when run eagerly and a list when traced: the SavedModel's outputs cannot
    be matched to the model's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        out = self.dense(inputs)
        return {"eager": out} if tf.executing_eagerly() else [out, out]
