"""The original app's four-stage curriculum as a plan: which reward stage a model trains in, from its step count.

Deriving the stage from the step count (instead of storing it) is what makes a resumed run
continue in the stage it was interrupted in.

On the embedded page the curriculum also thins the obstacle field in the first two stages and
raises it in steps (docs/rover-sim.md, change 8): PPO learns the way to the construction zone
in an open arena and keeps it as the obstacles come, where the full field from the start taught
only a creeping rover. The original app is never sent the count (it has no such setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

# Stage 1 for 200k steps, stage 2 for 300k, stage 3 for 500k, stage 4 for the rest.
ORIGINAL_BUDGETS = (200_000, 300_000, 500_000)
FULL_FIELD = 11  # the spec world's obstacles (7 rocks, 4 craters); webapp/sim/world.js OBSTACLE_COUNT
# Obstacles in each part of a stage's budget, split evenly; stages not listed have the full field.
OBSTACLE_RAMP: dict[int, tuple[int, ...]] = {1: (0, 4), 2: (4, 8, FULL_FIELD)}


class StagePPO(NamedTuple):
    """PPO's discount and learning rate in one curriculum stage."""

    gamma: float
    learning_rate: float


# The curriculum's stages on the embedded page where PPO's settings are not the original app's
# (docs/rover-sim.md, changes 11 and 12). Stage 4 pays for a delivery only, a few hundred steps
# after the grab, which a discount of 0.99 makes worth next to nothing; and at the original
# learning rate (3e-4) it learned deliveries and then traded them for grabs.
EMBEDDED_STAGE_PPO: dict[int, StagePPO] = {4: StagePPO(gamma=0.995, learning_rate=1e-4)}


class Phase(NamedTuple):
    stage: int
    obstacles: int  # how many of the field's obstacles the embedded page places


def describe_phase(stage: int, obstacles: int | None, steps: int) -> str:
    """The console's line for a curriculum step (the trainer's, and the dashboard's event stream)."""
    field = "" if obstacles in (None, FULL_FIELD) else f" (embedded page: {obstacles} of {FULL_FIELD} obstacles)"
    return f"[Train] Curriculum: stage {stage}{field} from step {steps:,}"


def stage_for(steps: int, budgets: Sequence[int] = ORIGINAL_BUDGETS) -> int:
    return phase_for(steps, budgets).stage


def phase_for(steps: int, budgets: Sequence[int] = ORIGINAL_BUDGETS) -> Phase:
    start = 0
    for stage, budget in enumerate(budgets, start=1):
        if steps < start + budget:
            ramp = OBSTACLE_RAMP.get(stage, (FULL_FIELD,))
            part = min(len(ramp) - 1, (steps - start) * len(ramp) // budget)
            return Phase(stage, ramp[part])
        start += budget
    return Phase(len(budgets) + 1, FULL_FIELD)
