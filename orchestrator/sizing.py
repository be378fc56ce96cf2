"""The memory and CPU budget of a run: how many tabs (`--envs auto`, the memory floor check at
start, `doctor`) and how many torch threads for the trainer.

They live together because they share the per-tab cost figures measured below.
"""

from __future__ import annotations

import os

import psutil

from orchestrator.process_sampling import MB
from training.vec_env import DEFAULT_VEC_ENV

# Measured (2 cores, Chromium 156, the embedded sim, 2 tabs, a few thousand steps): a tab's
# renderer 28-48 MB PSS, its env worker 166 MB USS (243 MB RSS: Python, torch, gymnasium), the
# browser 60-120 MB PSS plus its 8 helper processes 134-207 MB PSS, the Playwright driver
# 120-140 MB RSS, the trainer 340 MB RSS. The estimates round those up, so --envs auto and the
# memory floor check err on the safe side. The inline vec env has no worker process per tab.
TAB_COST_MB = {"subproc": 250, "inline": 100}  # renderer (+ env worker), per tab, by vec env kind
BASE_COST_MB = 900  # trainer + browser + its helper processes + driver, once
DEFAULT_MEMORY_FLOOR_MB = 1000
# Tabs per core that still pay off (see `auto_envs`), and a hard cap for --envs auto.
TABS_PER_CORE = 2
AUTO_MAX_ENVS = 16
# On this many cores or fewer, --envs auto packs the embedded page's envs into one tab: PPO gets the
# same envs with one message a step (lunarfleet bench: ppo_original_settings_one_tab).
PACK_MAX_CORES = 2


class NotEnoughMemory(RuntimeError):
    """Raised before a run opens a single tab when `memory_refusal` says they would not fit."""


def tab_cost_mb(vec_env: str = DEFAULT_VEC_ENV) -> int:
    return TAB_COST_MB.get(vec_env, max(TAB_COST_MB.values()))


def max_envs_for_memory(available_mb: float, floor_mb: float, vec_env: str = DEFAULT_VEC_ENV) -> int:
    return max(int((available_mb - floor_mb - BASE_COST_MB) // tab_cost_mb(vec_env)), 0)


def _available_mb(available_mb: float | None) -> float:
    return psutil.virtual_memory().available / MB if available_mb is None else available_mb


def auto_envs(
    cores: int | None = None,
    available_mb: float | None = None,
    floor_mb: float = DEFAULT_MEMORY_FLOOR_MB,
    vec_env: str = DEFAULT_VEC_ENV,
) -> tuple[int, str]:
    """N for `--envs auto`, and why, in words.

    Cores: the tabs step in lock-step with the trainer, so each tab (renderer + env worker)
    keeps only part of a core busy (measured 2 tabs on 2 cores: ~10% renderer + ~13% worker
    each at ~110 steps/s per tab, the trainer the rest); two tabs a core keep the cores busy
    without starving the trainer. Memory: what is available above the floor, at TAB_COST_MB a tab.
    """
    cores = cores or os.cpu_count() or 1
    available_mb = _available_mb(available_mb)
    by_cores = max(min(TABS_PER_CORE * cores, AUTO_MAX_ENVS), 1)
    by_memory = max_envs_for_memory(available_mb, floor_mb, vec_env)
    n = max(min(by_cores, by_memory), 1)
    limit = "cores" if by_cores <= by_memory else "memory"
    why = (
        f"--envs auto: {n} tab{'' if n == 1 else 's'} ({cores} cores allow {by_cores} at {TABS_PER_CORE} a core, capped at {AUTO_MAX_ENVS}; "
        f"{available_mb:,.0f} MB available minus the {floor_mb:,.0f} MB floor and {BASE_COST_MB} MB for the trainer and "
        f"browser allow {by_memory} at about {tab_cost_mb(vec_env)} MB a tab with the {vec_env} vec env; {limit} decide)"
    )
    return n, why


def packed_layout(envs: int, cores: int | None = None) -> tuple[int, int, str] | None:
    """(tabs, simulations per tab, why) that give PPO `envs` envs with fewer tabs on a small
    machine, for `--envs auto` with the embedded page; None keeps one simulation a tab.

    Measured (`lunarfleet bench`, 2 cores, 4 PPO envs at the original settings, n_steps 2,048,
    three full benches, a4cb349, 859769e, f0265fa): 1 tab x 4 simulations trained 9-18% faster than
    2 tabs x 2, which beat 4 tabs x 1 by 20-29% (README, Throughput). A tab's simulations share one message a step; on two cores the
    trainer and one renderer keep both busy, and every further tab only adds messages and
    processes. The price: a tab that fails cuts all its simulations' episodes.
    """
    cores = cores or os.cpu_count() or 1
    if cores > PACK_MAX_CORES or envs < 2:
        return None
    why = (f"--envs auto: packed into 1 tab x {envs} simulations = the same {envs} PPO envs with one message a step "
           f"({cores} cores; a failure of that tab cuts all {envs} episodes; for one simulation a tab pass --envs {envs})")
    return 1, envs, why


def memory_refusal(
    envs: int,
    available_mb: float | None = None,
    floor_mb: float = DEFAULT_MEMORY_FLOOR_MB,
    vec_env: str = DEFAULT_VEC_ENV,
) -> str | None:
    """Why `envs` tabs must not be opened with the memory there is, or None when they fit."""
    if floor_mb <= 0:
        return None
    available_mb = _available_mb(available_mb)
    fits = max_envs_for_memory(available_mb, floor_mb, vec_env)
    if envs <= fits:
        return None
    per_tab = tab_cost_mb(vec_env)
    need = BASE_COST_MB + envs * per_tab
    advice = f"Use --envs {fits} or fewer, close other programs" if fits else "Not even one tab fits: close other programs"
    return (
        f"--envs {envs} needs about {need:,} MB ({BASE_COST_MB} MB + {per_tab} MB a tab) and would leave less than "
        f"the memory floor of {floor_mb:,.0f} MB: {available_mb:,.0f} MB are available. {advice}, or lower the floor "
        "with --memory-floor-mb"
    )


def trainer_threads(cores: int | None = None, envs: int = 1) -> int:
    """Torch threads for the trainer: a core for each tab first, torch gets what is left (1 to 4).

    Measured on 2 cores (shared, load average 7-10), one run each, iterations interleaved:
    2 tabs, subproc vec env: 226 steps/s with 1 torch thread, 36 with 2 (update 1.8 s against
    19.8 s; rollout 370 against 126 steps/s: idle OpenMP threads spin on the cores the tabs
    need); 4 tabs: 216 against 34 steps/s; 2 tabs, inline vec env: 287 against 43 steps/s
    (update 0.6 s against 10 s). PPO's update alone, no tabs: 3.3 s with 1 thread, 3.1-12.8 s
    with 2. The policy is a small MLP trained in minibatches of 64, which a second thread
    barely speeds up even on an idle core.
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, cores - envs))
