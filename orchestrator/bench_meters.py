"""`lunarfleet bench`'s measuring tools: env-steps per second of a random policy, the CPU it
costs (this process and its workers, the browser, Ray), and memory (PSS) of processes."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

import numpy as np
import psutil

from browser_pool.pool import TabPool

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

RAY_BINARIES = ("raylet", "gcs_server")
RAY_PACKAGE = f"{os.sep}ray{os.sep}"


GROUPS = ("python", "browser", "ray")


class CpuMeter:
    """CPU seconds of this process (+ its Python workers), of the browsers (+ Playwright's
    drivers; also by Chromium process type, `process_kind`) and of Ray (the host actors' Python
    and Ray's own processes, all descendants of this process with `--ray local`)."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self._kinds: dict[int, str] = {}  # pid -> python, or a Chromium process type

    def sample(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                kind = self._kinds.get(proc.pid) or self._kind(proc)
                if kind != "python":  # a Ray worker starts as python and renames itself ray::...
                    self._kinds[proc.pid] = kind
                found[proc.pid] = (kind, times.user + times.system)
        return found

    def _kind(self, proc: psutil.Process) -> str:
        """python, ray, or the browser's kind of process (`process_kind`)."""
        if proc.pid == self.me.pid:
            return "python"
        name = proc.name()
        # Ray's workers (the host actors among them) name themselves "ray::ClassName"; raylet and
        # gcs_server are binaries; its other daemons are Python scripts inside the ray package.
        if name.startswith("ray::") or name in RAY_BINARIES or any(RAY_PACKAGE in arg for arg in proc.cmdline()[:3]):
            return "ray"
        return process_kind(proc)

    @staticmethod
    def delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """Seconds by group (python, browser, ray) and, as browser:KIND, by Chromium process type."""
        used = dict.fromkeys(GROUPS, 0.0)
        for pid, (kind, seconds) in after.items():
            spent = seconds - (before[pid][1] if pid in before else 0.0)
            group = kind if kind in ("python", "ray") else "browser"
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


def settle(meter: CpuMeter, group: str, below_cores: float = 0.15, window_s: float = 0.5, limit_s: float = 20.0) -> float:
    """Wait until the processes of `group` use less than `below_cores` (their start-up work is
    done: Ray starts idle workers and its agents after `ray.init` returns); the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        before = meter.sample()
        time.sleep(window_s)
        if CpuMeter.delta(before, meter.sample())[group] < below_cores * window_s:
            break
    return time.monotonic() - began


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
