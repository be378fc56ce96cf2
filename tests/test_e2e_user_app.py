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
from stable_baselines3 import PPO

from orchestrator.app_server import AppServer
from orchestrator.run_setup import video_ffmpeg
from tests.conftest import (
    REPO,
    OutputReader,
    assert_frozen,
    cli_process,
    read_events,
    run_cli,
    start_cli,
    the_run_dir,
    wait_for_line,
    wait_until,
)
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
    env = TabEnv(free_port(), PageSettings(), LinkDeadlines(step_s=30.0, connect_s=30.0))  # no step is slow here
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
    """The other tabs must not wait while this page reconnects (their own watchdogs would fire).

    The straggler grace is 30 s, so any wait for it would show: every step here must take far less.
    """
    ports = [free_port(), free_port()]
    venv = InlineVecEnv(ports, PageSettings(), LinkDeadlines(step_s=30.0, connect_s=30.0), straggler_s=30.0)
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
        assert time.monotonic() - began < 10, "a known failure needs no straggler grace"
        assert not dones[1] and rewards[0] == 0.0
        assert_frozen(dones[0], infos[0], "watchdog", last[0])
        np.testing.assert_array_equal(obs[0], last[0])
        pages[0].stop()
        for _ in range(3):
            began = time.monotonic()
            obs, _, dones, infos = venv.step(actions)
            assert not dones[1] and time.monotonic() - began < 10, "tab 2 must not wait for tab 1"
            assert_frozen(dones[0], infos[0], "watchdog", last[0])
            assert "tab_waiting" not in infos[1]
            np.testing.assert_array_equal(obs[0], last[0])
        pages[0] = PageThread(FakePage(ports[0], seed=3)).start()
        calls = 3 + 1 + 3
        deadline = time.monotonic() + 30
        while True:  # frozen steps until the new page's first observation is there
            _, _, dones, infos = venv.step(actions)
            calls += 1
            if "tab_failure" in infos[0]:
                break
            assert_frozen(dones[0], infos[0], "watchdog", last[0])
            assert time.monotonic() < deadline, "the page that came back never got its episode"
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
# How long the trainer is made silent (SIGSTOP) to trip the compat page's watchdog: it sends its
# restart_request after 1 s without an action (checked every 0.1 s), closes its socket 2 s later and
# reconnects 1 s after that. At 2.5 s the watchdog has had 1.4 s to spare, and the trainer has 1.6 s
# to step again (and read the restart_request) before the page is back.
SILENT_S = 2.5
SILENCES = 3
# The page's own drops: seen at the close ("watchdog": its restart_request came just before), or only
# once the page is back ("page_reconnected": the trainer was busy meanwhile, at start-up say).
PAGE_DROPS = ("watchdog", "page_reconnected")


def _checkpoint_steps(events: list[dict]) -> int:
    return max((e["steps"] for e in events if e["event"] == "checkpoint"), default=0)


@pytest.mark.browser
def test_ppo_trains_through_the_compat_page_and_its_watchdog_costs_only_episodes(
    tmp_path: Path, ports, no_leftovers
) -> None:
    """The trainer falls silent for longer than the page's watchdog, three times, on purpose.

    Only the trainer process is stopped (SIGSTOP); Chromium, its child, runs on, so the page's
    watchdog fires whatever the speed of the machine. Each time both pages must come back by
    themselves and PPO must train on; then the run is stopped with Ctrl+C.
    """
    app, base = ports
    out, runs = tmp_path / "out.json", tmp_path / "runs"
    rollout = 128 * 2  # --n-steps x --envs; a checkpoint at every rollout's end (--save-freq)
    args = [
        # one minibatch per epoch: an update is 10 gradient steps, so the trainer is soon back to stepping
        "smoke", "--envs", "2", "--timesteps", "100000000", "--n-steps", "128", "--batch-size", str(rollout),
        "--save-freq", str(rollout),
        "--vec-env", "inline",  # every env socket lives in the trainer process: stopping it silences them all
        "--base-port", str(base), "--json", str(out), "--runs-dir", str(runs), "--models-dir", str(tmp_path / "models"),
        "--progress", "lines", "--no-monitor",
    ]
    with compat_page_served(app) as page, cli_process([*args, "--url", page + "?wsPort={port}&maxSteps={max_steps}"], cwd=tmp_path) as proc:
        output = OutputReader(proc)

        def events_once(check, timeout: float, what: str):  # noqa: ANN001, ANN202
            """Wait until `check` holds for the run's events so far (the run must still be going)."""

            def probe():  # noqa: ANN202
                if proc.poll() is not None:
                    raise AssertionError(f"the run ended early, exit code {proc.returncode}")
                return check(read_events(run_dir))

            try:
                return wait_until(probe, timeout, what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; output:\n{output.text()}") from None

        run_dir = the_run_dir(runs, timeout=120)
        # PPO has updated at least once: the second rollout's checkpoint is written after the first update.
        events_once(lambda ev: _checkpoint_steps(ev) >= 2 * rollout, 180, "two rollouts")
        for silence in range(SILENCES):
            events_once(lambda ev: _unrecovered(ev) == 0, 90, "every tab stepping before the silence")
            seen = len(read_events(run_dir))
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                time.sleep(SILENT_S)
            finally:
                os.kill(proc.pid, signal.SIGCONT)

            def both_back(ev: list[dict], seen: int = seen) -> bool:
                dropped = {e["tab"] for e in ev[seen:] if e["event"] == "env_saw_failure" and e["cause"] in PAGE_DROPS}
                return dropped == {0, 1} and _unrecovered(ev) == 0

            events_once(both_back, 90, f"silence {silence + 1}: both pages' watchdogs fired and they came back")
        # PPO trains on after the last drop: two more rollout ends, so at least one more update.
        steps = _checkpoint_steps(read_events(run_dir))
        events_once(lambda ev: _checkpoint_steps(ev) >= steps + 2 * rollout, 180, "two more rollouts")
        # (the events up to here: sockets closing at Ctrl+C are no failure of the pages)
        before_stop = events_once(lambda ev: _unrecovered(ev) == 0 and len(ev), 90, "every watchdog drop recovered")
        proc.send_signal(signal.SIGINT)
        text = output.finish(timeout=120)
    assert proc.returncode == 130, text  # stopped with Ctrl+C: interrupted, its checkpoint saved
    verdict = json.loads(out.read_text())
    assert verdict["status"] == "interrupted" and verdict["checkpoint_loads"] is True, verdict
    assert verdict["timesteps"] >= steps + 2 * rollout
    assert PPO.load(verdict["checkpoint"], device="cpu").num_timesteps == verdict["timesteps"]
    assert verdict["trainer_exceptions"] == 0 and verdict["worker_respawns"] == 0
    events = _events(verdict["run_dir"])
    kinds = [e["event"] for e in events]
    # Each silence tripped the watchdog of both pages (so may a slow start-up or PPO update). Nearly
    # always the trainer was back before the page, so it read the page's restart_request first.
    drops = [e for e in events[:before_stop] if e["event"] == "env_saw_failure"]
    assert all(e["cause"] in PAGE_DROPS for e in drops), drops  # no hang, crash, garbage, closed socket
    assert len(drops) >= 2 * SILENCES and {e["tab"] for e in drops} == {0, 1}, drops
    watchdog = [e for e in drops if e["cause"] == "watchdog"]
    assert verdict["page_restart_requests"] >= len(watchdog) >= SILENCES, (verdict, drops)
    # each drop was handled by the page reconnecting by itself: recovered, never replaced
    recovered = [e for e in events[:before_stop] if e["event"] == "tab_recovered"]
    assert _unrecovered(events[:before_stop]) == 0 and len(recovered) >= 2 * SILENCES, recovered
    assert {e["cause"] for e in recovered} <= set(PAGE_DROPS), recovered
    assert "breaker" not in kinds and "error" not in kinds
    assert "tab_replaced" not in kinds, [e for e in events if e["event"] == "tab_replaced"]
    print(f"compat page, 2 tabs: {verdict['fps']} steps/s, {verdict['page_restart_requests']} restart_requests, "
          f"{len(watchdog)} of {len(drops)} drops seen with their restart_request, {verdict['elapsed_s']} s")


def _unrecovered(events: list[dict]) -> int:
    """Tab failures not yet followed by that tab stepping again."""
    down: set[int] = set()
    for e in events:
        if e["event"] == "env_saw_failure":
            down.add(e["tab"])
        elif e["event"] == "tab_recovered":
            down.discard(e["tab"])
    return len(down)


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
        wait_until(lambda: any(e["event"] == "listening" for e in _plain_log(log)), 30, "the plain server listens")
        tabs = start_cli(
            ["tabs", "--envs", "2", "--base-port", str(base), "--app-port", str(app), "--runs-dir", str(tmp_path / "runs")],
            cwd=tmp_path,
        )
        wait_for_line(tabs, "[Tabs] Running", timeout=90)
        wait_until(lambda: {e["port"] for e in _plain_log(log) if e["event"] == "connected"} == {base, base + 1},
              60, "both tabs connect to the plain server")
        (run_dir,) = (tmp_path / "runs").iterdir()
        status = json.loads((run_dir / "status.json").read_text())
        victim = status["tabs"][0]
        assert victim["port"] == base and victim["renderer_pid"]
        os.kill(victim["renderer_pid"], signal.SIGKILL)  # tab 1's renderer crashes
        wait_until(lambda: any(e["event"] == "connected" and e["port"] == base and e["connection"] == 2 for e in _plain_log(log)),
              60, "the replacement tab connects to the plain server again")

        def healed() -> dict | None:
            data = json.loads((run_dir / "status.json").read_text())
            first = data["tabs"][0]
            ok = first["restarts"] >= 1 and first["connected"] and first["renderer_pid"] != victim["renderer_pid"]
            return data if ok else None

        status = wait_until(healed, 30, "status.json shows tab 1 replaced and connected")
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
