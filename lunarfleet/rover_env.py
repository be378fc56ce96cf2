"""`gymnasium.make("LunarFleet/Rover-v0", stage=1, ...)`: one env, one headless tab that it owns."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from lunarfleet.options import ENV_OPTIONS, env_options, wants_run_folder
from lunarfleet.owned_run import OwnedRun
from orchestrator.fleet import Fleet
from orchestrator.run_setup import open_tab_fleet
from training.tab_env import TabEnv, action_space, observation_space
from training.vec_env import tab_env

ENV_ID = "LunarFleet/Rover-v0"
ROVER_OPTIONS = tuple(name for name in ENV_OPTIONS if name != "vec_env")  # one env: no vec env to choose


class RoverEnv(gym.Env):
    """The rover simulation in one headless tab: 30 observations in [-1, 1], actions [speed, turn, dig].

    Takes the options of `lunarfleet.make_vec_env` (`stage`, `seed`, `max_episode_steps`, `url`, ...).
    A crashed or hung tab ends the episode truncated; the next `reset()` waits for its replacement.
    `close()` stops the tab, the browser and the page server (also done at interpreter exit).
    """

    metadata = {"render_modes": []}

    def __init__(self, *, url: str | None = None, render_mode: str | None = None, **options: Any) -> None:
        if render_mode is not None:
            raise ValueError(f"{ENV_ID} draws nothing itself (render_mode={render_mode!r}): "
                             "watch=True shows its tab in a window, record_video=S records it")
        self.observation_space, self.action_space = observation_space(), action_space()
        cfg, monitor = env_options(ENV_ID, 1, url, 1, options, accepted=ROVER_OPTIONS, arguments="url")
        self._run = OwnedRun(cfg, wants_run_folder(options))
        self._tab: TabEnv | None = None
        try:
            settings = open_tab_fleet(self._run.pieces, cfg, monitor, self._run.events)
            self._tab = tab_env(settings.ports[0], 0, settings)  # listens before its page opens
            self._run.close_first(self._tab.close)
            fleet = self._run.pieces.fleet
            assert fleet is not None
            fleet.start()
            fleet.wait_connected(cfg.connect_timeout)
        except BaseException:
            self._run.close()
            raise

    @property
    def fleet(self) -> Fleet:
        """The tab pool and its health channel (`orchestrator/fleet.py`)."""
        assert self._run.pieces.fleet is not None, "the env is closed"
        return self._run.pieces.fleet

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._run.check()
        return self._open_tab().reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._run.check()
        return self._open_tab().step(action)

    def _open_tab(self) -> TabEnv:
        if self._tab is None or self._run.closed:
            raise RuntimeError(f"{ENV_ID}: the env is closed")
        return self._tab

    def close(self) -> None:
        self._run.close()
