"""`lunar_rover_ppo_best.zip`: the model with the best task score so far, and why it is the best.

The score (`training/task_metrics.py`, `TaskScore`) is written beside the model, in
`lunar_rover_ppo_best.json`, with its basis (what episodes it was scored on), so that a resumed
run compares with it instead of overwriting a better model. A score is only compared with one of
the same stage and the same basis. A best model without such a score (written by an older
LunarFleet, which kept the best by mean training reward, or scored on another basis) is unknown:
the caller decides what to do (`PeriodicEvaluation` scores it again on the same episodes; the
fallback without evaluation replaces it at its first chance).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import checkpoints
from training.task_metrics import TaskScore


def score_path(models_dir: Path) -> Path:
    return checkpoints.best_path(models_dir).with_suffix(".json")


@dataclass
class Offer:
    """What `BestModel.offer` did, to be said and logged."""

    saved: bool
    reason: str  # "first", "better", "new stage", "replaces an unknown score", "not better"
    best: TaskScore | None  # the best score after the offer
    best_steps: int | None


class BestModel:
    """The best model of a models folder by task score, on one basis (e.g. "evaluation: 10 deterministic
    episodes of at most 1,000 steps", or "training: the last 100 episodes")."""

    def __init__(self, models_dir: Path, basis: str) -> None:
        self.path = checkpoints.best_path(models_dir)
        self.basis = basis
        self.score: TaskScore | None = None
        self.steps: int | None = None
        self.stored_basis: str | None = None  # the basis of a score on file, when it is another one
        saved = _read(score_path(models_dir)) if self.path.exists() else None
        if saved is not None and saved.get("basis") == basis:
            self.score, self.steps = TaskScore.from_json(saved["score"]), int(saved.get("steps") or 0)
        elif saved is not None:
            self.stored_basis = str(saved.get("basis"))

    @property
    def unknown(self) -> bool:
        """A best model is on file, but not with a score on this basis."""
        return self.path.exists() and self.score is None

    def describe_unknown(self) -> str:
        why = (f"it was scored on another basis ({self.stored_basis})" if self.stored_basis
               else "it has no task score beside it (an older LunarFleet kept the best by mean training reward)")
        return f"{self.path.name} is already there, but its task score is unknown here: {why}"

    def adopt(self, score: TaskScore, steps: int | None) -> None:
        """Take `score` as that of the model on file (scored again by the caller), and write it down."""
        self.score, self.steps = score, steps
        self._write(score, steps)

    def offer(self, score: TaskScore, steps: int, save: Callable[[Path], Path]) -> Offer:
        """Save the model with `save` when `score` is the best at its stage (or the first there)."""
        if self.score is None:
            reason = "replaces an unknown score" if self.path.exists() else "first"
        elif score.stage != self.score.stage:
            reason = "new stage"
        elif score.beats(self.score):
            reason = "better"
        else:
            return Offer(False, "not better", self.score, self.steps)
        score_path(self.path.parent).unlink(missing_ok=True)  # a kill before the new score is written: unknown, not wrong
        save(self.path)
        self.adopt(score, steps)
        return Offer(True, reason, score, steps)

    def _write(self, score: TaskScore, steps: int | None) -> None:
        path = score_path(self.path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        data = {"model": self.path.name, "basis": self.basis, "steps": steps, "score": score.to_json()}
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    """The score file, or None when it is missing or unreadable (then the score is unknown)."""
    try:
        data = json.loads(path.read_text())
        TaskScore.from_json(data["score"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None
