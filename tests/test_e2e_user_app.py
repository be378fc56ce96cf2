"""The user's own page, unmodified: the compatibility page (tests/compat_app/, which behaves like
the original rover app: real-time, its own 1 s watchdog, no LunarFleet extensions), a page that
connects only on a click, a video of tab 1, and `lunarfleet tabs` beside a plain trainer script.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.app_server import AppServer
from orchestrator.tabs_command import video_ffmpeg
from tests.conftest import REPO, assert_frozen, run_cli, start_cli, wait_for_line
from tests.fake_page import FakePage, PageThread, free_port
from training.inline_vec_env import InlineVecEnv
from training.tab_env import TabEnv
from training.tab_link import LinkDeadlines, PageSettings

COMPAT_APP = Path(__file__).resolve().parent / "compat_app"
PLAIN_SERVER = Path(__file__).resolve().parent / "plain_ws_server.py"
ACTION = np.array([0.5, -0.25, 1.0], dtype=np.float32)


@contextlib.contextmanager
def compat_page_served(port: int) -> Iterator[str]:
    """The compatibility page on http://localhost:PORT/ (127.0.0.1 and ::1), as a user's app server would."""
    server = AppServer(port, COMPAT_APP)
    try:
        yield f"http://localhost:{port}/"
    finally:
        server.close()


def _events(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


# ---- the env side of the original app's watchdog, without a browser ------------------------------
def test_a_watchdog_drop_ends_the_episode_truncated_and_the_reset_waits_for_the_page() -> None:
    env = TabEnv(free_port(), PageSettings(), LinkDeadlines(step_s=2.0, connect_s=10.0))
    try:
        first = PageThread(FakePage(env.port, seed=1, restart_after=2, close_after=3)).start()
        try:
            env.reset()
            for _ in range(3):  # the third reply comes after the page's restart_request
                last, _, terminated, truncated, _ = env.step(ACTION)
                assert not terminated and not truncated
            obs, reward, terminated, truncated, info = env.step(ACTION)  # the page drops its socket
            assert (reward, terminated, truncated) == (0.0, False, True)
            assert info["tab_failure"] == "watchdog"
            np.testing.assert_array_equal(obs, last)  # the terminal observation is the last good one
        finally:
            first.stop()
        second = PageThread(FakePage(env.port, seed=2))
        threading.Timer(0.5, second.start).start()  # the page comes back by itself a little later
        try:
            began = time.monotonic()
            env.reset()
            assert time.monotonic() - began >= 0.4
            env.step(ACTION)
            assert second.page.close_code is None and second.page.steps_answered == 1
        finally:
            second.stop()
    finally:
        env.close()


def test_the_inline_vec_env_gives_frozen_steps_while_the_page_is_away_and_the_other_tab_steps_on() -> None:
    """The other tabs must not wait while this page reconnects (their own watchdogs would fire)."""
    ports = [free_port(), free_port()]
    venv = InlineVecEnv(ports, PageSettings(), LinkDeadlines(step_s=2.0, connect_s=10.0))
    actions = np.stack([ACTION, ACTION])
    pages = [PageThread(FakePage(ports[0], seed=1, restart_after=2, close_after=3)),
             PageThread(FakePage(ports[1], seed=2))]
    try:
        for page in pages:
            page.start()
        venv.reset()
        for _ in range(3):
            last, _, _, _ = venv.step(actions)
        began = time.monotonic()
        obs, rewards, dones, infos = venv.step(actions)  # tab 1's page drops its socket after its watchdog
        assert time.monotonic() - began < 0.4, "a known failure needs no straggler grace"
        assert not dones[1] and rewards[0] == 0.0
        assert_frozen(dones[0], infos[0], "watchdog", last[0])
        np.testing.assert_array_equal(obs[0], last[0])
        pages[0].stop()
        for _ in range(3):
            began = time.monotonic()
            obs, _, dones, infos = venv.step(actions)
            assert not dones[1] and time.monotonic() - began < 0.4, "tab 2 must not wait for tab 1"
            assert_frozen(dones[0], infos[0], "watchdog", last[0])
            assert "tab_waiting" not in infos[1]
            np.testing.assert_array_equal(obs[0], last[0])
        pages[0] = PageThread(FakePage(ports[0], seed=3)).start()
        calls = 3 + 1 + 3
        for _ in range(1000):
            _, _, dones, infos = venv.step(actions)
            calls += 1
            if "tab_failure" in infos[0]:
                break
        assert dones[0] and infos[0]["tab_failure"] == "watchdog" and not dones[1]
        np.testing.assert_array_equal(infos[0]["terminal_observation"], last[0])
        assert pages[1].page.steps_answered == calls  # tab 2 stepped at every vec step, in one episode
        assert pages[1].page.episode == 1
        assert venv.frozen_steps >= 4
    finally:
        for page in pages:
            page.stop()
        venv.close()


# ---- real Chromium ---------------------------------------------------------------------------------
@pytest.mark.browser
def test_ppo_trains_through_the_compat_page_and_its_watchdog_costs_only_episodes(
    tmp_path: Path, ports, no_leftovers
) -> None:
    app, base = ports
    out = tmp_path / "out.json"
    with compat_page_served(app) as page:
        result = run_cli(
            [
                # 4 rollouts of 384 x 2 steps; each PPO update (768 samples in minibatches of 12,
                # 10 epochs: 640 gradient steps) lasts over the page's 1 s watchdog, so it trips.
                "smoke", "--envs", "2", "--timesteps", "3072", "--n-steps", "384", "--batch-size", "12",
                "--url", page + "?wsPort={port}&maxSteps={max_steps}", "--base-port", str(base),
                "--json", str(out), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines", "--no-monitor",
            ],
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(out.read_text())
    assert verdict["ok"] is True and verdict["status"] == "completed"
    assert verdict["timesteps"] >= 3072
    assert verdict["trainer_exceptions"] == 0 and verdict["worker_respawns"] == 0
    events = _events(verdict["run_dir"])
    kinds = [e["event"] for e in events]
    # 3 updates between the 4 rollouts, in 2 tabs: the watchdog fired at each
    assert verdict["page_restart_requests"] >= 6, verdict
    watchdog = [e for e in events if e["event"] == "env_saw_failure" and e["cause"] == "watchdog"]
    assert len(watchdog) >= 4, kinds
    assert {e["tab"] for e in watchdog} == {0, 1}
    # each drop was handled by the page reconnecting by itself: recovered, never replaced
    assert sum(1 for e in events if e["event"] == "tab_recovered" and e["cause"] == "watchdog") >= len(watchdog) - 2
    assert "breaker" not in kinds and "error" not in kinds
    assert "tab_replaced" not in kinds, [e for e in events if e["event"] == "tab_replaced"]
    print(f"compat page, 2 tabs: {verdict['fps']} steps/s, {verdict['page_restart_requests']} restart_requests, "
          f"{len(watchdog)} watchdog drops, {verdict['elapsed_s']} s")


@pytest.mark.browser
def test_a_click_to_connect_page_is_driven_and_tab_1_is_recorded(
    tmp_path: Path, ports, no_leftovers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app, base = ports
    out = tmp_path / "out.json"
    can_record = video_ffmpeg()[0] is not None  # Playwright's ffmpeg, imageio-ffmpeg's or one on the PATH
    with compat_page_served(app) as page:
        result = run_cli(
            [
                "smoke", "--envs", "2", "--timesteps", "512", "--n-steps", "128",
                "--url", page,  # no URL parameters: the page waits for its button
                "--init-script", "window.COMPAT_PORT = {port}",
                "--connect-click", "text=Connect to Python",
                "--watch", "--record-video", "3",
                "--base-port", str(base), "--json", str(out), "--runs-dir", str(tmp_path / "runs"),
                "--progress", "lines", "--no-monitor",
            ],
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "there is no display here" in result.stdout
    verdict = json.loads(out.read_text())
    assert verdict["ok"] is True and verdict["timesteps"] >= 512 and verdict["trainer_exceptions"] == 0
    if not can_record:
        assert "carrying on without a video" in result.stdout
        pytest.skip("trained through the click-to-connect page, but no ffmpeg here to test --record-video "
                    "(pip install imageio-ffmpeg)")
    videos = sorted((Path(verdict["run_dir"]) / "videos").glob("*.webm"))
    assert videos and videos[0].name == "tab1-1.webm" and videos[0].stat().st_size > 1000, videos
    assert any(e["event"] == "video_saved" for e in _events(verdict["run_dir"]))


def _plain_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait(predicate, timeout: float, what: str):  # noqa: ANN001, ANN202 - a tiny test helper
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.mark.browser
def test_tabs_keeps_tabs_connected_to_a_plain_trainer_and_replaces_a_crashed_one(
    tmp_path: Path, ports, no_leftovers
) -> None:
    app, base = ports
    log = tmp_path / "plain.jsonl"
    trainer = subprocess.Popen(
        [sys.executable, str(PLAIN_SERVER), "--base-port", str(base), "--count", "2", "--log", str(log)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    tabs = None
    try:
        _wait(lambda: any(e["event"] == "listening" for e in _plain_log(log)), 30, "the plain server listens")
        tabs = start_cli(
            ["tabs", "--envs", "2", "--base-port", str(base), "--app-port", str(app), "--runs-dir", str(tmp_path / "runs")],
            cwd=tmp_path,
        )
        wait_for_line(tabs, "[Tabs] Running", timeout=90)
        _wait(lambda: {e["port"] for e in _plain_log(log) if e["event"] == "connected"} == {base, base + 1},
              60, "both tabs connect to the plain server")
        (run_dir,) = (tmp_path / "runs").iterdir()
        status = json.loads((run_dir / "status.json").read_text())
        victim = status["tabs"][0]
        assert victim["port"] == base and victim["renderer_pid"]
        os.kill(victim["renderer_pid"], signal.SIGKILL)  # tab 1's renderer crashes
        _wait(lambda: any(e["event"] == "connected" and e["port"] == base and e["connection"] == 2 for e in _plain_log(log)),
              60, "the replacement tab connects to the plain server again")

        def healed() -> dict | None:
            data = json.loads((run_dir / "status.json").read_text())
            first = data["tabs"][0]
            ok = first["restarts"] >= 1 and first["connected"] and first["renderer_pid"] != victim["renderer_pid"]
            return data if ok else None

        status = _wait(healed, 30, "status.json shows tab 1 replaced and connected")
        assert status["tabs"][1]["restarts"] == 0, "the other tab was left alone"
        assert not any(e["event"] == "connected" and e["port"] == base + 1 and e["connection"] > 1 for e in _plain_log(log))
        tabs.send_signal(signal.SIGTERM)
        out, _ = tabs.communicate(timeout=60)
        assert tabs.returncode == 0, out
        assert "Stopped; every tab and the browser are closed" in out
        events = _events(run_dir)
        assert any(e["event"] == "tab_replaced" and e["tab"] == 0 and e["cause"] == "crash" for e in events)
    finally:
        for proc in (tabs, trainer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
