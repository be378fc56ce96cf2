"""The curriculum's callback: tells every tab the plan's phase (training/curriculum_plan.py) as training goes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stable_baselines3.common.callbacks import BaseCallback

from training.curriculum_plan import Phase, phase_for


class CurriculumCallback(BaseCallback):
    """Tells every tab its phase at the start and whenever the step count crosses a boundary."""

    def __init__(self, budgets: Sequence[int], set_phase: Callable[[Phase], None]) -> None:
        super().__init__()
        self.budgets = list(budgets)
        self.set_phase = set_phase
        self.phase: Phase | None = None

    def _on_training_start(self) -> None:
        self._update()

    def _on_step(self) -> bool:
        self._update()
        return True

    def _update(self) -> None:
        phase = phase_for(self.model.num_timesteps, self.budgets)
        if phase != self.phase:
            self.phase = phase
            self.set_phase(phase)
