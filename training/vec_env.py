"""Building the vec env of tabs, of one of two kinds:

- `inline` (`InlineVecEnv`): every tab driven from this process over one asyncio loop; a tab
  may run K simulations (`sims_per_tab`), each its own env to SB3 (envs = tabs x K);
- `subproc` (`ResilientSubprocVecEnv`): one `TabEnv` per port, each in its own worker process
  (what users of SB3's `SubprocVecEnv` know); one simulation per tab.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from training.outages import STRAGGLER_S
from training.tab_link import LinkDeadlines, PageSettings

if TYPE_CHECKING:  # the vec envs import SB3 and torch: not for `lunarfleet --help`
    import gymnasium as gym

    from training.tab_env import TabEnv
    from training.tab_vec_env import TabVecEnv

VEC_ENV_KINDS = ("inline", "subproc")
# lunarfleet bench: inline is as fast as subproc with one simulation per tab, starts in a fraction
# of the time, and needs no worker process (~160 MB) per tab.
DEFAULT_VEC_ENV = "inline"


@dataclass
class FleetEnvSettings:
    ports: list[int]
    page: PageSettings
    deadlines: LinkDeadlines
    health_port: int | None = None
    run_token: str = ""
    page_token: str | None = None
    origins: list[str | None] | None = None
    vec_env: str = DEFAULT_VEC_ENV  # one of VEC_ENV_KINDS
    sims_per_tab: int = 1  # > 1: inline only, the page URL must carry sims=K
    straggler_s: float = STRAGGLER_S  # the others wait this long for a slow tab, then it gets frozen steps

    @property
    def num_envs(self) -> int:
        return len(self.ports) * self.sims_per_tab


def make_tab_env(port: int, env_id: int, settings: FleetEnvSettings) -> gym.Env:
    """The env of one tab in a subproc worker, with SB3's Monitor (its `episode` info)."""
    from stable_baselines3.common.monitor import Monitor

    # override_existing=False: no monitor files here; Monitor only adds info["episode"].
    return Monitor(tab_env(port, env_id, settings))


def tab_env(port: int, env_id: int, settings: FleetEnvSettings) -> TabEnv:
    """One tab's `TabEnv`, reporting to the fleet's health channel."""
    from training.tab_env import TabEnv

    page = replace(settings.page, env_id=env_id, env_count=len(settings.ports))
    return TabEnv(
        port,
        page,
        settings.deadlines,
        health_port=settings.health_port,
        token=settings.page_token,
        origins=settings.origins,
        run_token=settings.run_token,
    )


def make_vec_env(
    settings: FleetEnvSettings,
    on_respawn: Callable[[int, str], None] | None = None,
    on_outage: Callable[[str, dict[str, Any]], None] | None = None,
) -> TabVecEnv:
    """The vec env of `settings.vec_env`'s kind. `on_outage` gets each tab outage as it ends (and
    those still open when it closes), in this process; without it they go on the health channel."""
    from training.health import HealthReporter
    from training.inline_vec_env import InlineVecEnv
    from training.subproc_vec_env import ResilientSubprocVecEnv

    if settings.vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"unknown vec env kind {settings.vec_env!r}; known: {', '.join(VEC_ENV_KINDS)}")
    if settings.vec_env == "inline":
        return InlineVecEnv(
            settings.ports,
            settings.page,
            settings.deadlines,
            sims=settings.sims_per_tab,
            health_port=settings.health_port,
            token=settings.page_token,
            origins=settings.origins,
            run_token=settings.run_token,
            straggler_s=settings.straggler_s,
            on_outage=on_outage,
        )
    if settings.sims_per_tab != 1:
        raise ValueError("several simulations per tab need the inline vec env (--vec-env inline)")
    fns = [functools.partial(make_tab_env, port, i, settings) for i, port in enumerate(settings.ports)]
    deadline = settings.deadlines.step_s * 2 + settings.deadlines.connect_s + 30
    return ResilientSubprocVecEnv(
        fns,
        step_deadline_s=deadline,
        on_respawn=on_respawn,
        straggler_s=settings.straggler_s,
        ports=settings.ports,
        on_event=on_outage or HealthReporter(settings.health_port, settings.run_token),
    )
