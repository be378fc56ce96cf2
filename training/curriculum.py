"""The original app's four-stage curriculum: which reward stage a model trains in, from its step count.

Deriving the stage from the step count (instead of storing it) is what makes a resumed run
continue in the stage it was interrupted in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stable_baselines3.common.callbacks import BaseCallback

# Stage 1 for 200k steps, stage 2 for 300k, stage 3 for 500k, stage 4 for the rest.
ORIGINAL_BUDGETS = (200_000, 300_000, 500_000)


def stage_for(steps: int, budgets: Sequence[int] = ORIGINAL_BUDGETS) -> int:
    edge = 0
    for stage, budget in enumerate(budgets, start=1):
        edge += budget
        if steps < edge:
            return stage
    return len(budgets) + 1


class CurriculumCallback(BaseCallback):
    """Tells every tab its stage at the start and whenever the step count crosses a boundary."""

    def __init__(self, budgets: Sequence[int], set_stage: Callable[[int], None]) -> None:
        super().__init__()
        self.budgets = list(budgets)
        self.set_stage = set_stage
        self.stage = 0

    def _on_training_start(self) -> None:
        self._update()

    def _on_step(self) -> bool:
        self._update()
        return True

    def _update(self) -> None:
        stage = stage_for(self.model.num_timesteps, self.budgets)
        if stage != self.stage:
            self.stage = stage
            self.set_stage(stage)
