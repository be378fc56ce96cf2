"""A fake Ray host for the Ray transport's tests: it answers as orchestrator/ray_host.py does,
with no browser. Its own module, light to import: every actor's worker process imports it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from training import host_channel
from training.host_reply import HostReply
from training.protocol import OBS_SIZE
from training.step_round import Back, Stepped

TABS = 2  # per host


class FakeHost:
    """Each step answers every tab it was sent, after `delay_s`; observations count its steps, and
    a rejoin's first observations are -1. Its actor class is made as a real host's is
    (`orchestrator.ray_host.host_actor_class`): `serve` on its own thread."""

    def __init__(self, delay_s: float = 0.0, fail_after: int | None = None) -> None:
        self.delay_s = delay_s
        self.fail_after = fail_after  # raise in every step after this many
        self.steps = 0
        self.calls = 0

    def reset(self, seeds: list[Any], options: list[Any]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return np.zeros((TABS, OBS_SIZE), dtype=np.float32), [{} for _ in range(TABS)]

    def serve(self, address: tuple[str, int], ticket: bytes) -> None:
        host_channel.serve(address, ticket, lambda message: self.step(**message))

    def step(self, actions: dict[int, np.ndarray], rejoin: bool = False, wait_s: float = 0.0) -> HostReply:
        self.calls += 1
        if rejoin:
            return HostReply([(i, Back(np.full((1, OBS_SIZE), -1.0, dtype=np.float32))) for i in range(TABS)])
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ValueError("a bug in the host's step")
        time.sleep(self.delay_s if actions else min(wait_s, 0.01))
        answers = []
        for i in sorted(actions):
            self.steps += 1
            obs = np.full((1, OBS_SIZE), float(self.steps), dtype=np.float32)
            answers.append((i, Stepped(obs, np.ones(1, dtype=np.float32), np.zeros(1, dtype=bool), [{}])))
        return HostReply(answers)

    def count(self) -> tuple[int, int]:
        return self.calls, self.steps

    def env_method(self, name: str, args: Any, kwargs: Any) -> None:
        pass

    def close(self) -> list[Any]:
        return []
