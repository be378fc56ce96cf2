"""Building the vec env of tabs: one `TabEnv` per port, each in its own worker process."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor

from training.subproc_vec_env import ResilientSubprocVecEnv
from training.tab_env import TabEnv
from training.tab_link import LinkDeadlines, PageSettings


@dataclass
class FleetEnvSettings:
    ports: list[int]
    page: PageSettings
    deadlines: LinkDeadlines
    health_port: int | None = None
    run_token: str = ""
    page_token: str | None = None
    origins: list[str | None] | None = None


def make_tab_env(port: int, env_id: int, settings: FleetEnvSettings) -> gym.Env:
    page = replace(settings.page, env_id=env_id, env_count=len(settings.ports))
    env = TabEnv(
        port,
        page,
        settings.deadlines,
        health_port=settings.health_port,
        token=settings.page_token,
        origins=settings.origins,
        run_token=settings.run_token,
    )
    # override_existing=False: no monitor files here; Monitor only adds info["episode"].
    return Monitor(env)


def make_vec_env(
    settings: FleetEnvSettings, on_respawn: Callable[[int, str], None] | None = None
) -> ResilientSubprocVecEnv:
    fns = [functools.partial(make_tab_env, port, i, settings) for i, port in enumerate(settings.ports)]
    deadline = settings.deadlines.step_s * 2 + settings.deadlines.connect_s + 30
    return ResilientSubprocVecEnv(fns, step_deadline_s=deadline, on_respawn=on_respawn)
