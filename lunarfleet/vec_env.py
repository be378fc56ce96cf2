"""`lunarfleet.make_vec_env`: the tabs of `lunarfleet train` as an SB3 `VecEnv` for your own script."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from lunarfleet.options import env_options, wants_run_folder
from lunarfleet.owned_run import OwnedRun
from orchestrator.fleet import Fleet
from orchestrator.run_setup import set_up_training


class FleetVecEnv(VecEnvWrapper):
    """A `VecEnv` of N tabs that owns them: its browser, page server and ports go with `close()`.

    Everything else is the vec env `lunarfleet train` trains on (`training/tab_vec_env.py`):
    a failed tab's episode ends truncated, the pool replaces the tab, the others step on.
    """

    def __init__(self, run: OwnedRun) -> None:
        assert run.pieces.venv is not None
        super().__init__(run.pieces.venv)
        self.run = run

    @property
    def fleet(self) -> Fleet:
        """The tab pool and its health channel (`orchestrator/fleet.py`)."""
        assert self.run.pieces.fleet is not None, "the vec env is closed"
        return self.run.pieces.fleet

    def reset(self) -> VecEnvObs:
        self.run.check()
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.run.check()
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def close(self) -> None:
        self.run.close()

    @property
    def closed(self) -> bool:
        return self.run.closed

    def __enter__(self) -> FleetVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_vec_env(n_envs: int = 4, *, url: str | None = None, sims_per_tab: int = 1, **options: Any) -> FleetVecEnv:
    """N headless tabs of the rover simulation as a Stable-Baselines3 `VecEnv`.

    The one-line change for an existing SB3 script (such as the original app's
    train_ppo_parallel.py)::

        # before: env = SubprocVecEnv([make_env(i) for i in range(NUM_ENVS)])
        env = lunarfleet.make_vec_env(NUM_ENVS)

    It opens a headless Chromium, serves the embedded simulation (or opens `url`, a template with
    {port}, {env_id}, {max_steps}, as `lunarfleet train --url`), gives every tab its own WebSocket
    port and returns once all tabs are connected. Crashed or hung tabs are replaced as in
    `lunarfleet train`: that env's episode ends truncated, the others step on. The original
    app's env methods answer: `connect`, `set_timescale`, `send_parallel_training_info`,
    `send_checkpoint_info` (`env.env_method(...)`).

    `sims_per_tab` K > 1 runs K simulations per tab (N x K envs; embedded simulation only).
    Other options take the names of `lunarfleet train`'s flags, e.g. `stage=2`, `timescale=2.0`,
    `max_episode_steps=1000`, `seed=0`, `base_port=8765`, `vec_env="subproc"`, `runs_dir="runs"`
    (writes events.jsonl and config.json there; default: no files). `vec_env="subproc"` runs
    each env in a worker process, as SB3's `SubprocVecEnv`: guard your script's top level with
    `if __name__ == "__main__":`, as that needs too (the default, inline, needs no guard).

    Close it with `close()` or a `with` block; it is also closed at interpreter exit::

        with lunarfleet.make_vec_env(4, stage=1) as env:
            PPO("MlpPolicy", env).learn(100_000)
    """
    cfg, monitor = env_options("lunarfleet.make_vec_env", n_envs, url, sims_per_tab, options)
    run = OwnedRun(cfg, wants_run_folder(options))
    try:
        set_up_training(run.pieces, cfg, monitor, run.events)
        return FleetVecEnv(run)
    except BaseException:
        run.close()
        raise
