"""`lunarfleet bench`, (d) start-up and (e) memory: seconds from launching the browser to 8 tabs
connected, seconds until each vec env kind listens, PSS per tab and per subproc worker."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from browser_pool.pool import TabPool
from orchestrator.bench_meters import renderer_pss_mb, worker_pss_mb
from orchestrator.bench_results import MAX_EPISODE_STEPS, STARTUP_TABS
from training.inline_vec_env import InlineVecEnv
from training.tab_link import LinkDeadlines, PageSettings
from training.vec_env import FleetEnvSettings, make_vec_env

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from orchestrator.bench_session import Bench


# ---- (d) seconds to 8 tabs connected ---------------------------------------------------------
@contextlib.contextmanager
def timed_startup(bench: Bench, count: int) -> Iterator[tuple[TabPool, InlineVecEnv]]:
    """A browser of `count` tabs launched while an inline vec env for the first 8 listens; the
    seconds from launch to their pages connected go into the result. Yields the pool and that env."""
    marks: dict[str, list[float]] = {}  # "connected" (env) and pool events, as they come

    def mark(kind: str, fields: dict[str, Any]) -> None:
        marks.setdefault(kind, []).append(time.monotonic())

    venv = InlineVecEnv(
        bench.ports[:STARTUP_TABS],
        PageSettings(max_episode_steps=MAX_EPISODE_STEPS),
        LinkDeadlines(step_s=10.0, connect_s=60.0),
        token=bench.token,
        on_event=mark,
    )
    try:
        launched = time.monotonic()
        with bench.browser(count, background=True, on_event=mark) as (pool, started):
            venv.reset()
            _note_startup(bench, marks, launched, started)
            yield pool, venv
    finally:
        venv.close()


def _note_startup(bench: Bench, marks: dict[str, list[float]], launched: float, started: Any) -> None:
    r = bench.result
    connected = marks.get("connected", [])
    r.startup_s_8_tabs = round((connected[-1] if len(connected) >= STARTUP_TABS else time.monotonic()) - launched, 3)
    started.result(timeout=120)
    r.pool_ready_s_8_tabs = round(time.monotonic() - launched, 3)
    r.startup = {
        "browser_launched_s": _since(marks, "browser_launched", launched),
        "first_tab_connected_s": _since(marks, "connected", launched, first=True),
        "all_tabs_connected_s": r.startup_s_8_tabs,
        "all_tabs_opened_s": _since(marks, "tab_opened", launched),
        "pool_ready_s": r.pool_ready_s_8_tabs,
    }
    bench.say(
        f"[Bench]   {STARTUP_TABS} tabs connected {r.startup_s_8_tabs:.2f} s after launch "
        f"(browser up at {r.startup['browser_launched_s']} s, first tab at {r.startup['first_tab_connected_s']} s)"
    )


def _since(marks: dict[str, list[float]], kind: str, start: float, first: bool = False) -> float | None:
    times = marks.get(kind)
    if not times:
        return None
    return round((times[0] if first else times[-1]) - start, 3)


# ---- (d) seconds until a vec env listens -----------------------------------------------------
def vec_env_start_phase(bench: Bench) -> None:
    """Seconds until a vec env for 8 tabs listens on its ports, so pages can connect. The
    subproc workers start as in `train` (a fresh interpreter importing SB3 and torch each),
    not from this benchmark's preloaded fork server."""
    from training.subproc_vec_env import ResilientSubprocVecEnv
    from training.vec_env import make_tab_env

    settings = FleetEnvSettings(
        ports=bench.ports[:STARTUP_TABS], page=PageSettings(), deadlines=LinkDeadlines(), page_token=bench.token
    )
    for kind in bench.s.kinds:
        began = time.monotonic()
        if kind == "subproc":
            fns = [functools.partial(make_tab_env, port, i, settings) for i, port in enumerate(settings.ports)]
            venv = ResilientSubprocVecEnv(fns, start_method="spawn")
        else:
            venv = make_vec_env(settings)
        seconds = round(time.monotonic() - began, 2)
        if kind == "subproc":
            pss = [psutil.Process(p.pid).memory_full_info().pss / 2**20 for p in venv.processes if p.is_alive()]
            if pss:
                bench.result.pss_mb_per_subproc_worker_as_train = round(float(np.mean(pss)), 1)
        venv.close()
        bench.result.vec_env_start_s_8_tabs[kind] = seconds
        bench.say(f"[Bench]   {kind:<8} vec env for {STARTUP_TABS} tabs listening after {seconds:.2f} s")


# ---- (e) memory --------------------------------------------------------------------------------
def measure_memory(bench: Bench, pool: TabPool) -> None:
    """PSS of each tab's renderer, and of the browser's processes all tabs share."""
    per_tab, shared = renderer_pss_mb(pool)
    r = bench.result
    if per_tab:
        r.pss_mb_per_tab = round(float(np.mean(per_tab)), 1)
        r.pss_mb_per_tab_max = round(float(np.max(per_tab)), 1)
    r.pss_mb_browser_shared = round(shared, 1)
    bench.say(f"[Bench]   PSS per tab (renderer) {r.pss_mb_per_tab} MB, browser's shared processes {shared:.0f} MB")


def measure_workers(bench: Bench, venv: VecEnv) -> None:
    """PSS of a subproc vec env's worker processes (forked from the preloaded server)."""
    pss = worker_pss_mb(venv)
    if pss:
        bench.result.pss_mb_per_subproc_worker = round(float(np.mean(pss)), 1)
        bench.say(f"[Bench]   PSS per subproc worker process {bench.result.pss_mb_per_subproc_worker} MB")
