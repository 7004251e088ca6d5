"""The steps of a rollout (pure): what each one asks of the traffic, and how it is told.

`spec.rollout.steps` lists weights (percent of the unnamed traffic sent to the canary); each
is a WeightStep: hold for intervalSeconds, then be judged (decide.py). A new kind of step is a
class here with the same two members, and a rule in `steps_of` that reads it from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from servedmodel_operator.api.spec import Rollout


@dataclass(frozen=True)
class WeightStep:
    """Send `weight` % of the unnamed traffic to the canary, hold, then judge."""

    weight: int

    def describe(self, index: int, count: int) -> str:
        return f"step {index + 1}/{count}: {self.weight}% to the canary"


Step = WeightStep


def steps_of(rollout: Rollout) -> tuple[Step, ...]:
    return tuple(WeightStep(int(weight)) for weight in rollout.steps)
