"""servedmodel's exporter: Keras model -> numbered, verified, atomically written SavedModel."""
