"""The scenarios' model: three versions of one small Keras model (same architecture, different
weights, by seed), and the inputs every prediction is made on."""

from __future__ import annotations

SEEDS = {1: 1, 2: 2, 3: 3}
INSTANCES = [[0.1, -0.2, 0.3, 1.5], [2.0, 0.0, -1.0, 0.25]]
