"""The bench's session: its browser(s) of tabs, its vec envs and its rows, for the phases
(`bench_startup.py`, `bench_collection.py`, `bench_realtime.py`, `bench_ppo.py`) to use;
`bench.py` runs the phases in order."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from browser_pool.chromium import LaunchOptions
from browser_pool.pool import TabPool
from orchestrator.bench_meters import CpuMeter, collect, rounded
from orchestrator.bench_results import MAX_EPISODE_STEPS, STARTUP_TABS, BenchResult, BenchSettings, Row
from orchestrator.config import WORKER_SOCKET
from orchestrator.events import say
from orchestrator.run_setup import RunPieces, find_browser, free_ports, serve_page
from training.event_loop import LoopThread
from training.tab_link import LinkDeadlines, PageSettings
from training.vec_env import FleetEnvSettings, make_vec_env

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv


class Bench:
    def __init__(self, settings: BenchSettings, out: Callable[[str], None] = say) -> None:
        self.s = settings
        self.say = out
        self.result = BenchResult()
        self.meter = CpuMeter()
        self.token = secrets.token_hex(8)
        self.loop = LoopThread("bench-pool")
        self.pieces = RunPieces()  # the page server
        self.app_port = 0
        self.ports: list[int] = []
        self.executable: str | None = None
        self.null_rates: dict[int, float] = {}  # envs -> the null env's env-steps/s (bench_collection.py)

    # ---- set-up (orchestrator/run_setup.py) --------------------------------------------------
    def set_up(self) -> None:
        self.executable = find_browser(self.s.browser, self.say, announce=False).executable
        self.app_port = serve_page(self.pieces, self.s.app_port, self.say)
        self.ports = free_ports(self.s.base_port, max([STARTUP_TABS, *self.s.tabs, *self.s.realtime_tabs]))
        if "subproc" in self.s.kinds:
            # Workers fork from a server that imported SB3 and torch once (~0.03 s per worker
            # instead of ~1.5 s); only start-up gets faster, not stepping.
            with contextlib.suppress(RuntimeError, ValueError):
                mp.get_context("forkserver").set_forkserver_preload(
                    ["training.vec_env", "training.tab_env", "stable_baselines3.common.monitor"]
                )

    def tear_down(self) -> None:
        try:
            self.pieces.close()
        finally:
            self.loop.stop()

    # ---- what the phases use -----------------------------------------------------------------
    @contextlib.contextmanager
    def browser(
        self,
        count: int,
        extra: str = "",
        background: bool = False,
        page: str = "",
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> Iterator[tuple[TabPool, Any]]:
        """One browser with `count` tabs of the embedded page (or `page` of webapp/, e.g. echo.html;
        URL parameters `extra`), closed after; with `background`, yielded while the tabs are still
        opening (with the start's future)."""
        urls = [
            f"http://localhost:{self.app_port}/{page}?wsPort={port}&maxSteps={MAX_EPISODE_STEPS}&seed={i}"
            f"&token={self.token}{WORKER_SOCKET}{extra}"
            for i, port in enumerate(self.ports[:count])
        ]
        pool = TabPool(urls, self.ports[:count], LaunchOptions(executable=self.executable), on_event=on_event)
        started = asyncio.run_coroutine_threadsafe(pool.start(), self.loop.loop)
        try:
            if not background:
                started.result(timeout=120)
            yield pool, started
        finally:
            with contextlib.suppress(Exception):
                started.result(timeout=120)
            with contextlib.suppress(Exception):
                self.loop.run(pool.close(), timeout=60)

    @contextlib.contextmanager
    def vec_env(self, tabs: int, kind: str = "inline", sims: int = 1) -> Iterator[Any]:
        """The vec env of the first `tabs` ports, as `train` makes it (`make_vec_env`), closed after."""
        settings = FleetEnvSettings(
            ports=self.ports[:tabs],
            page=PageSettings(max_episode_steps=MAX_EPISODE_STEPS),
            deadlines=LinkDeadlines(step_s=10.0, connect_s=60.0),
            page_token=self.token,
            vec_env=kind,
            sims_per_tab=sims,
        )
        with contextlib.closing(make_vec_env(settings)) as venv:
            yield venv

    def row(self, mode: str, tabs: int, sims: int, venv: VecEnv) -> Row:
        """A collection row: env-steps/s of a random policy through `venv`, and its CPU."""
        rate, cpu = collect(venv, self.s.seconds, self.s.warmup_s, self.meter)
        row = Row(
            mode,
            tabs,
            sims,
            venv.num_envs,
            round(rate, 1),
            None,
            rounded(cpu.get("python")),
            rounded(cpu.get("browser")),
            rounded(cpu.get("ray")) if cpu.get("ray") else None,
            browser_cpu_by_type={k.split(":", 1)[1]: round(v, 1) for k, v in cpu.items() if k.startswith("browser:")},
        )
        self.result.rows.append(row)
        self.say(f"[Bench]   {mode:<14} {tabs} tab(s) x {sims} = {venv.num_envs:>3} envs: {rate:>9,.0f} env-steps/s")
        return row
