"""`lunarfleet bench`'s measuring tools: env-steps per second of a random policy, the CPU it
costs (this process and its workers versus the browser), and memory (PSS) of processes."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np
import psutil

from browser_pool.pool import TabPool

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv


class CpuMeter:
    """CPU seconds of this process (+ its Python workers) and of the browser (+ driver), the
    browser's also by Chromium process type (`process_kind`)."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self._kinds: dict[int, str] = {}  # pid -> python, or a Chromium process type

    def sample(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                if proc.pid not in self._kinds:
                    self._kinds[proc.pid] = "python" if proc.pid == self.me.pid else process_kind(proc)
                found[proc.pid] = (self._kinds[proc.pid], times.user + times.system)
        return found

    @staticmethod
    def delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """Seconds by group (python, browser) and, as browser:KIND, by Chromium process type."""
        used = {"python": 0.0, "browser": 0.0}
        for pid, (kind, seconds) in after.items():
            spent = seconds - (before[pid][1] if pid in before else 0.0)
            group = "python" if kind == "python" else "browser"
            used[group] += spent
            if group == "browser":
                used[f"browser:{kind}"] = used.get(f"browser:{kind}", 0.0) + spent
        return used


def process_kind(proc: psutil.Process) -> str:
    """python (a worker), driver (Playwright's node), or the Chromium process type: browser,
    renderer, network (the network service), gpu, other (zygotes, other utilities)."""
    name = proc.name()
    if name.startswith("python"):
        return "python"
    if name.startswith("node") or "playwright" in name:
        return "driver"
    args = proc.cmdline()
    kind = next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), None)
    if kind is None:
        return "browser"
    if kind == "utility" and any("NetworkService" in a for a in args):
        return "network"
    return {"renderer": "renderer", "gpu-process": "gpu"}.get(kind, "other")


def collect(venv: VecEnv, seconds: float, warmup_s: float, meter: CpuMeter | None = None) -> tuple[float, dict[str, float]]:
    """Env-steps per second of a random policy; CPU ms per 1000 env-steps by group."""
    rng = np.random.default_rng(0)
    low, high = venv.action_space.low, venv.action_space.high
    bank = [rng.uniform(low, high, size=(venv.num_envs, len(low))).astype(np.float32) for _ in range(16)]
    venv.reset()
    began = time.monotonic()
    i = 0
    while time.monotonic() - began < warmup_s:
        venv.step(bank[i % 16])
        i += 1
    before = meter.sample() if meter else {}
    began = time.monotonic()
    steps = 0
    while True:
        venv.step(bank[steps % 16])
        steps += 1
        elapsed = time.monotonic() - began
        if elapsed >= seconds:
            break
    cpu = CpuMeter.delta(before, meter.sample()) if meter else {}
    env_steps = steps * venv.num_envs
    return env_steps / elapsed, {k: 1e6 * v / env_steps for k, v in cpu.items()}  # ms per 1000 steps


def renderer_pss_mb(pool: TabPool) -> tuple[list[float], float]:
    """PSS of each tab's renderer, and of the browser's other processes (shared by all tabs)."""
    renderers = {t.renderer_pid for t in pool.tabs if t.renderer_pid}
    per_tab: list[float] = []
    for pid in renderers:
        with contextlib.suppress(psutil.Error):
            per_tab.append(psutil.Process(pid).memory_full_info().pss / 2**20)
    shared = 0.0
    if pool.browser_pid:
        with contextlib.suppress(psutil.Error):
            browser = psutil.Process(pool.browser_pid)
            for proc in [browser, *browser.children(recursive=True)]:
                if proc.pid not in renderers:
                    with contextlib.suppress(psutil.Error):
                        shared += proc.memory_full_info().pss / 2**20
    return per_tab, shared


def worker_pss_mb(venv: VecEnv) -> list[float]:
    """PSS of each worker process of a subproc vec env (none for an inline one)."""
    pss = []
    for process in getattr(venv, "processes", []):
        with contextlib.suppress(psutil.Error, AttributeError):
            pss.append(psutil.Process(process.pid).memory_full_info().pss / 2**20)
    return pss


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
