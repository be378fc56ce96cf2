"""Does a checkpoint fit the sim's spaces, and if not, what that means in the rover's terms.

SB3 refuses a model whose spaces differ with its raw message ("Action spaces do not match: ...").
The original app's checkpoints can differ in bounds only (one was trained with its turn rate
limited to 0..1). Such a model's weights still fit, so `--adapt-spaces` trains on with the sim's
spaces; different shapes never fit.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.save_util import json_to_data

# The action, as the protocol defines it: [speed -1..1, turn_rate -1..1, dig 0..1], and what its
# low and high ends make the rover do (a model whose bounds leave out an end never learned it).
ACTION_DIMS = (
    ("speed", "drive backwards", "drive forwards"),
    ("turn rate", "turn right", "turn left"),
    ("dig", "", "dig"),
)


@dataclass
class SpaceMismatch:
    lines: list[str] = field(default_factory=list)  # one per difference, in the rover's terms
    adaptable: bool = True  # bounds only: the weights fit the sim's spaces

    def explain(self, path: Path) -> str:
        head = f"cannot load {path}: it was trained with other spaces than the simulation's:"
        if self.adaptable:
            tail = ("pass --adapt-spaces to keep its weights and step count and train on with the "
                    "simulation's spaces, or --no-auto-load to start a fresh model")
        else:
            tail = "the shapes differ, so its weights cannot be used here: start a fresh model (--no-auto-load)"
        return "\n".join([head, *(f"  - {line}" for line in self.lines), tail])


def saved_data(path: Path) -> dict[str, Any]:
    """Only the checkpoint's "data" part (as SB3 reads it: spaces, hyperparameters), not its weights."""
    with zipfile.ZipFile(path) as archive:
        return json_to_data(archive.read("data").decode()) or {}


def saved_spaces(path: Path, data: dict[str, Any] | None = None) -> tuple[gym.Space, gym.Space]:
    data = saved_data(path) if data is None else data
    if not data or "observation_space" not in data or "action_space" not in data:
        raise ValueError("it holds no observation or action space (not an SB3 model?)")
    return data["observation_space"], data["action_space"]


def compare(saved_obs: gym.Space, saved_act: gym.Space, obs: gym.Space, act: gym.Space) -> SpaceMismatch | None:
    """None when the checkpoint's spaces are the sim's."""
    found = SpaceMismatch()
    _compare_observations(saved_obs, obs, found)
    _compare_actions(saved_act, act, found)
    return found if found.lines else None


def _compare_observations(saved: gym.Space, obs: gym.Space, found: SpaceMismatch) -> None:
    if saved == obs:
        return
    if saved.shape != obs.shape:
        found.adaptable = False
        found.lines.append(f"it reads observations of shape {saved.shape}; the simulation gives {obs.shape}")
    elif isinstance(saved, gym.spaces.Box) and isinstance(obs, gym.spaces.Box) and not _same_bounds(saved, obs):
        found.lines.append(
            f"its observation bounds are {_bounds(saved)}, the simulation's {_bounds(obs)} "
            "(the policy's weights do not depend on them)"
        )


def _compare_actions(saved: gym.Space, act: gym.Space, found: SpaceMismatch) -> None:
    if saved == act:
        return
    if not (isinstance(saved, gym.spaces.Box) and isinstance(act, gym.spaces.Box)) or saved.shape != act.shape:
        found.adaptable = False
        found.lines.append(f"its action space is {saved}; the simulation's is {act}")
        return
    for i, (lo, hi, sim_lo, sim_hi) in enumerate(zip(saved.low, saved.high, act.low, act.high, strict=True)):
        if (lo, hi) == (sim_lo, sim_hi):
            continue
        name, low_end, high_end = ACTION_DIMS[i] if i < len(ACTION_DIMS) else (f"action {i}", "", "")
        line = f"its {name} action was limited to {lo:g}..{hi:g} (the simulation's is {sim_lo:g}..{sim_hi:g})"
        unable = [what for what, cut in ((low_end, lo > sim_lo and lo >= 0), (high_end, hi < sim_hi and hi <= 0)) if what and cut]
        if unable:
            line += f": it was trained unable to {' or '.join(unable)}"
        found.lines.append(line)


def _same_bounds(a: gym.spaces.Box, b: gym.spaces.Box) -> bool:
    return bool(np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high))


def _bounds(box: gym.spaces.Box) -> str:
    lows, highs = np.unique(box.low), np.unique(box.high)
    if len(lows) == len(highs) == 1:
        return f"{lows[0]:g}..{highs[0]:g}"
    return f"{box.low.tolist()}..{box.high.tolist()}"
