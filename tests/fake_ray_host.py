"""A fake Ray host for the Ray transport's tests: it answers as orchestrator/ray_host.py does,
with no browser. Its own module, light to import: every actor's worker process imports it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from training.host_reply import HostReply, pack, unpack
from training.protocol import OBS_SIZE
from training.step_round import Back, Stepped

TABS = 2  # per host


class FakeHost:
    """Each step answers every tab it was sent, after `delay_s`; observations count its steps, and
    a rejoin's first observations are -1."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.steps = 0
        self.calls = 0

    def reset(self, seeds: list[Any], options: list[Any]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return np.zeros((TABS, OBS_SIZE), dtype=np.float32), [{} for _ in range(TABS)]

    def step(self, packed_actions: bytes, rejoin: bool = False, wait_s: float = 0.0) -> bytes:
        self.calls += 1
        if rejoin:
            return pack(HostReply([(i, Back(np.full((1, OBS_SIZE), -1.0, dtype=np.float32))) for i in range(TABS)]))
        actions: dict[int, np.ndarray] = unpack(packed_actions)
        time.sleep(self.delay_s if actions else min(wait_s, 0.01))
        answers = []
        for i in sorted(actions):
            self.steps += 1
            obs = np.full((1, OBS_SIZE), float(self.steps), dtype=np.float32)
            answers.append((i, Stepped(obs, np.ones(1, dtype=np.float32), np.zeros(1, dtype=bool), [{}])))
        return pack(HostReply(answers))

    def count(self) -> tuple[int, int]:
        return self.calls, self.steps

    def env_method(self, name: str, args: Any, kwargs: Any) -> None:
        pass

    def close(self) -> list[Any]:
        return []
