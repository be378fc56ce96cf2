"""A Gymnasium env whose far end is one browser tab, reached over one WebSocket port.

Tab failures never escape as exceptions: the step that was cut short comes back truncated,
with the last good observation (so PPO bootstraps its value from it), and the next reset
waits for the replacement tab on the same port. Only a port that stays empty past the
reconnect deadline raises (`TabLost`), because then there is nothing left to train on.

The original rover app's own watchdog (a `restart_request`, then the page drops its socket and
reconnects about 1 s later) is handled the same way: that episode ends truncated and the reset
waits for the page to come back. The other tabs do not wait meanwhile: the vec envs give this
env frozen steps until its reset is done (`training/outages.py`).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from training.event_loop import LoopThread
from training.health import HealthReporter
from training.protocol import ACTION_SIZE, OBS_SIZE, ended_by_time_limit
from training.step_round import TAB_FAILURE, TAB_FAILURE_DETAIL
from training.tab_link import LinkDeadlines, PageSettings, TabFailure, TabLink

STEP_REPORT_INTERVAL_S = 1.0


def observation_space() -> gym.spaces.Box:
    return gym.spaces.Box(low=-1.0, high=1.0, shape=(OBS_SIZE,), dtype=np.float32)


def action_space() -> gym.spaces.Box:
    return gym.spaces.Box(
        low=np.array([-1.0, -1.0, 0.0], dtype=np.float32),
        high=np.array([1.0, 1.0, 1.0], dtype=np.float32),
        shape=(ACTION_SIZE,),
        dtype=np.float32,
    )


class TabEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        port: int,
        settings: PageSettings | None = None,
        deadlines: LinkDeadlines | None = None,
        *,
        health_port: int | None = None,
        token: str | None = None,
        origins: list[str | None] | None = None,
        run_token: str = "",
    ) -> None:
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.port = port
        self.settings = settings or PageSettings()
        self._report = HealthReporter(health_port, run_token)
        self._loop = LoopThread(f"tab-link-{port}")
        self._link = TabLink(
            port, self.settings, deadlines, token=token, origins=origins, on_event=self._report
        )
        self._loop.run(self._link.start())
        self._last_obs = np.zeros(OBS_SIZE, dtype=np.float32)
        self._needs_reset = True
        self._steps = 0
        self._last_report = time.monotonic()
        self.tab_failures = 0
        self._at_boundary = False  # the last episode ended by itself (not by a tab failure)
        self._recycle_asked = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._link.request_seed(int(seed))
        if self.recycle_due():
            # The orchestrator swaps the page now, between two episodes: no step is lost.
            self._recycle_asked = False
            self._report("recycle_ready", {"port": self.port})
            self._loop.run(self._link.next_page())
        self._at_boundary = False
        while True:
            try:
                obs, info = self._loop.run(self._link.reset())
                break
            except TabFailure as failure:
                self._on_failure(failure)  # try again with the next page that connects
        self._last_obs = obs
        self._needs_reset = False
        self._report("stepping", {"port": self.port})
        return obs, info

    def step(self, action: np.ndarray):
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended")
        try:
            obs, reward, done, info = self._loop.run(self._link.step(action))
        except TabFailure as failure:
            self._on_failure(failure)
            self._needs_reset = True
            info = {TAB_FAILURE: failure.cause, TAB_FAILURE_DETAIL: failure.detail}
            return self._last_obs.copy(), 0.0, False, True, info
        self._last_obs = obs
        self._count_step()
        if not done:
            return obs, reward, False, False, info
        self._needs_reset = True
        self._at_boundary = True
        timed_out = ended_by_time_limit(info, self.settings.max_episode_steps)
        return obs, reward, not timed_out, timed_out, info

    def recycle_due(self) -> bool:
        """Whether the next reset swaps the page: the orchestrator asked, and an episode just ended."""
        self._recycle_asked |= self.port in self._report.recycle_requests()
        return self._recycle_asked and self._at_boundary

    def _on_failure(self, failure: TabFailure) -> None:
        self.tab_failures += 1
        self._report("failed", {"port": self.port, "cause": failure.cause, "detail": failure.detail})

    def _count_step(self) -> None:
        self._steps += 1
        now = time.monotonic()
        if now - self._last_report >= STEP_REPORT_INTERVAL_S:
            self._report("steps", {"port": self.port, "steps": self._steps})
            self._last_report = now

    # ---- what `env_method` reaches (training/tab_link.py ENV_METHODS) --------------------
    def connect(self) -> None:
        """Return once the tab's page is connected (the original app's trainer calls it first)."""
        self._loop.run(self._link.wait_connected())

    def set_timescale(self, timescale: float) -> None:
        self._loop.run(self._link.send_timescale(timescale), timeout=5)

    def send_parallel_training_info(self, num_envs: int, env_id: int) -> None:
        self._loop.run(self._link.send_parallel_training_info(num_envs, env_id), timeout=5)

    def send_checkpoint_info(self, name: str, steps: int) -> None:
        self._loop.run(self._link.send_checkpoint_info(name, steps), timeout=5)

    set_checkpoint_info = send_checkpoint_info  # LunarFleet's trainer's name for it

    def set_stage(self, stage: int, obstacles: int | None = None) -> None:
        """Reward stage (and the curriculum's obstacle count) of the embedded sim, from the next
        episode on (and for replacement tabs)."""
        self._loop.run(self._link.send_stage(stage, obstacles), timeout=5)

    def close(self) -> None:
        try:
            self._loop.run(self._link.close(), timeout=10)
        finally:
            self._loop.stop()
            self._report.close()
