"""Real tabs for tests: the embedded page served on a free port, a TabPool, and TabEnvs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from browser_pool.chromium import LaunchOptions, find_chromium
from browser_pool.pool import TabPool
from orchestrator.app_server import AppServer
from orchestrator.doctor import playwright_chromium
from training.event_loop import LoopThread
from training.tab_env import TabEnv
from training.tab_link import PageSettings


@contextlib.contextmanager
def real_tabs(
    app_port: int, ports: list[int], seeds: list[int], max_steps: int = 10_000, extra: str = ""
) -> Iterator[tuple[list[TabEnv], TabPool, LoopThread]]:
    """TabEnvs on `ports`, each driven by a headless tab of the embedded sim with its seed."""
    app = AppServer(app_port)
    envs: list[TabEnv] = []
    loop = LoopThread("test-pool")
    pool = None
    try:
        envs = [
            TabEnv(port, PageSettings(env_id=i, env_count=len(ports), max_episode_steps=max_steps))
            for i, port in enumerate(ports)
        ]
        urls = [
            f"http://localhost:{app_port}/?wsPort={port}&maxSteps={max_steps}&seed={seed}{extra}"
            for port, seed in zip(ports, seeds, strict=True)
        ]
        choice = find_chromium(None, playwright_chromium())
        pool = TabPool(urls, ports, LaunchOptions(executable=choice.executable))
        loop.run(pool.start(), timeout=120)
        yield envs, pool, loop
    finally:
        if pool is not None:
            loop.run(pool.close(), timeout=60)
        loop.stop()
        for env in envs:
            env.close()
        app.close()
