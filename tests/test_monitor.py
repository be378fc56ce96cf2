"""The resource sampler, its guards, the status file and the table: alone, and against real tabs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from browser_pool.tab_record import EnvReport, TabRecord, tab_state
from orchestrator.live_view import LiveView, render
from orchestrator.monitor_settings import MonitorSettings
from orchestrator.process_sampling import ProcessMeter, chromium_tree
from orchestrator.resource_sampler import ResourceSampler
from orchestrator.samples_log import SAMPLES_FILE
from orchestrator.sizing import auto_envs, memory_refusal, packed_layout, trainer_threads
from orchestrator.status_command import show_status
from orchestrator.status_file import STATUS_FILE
from orchestrator.tab_table import Sources, fleet_sources, pool_sources
from orchestrator.tensorboard_scalars import tensorboard_scalars
from tests.conftest import wait_until


# ---- without a browser -----------------------------------------------------------------------
def test_tab_state_words() -> None:
    health = EnvReport(connected=True, stepping_at=1.0, failed_at=None)
    assert tab_state("loading", 0, None) == "connecting"
    assert tab_state("loaded", 0, EnvReport(connected=False, stepping_at=0.0, failed_at=None)) == "connecting"
    assert tab_state("loaded", 0, EnvReport(connected=True, stepping_at=0.0, failed_at=None)) == "connected"
    assert tab_state("loaded", 0, health) == "stepping"
    assert tab_state("restarting", 1, health) == "replacing"
    assert tab_state("loading", 2, health) == "replacing"
    assert tab_state("loaded", 1, EnvReport(connected=False, stepping_at=1.0, failed_at=5.0)) == "replacing"
    assert tab_state("failed", 3, health) == "failed"
    frozen = EnvReport(connected=True, stepping_at=1.0, failed_at=None, frozen_since=2.0)
    assert tab_state("loaded", 0, frozen) == "frozen", "its env gives it frozen steps"
    assert tab_state("restarting", 1, frozen) == "replacing", "being replaced says more"



def test_a_tab_reads_frozen_from_its_outage_reports_until_the_outage_ends(tmp_path: Path) -> None:
    """The vec env's "outage_began" and "outage" reports (`on_outage`, in the trainer process) set and
    clear a tab's state word "frozen"; the outage is counted once, as it ends."""
    from browser_pool.chromium import LaunchOptions
    from browser_pool.pool import PoolSettings
    from orchestrator.events import EventLog
    from orchestrator.fleet import Fleet
    from training.health import HealthReporter

    events = EventLog(tmp_path / "events.jsonl", echo=False)
    fleet = Fleet(["about:blank"] * 2, [9000, 9001], LaunchOptions(), PoolSettings(), events, "tok")
    reporter = HealthReporter(fleet.health_port, "tok")
    try:
        for tab in fleet.pool.tabs:
            tab.state = "loaded"  # as the pool says once its page is up (no browser in this test)
            reporter("stepping", {"port": tab.port})
        wait_until(lambda: [t.status() for t in fleet.pool.tabs] == ["stepping", "stepping"], 10, "both tabs stepping")
        fleet.record_outage("outage_began", {"port": 9001, "cause": "slow"})
        assert [t.status() for t in fleet.pool.tabs] == ["stepping", "frozen"]
        assert fleet.outages == [], "an outage is counted as it ends"
        fleet.record_outage("outage", {"port": 9001, "cause": "hang", "seconds": 5.0, "frozen_steps": 9,
                                       "others_longest_wait_s": 0.5})
        assert [t.status() for t in fleet.pool.tabs] == ["stepping", "stepping"]
        assert [(o["tab"], o["cause"], o["frozen_steps"]) for o in fleet.outages] == [(1, "hang", 9)]
        events.close()
        logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [(e["event"], e["tab"], e["cause"]) for e in logged] == [("tab_frozen", 1, "slow"), ("tab_outage", 1, "hang")]
    finally:
        reporter.close()
        fleet.stop()
        events.close()

def test_process_meter_survives_processes_that_vanish_or_turn_zombie() -> None:
    meter = ProcessMeter()
    child = subprocess.Popen(["sleep", "30"])
    try:
        first = meter.measure(child.pid, full=True)
        assert first.alive and first.rss_mb > 0 and first.pss_mb is not None and first.uss_mb is not None
        os.kill(child.pid, signal.SIGKILL)
        # dead but not reaped yet: a zombie (on a busy machine the kill may take a moment)
        wait_until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, "the killed child is a zombie")
        assert meter.measure(child.pid, full=True).alive is False
    finally:
        child.kill()
        child.wait()
    assert meter.measure(child.pid).alive is False  # gone altogether
    assert meter.measure(None).alive is False


def _fake_sources(renderer_pids: list[int | None]) -> Sources:
    """Stepping tabs (a loaded page whose env reported a reset), 100 steps further at each look."""
    steps = {"n": 0}

    def tabs() -> list[TabRecord]:
        steps["n"] += 100
        return [
            TabRecord(i, "", 20000 + i, renderer_pid=pid, state="loaded", restarts=i,
                      env=EnvReport(connected=True, stepping_at=1.0, steps=steps["n"]))
            for i, pid in enumerate(renderer_pids)
        ]

    return Sources(tabs, lambda: None, lambda: None, lambda: [os.getpid()])


def test_sampler_writes_samples_and_status_and_its_guards_act_once(tmp_path: Path) -> None:
    me = os.getpid()
    recycled: list[tuple[int, str]] = []
    warnings: list[str] = []
    run_dir = tmp_path / "runs" / "r1"
    sampler = ResourceSampler(
        _fake_sources([me, None]),
        MonitorSettings(interval_s=0.1, tab_memory_limit_mb=1, memory_floor_mb=10**9),
        run_dir,
        {"run_id": "r1", "target_timesteps": 1000},
        recycle=lambda i, why: recycled.append((i, why)),
        warn=warnings.append,
    )
    seen: list[dict] = []
    sampler.listeners.append(lambda sample, status: seen.append(status))
    sampler.state = "running"
    sampler.note_steps(500)
    first = sampler.sample()
    sampler.sample()
    sampler.stop(final_state="completed", extra={"ok": True})

    assert [row.tab for row in first.tabs] == [1, 2]
    assert first.tabs[0].renderer_pid == me and first.tabs[0].pss_mb and first.tabs[0].pss_mb > 1
    assert first.tabs[1].pss_mb is None  # no renderer known: nothing measured, nothing guarded
    assert first.trainer.alive and first.workers[0].alive
    assert recycled == [(0, recycled[0][1])] and "over the 1 MB limit" in recycled[0][1], "once per renderer"
    assert len(warnings) == 1 and "below the floor" in warnings[0], "low memory is warned about once"

    lines = (run_dir / SAMPLES_FILE).read_text().splitlines()
    assert len(lines) == 3
    assert all(len(json.loads(line)["tabs"]) == 2 for line in lines)
    status = json.loads((run_dir / STATUS_FILE).read_text())
    assert status["state"] == "completed" and status["ok"] is True and status["run_id"] == "r1"
    assert [t["port"] for t in status["tabs"]] == [20000, 20001]
    assert status["tabs"][0]["steps_per_s"] > 0
    assert seen[0]["state"] == "running" and seen[-1]["state"] == "completed"
    scalars = tensorboard_scalars(first)
    assert scalars["resources/tab1_pss_mb"] > 1 and "resources/system_mem_available_mb" in scalars


def test_status_command_prints_the_table_of_the_newest_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for name in ("old", "new"):
        sampler = ResourceSampler(_fake_sources([os.getpid()] * 3), MonitorSettings(), runs / name, {"run_id": name})
        sampler.stop(final_state="completed")
        time.sleep(0.05)
    assert show_status(None, runs) == 0
    out = capsys.readouterr().out
    assert "run new · completed" in out
    for tab in (1, 2, 3):
        assert f"   {tab}  {20000 + tab - 1} stepping" in out
    assert show_status(runs / "old") == 0 and "run old" in capsys.readouterr().out
    assert show_status(None, tmp_path / "nothing") == 1
    (runs / "bare").mkdir()
    assert show_status(runs / "bare") == 1 and "no status.json" in capsys.readouterr().out


def test_status_of_a_run_whose_process_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sampler = ResourceSampler(_fake_sources([None]), MonitorSettings(), tmp_path / "r", {"run_id": "r"})
    sampler.state = "running"
    sampler.sample()
    sampler.stop()
    status = json.loads((tmp_path / "r" / STATUS_FILE).read_text())
    dead = subprocess.Popen(["true"])
    dead.wait()
    status["pid"] = dead.pid
    (tmp_path / "r" / STATUS_FILE).write_text(json.dumps(status))
    assert show_status(tmp_path / "r") == 0
    assert "its process is gone" in capsys.readouterr().out


def test_live_view_prints_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    said: list[str] = []
    view = LiveView("lines", said.append, lines_every_s=3600)
    sampler = ResourceSampler(_fake_sources([os.getpid(), os.getpid()]), MonitorSettings(), None, {"run_id": "x"})
    sampler.listeners.append(view)
    sampler.state = "running"
    sampler.sample()
    sampler.sample()  # within lines_every_s: nothing new
    assert len(said) == 3 and said[0].startswith("[Monitor] machine: CPU")
    assert said[1].startswith("[Monitor] tab 1 (port 20000) stepping:") and "PSS" in said[1]
    sampler.stop(final_state="completed")  # the final state is always shown
    assert len(said) == 6
    assert "   2  20001 stepping" in render(sampler.status(sampler.latest, "completed"))  # type: ignore[arg-type]


def test_envs_auto_packs_the_envs_into_one_tab_only_on_a_small_machine() -> None:
    tabs, sims, why = packed_layout(4, cores=2) or (0, 0, "")
    assert (tabs, sims) == (1, 4) and "the same 4 PPO envs with one message a step" in why and "--envs 4" in why
    assert packed_layout(3, cores=1)[:2] == (1, 3)  # type: ignore[index]
    assert packed_layout(4, cores=4) is None  # more cores: one simulation a tab
    assert packed_layout(1, cores=1) is None  # one env: nothing to pack


def test_envs_auto_and_the_memory_floor_say_why() -> None:
    n, why = auto_envs(cores=2, available_mb=20_000, floor_mb=1000)
    assert n == 4 and "cores decide" in why
    n, why = auto_envs(cores=16, available_mb=2_400, floor_mb=1000, vec_env="subproc")
    assert n == 2 and "memory decide" in why and "2,400 MB available" in why
    assert auto_envs(cores=16, available_mb=2_400, floor_mb=1000, vec_env="inline")[0] == 5  # no worker per tab
    assert auto_envs(cores=1, available_mb=100, floor_mb=1000)[0] == 1  # never 0
    assert memory_refusal(4, available_mb=20_000, floor_mb=1000) is None
    message = memory_refusal(40, available_mb=4_000, floor_mb=1000, vec_env="subproc")
    assert message and "--envs 40 needs about 10,900 MB" in message and "Use --envs 8 or fewer" in message
    assert memory_refusal(40, available_mb=4_000, floor_mb=1000, vec_env="inline")  # 21 fit
    assert memory_refusal(21, available_mb=4_000, floor_mb=1000, vec_env="inline") is None
    assert memory_refusal(40, available_mb=10, floor_mb=0) is None  # floor 0: the check is off


def test_torch_threads_leave_the_cores_to_the_tabs() -> None:
    assert trainer_threads(cores=2, envs=1) == 1
    assert trainer_threads(cores=2, envs=8) == 1
    assert trainer_threads(cores=8, envs=4) == 4
    assert trainer_threads(cores=6, envs=4) == 2
    assert trainer_threads(cores=64, envs=2) == 4


# ---- against real tabs -----------------------------------------------------------------------
def _step_until_failure(env, tries: int = 400) -> dict:  # type: ignore[no-untyped-def]
    action = np.zeros(3, dtype=np.float32)
    for _ in range(tries):
        _, _, terminated, truncated, info = env.step(action)
        if "tab_failure" in info:
            return info
        if terminated or truncated:
            env.reset()
    raise AssertionError("the env never saw its tab go")


@pytest.mark.browser
def test_sampler_maps_each_renderer_to_its_tab_and_killing_it_crashes_only_that_tab(ports, no_leftovers) -> None:
    from tests.real_tabs import real_tabs

    app, base = ports
    with real_tabs(app, [base, base + 1, base + 2], [1, 2, 3]) as (envs, pool, loop):
        for env in envs:
            env.reset()
        sampler = ResourceSampler(pool_sources(pool), MonitorSettings())
        sample = sampler.sample()
        pids = [row.renderer_pid for row in sample.tabs]
        assert pids == [t.renderer_pid for t in pool.tabs] and len(set(pids)) == 3 and None not in pids
        tree = set(chromium_tree(pool.browser_pid))
        assert set(pids) <= tree, "every mapped renderer belongs to our browser"
        for row in sample.tabs:
            assert row.pss_mb and row.uss_mb and row.pss_mb >= row.uss_mb > 1
            assert "--type=renderer" in " ".join(psutil.Process(row.renderer_pid).cmdline())
        assert sample.browser.alive and sample.browser.pss_mb and sample.helpers.count >= 1

        victim = 1
        os.kill(pids[victim], signal.SIGKILL)
        info = _step_until_failure(envs[victim])
        assert info["tab_failure"]
        for other in (0, 2):  # the other tabs step on, undisturbed
            for _ in range(20):
                _, _, _, _, other_info = envs[other].step(np.zeros(3, dtype=np.float32))
                assert "tab_failure" not in other_info
        deadline = time.monotonic() + 30
        while pool.tabs[victim].restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [t.restarts for t in pool.tabs] == [0, 1, 0]
        envs[victim].reset()
        after = sampler.sample()
        assert after.tabs[victim].renderer_pid not in (None, pids[victim]) and after.tabs[victim].pss_mb
        assert [after.tabs[i].renderer_pid for i in (0, 2)] == [pids[0], pids[2]]


@contextlib.contextmanager
def _real_fleet(app_port: int, ports: list[int], events_path: Path) -> Iterator[tuple[object, list]]:
    """A Fleet (pool + health channel) and TabEnvs that report to it, on the embedded page."""
    from browser_pool.chromium import LaunchOptions, find_chromium
    from browser_pool.pool import PoolSettings
    from orchestrator.app_server import AppServer
    from orchestrator.doctor import playwright_chromium
    from orchestrator.events import EventLog
    from orchestrator.fleet import Fleet
    from training.tab_env import TabEnv
    from training.tab_link import PageSettings

    token = "monitor-test"
    app = AppServer(app_port)
    events = EventLog(events_path, echo=False)
    urls = [f"http://localhost:{app_port}/?wsPort={p}&maxSteps=200&seed={i}" for i, p in enumerate(ports)]
    choice = find_chromium(None, playwright_chromium())
    fleet = Fleet(urls, ports, LaunchOptions(executable=choice.executable), PoolSettings(), events, token)
    envs: list = []
    try:
        envs = [
            TabEnv(p, PageSettings(env_id=i, env_count=len(ports), max_episode_steps=200),
                   health_port=fleet.health_port, run_token=token)
            for i, p in enumerate(ports)
        ]
        fleet.start()
        fleet.wait_connected(120)
        deadline = time.monotonic() + 30  # renderer pids are traced just after each page loads
        while None in [t.renderer_pid for t in fleet.pool.tabs] and time.monotonic() < deadline:
            time.sleep(0.05)
        yield fleet, envs
    finally:
        fleet.stop()
        for env in envs:
            env.close()
        app.close()
        events.close()


@pytest.mark.browser
def test_memory_guard_replaces_the_tab_over_its_limit_at_its_next_reset(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    events_path = tmp_path / "events.jsonl"
    with _real_fleet(app, [base, base + 1], events_path) as (fleet, envs):
        for env in envs:
            env.reset()
        pool = fleet.pool  # type: ignore[attr-defined]
        before = [t.renderer_pid for t in pool.tabs]
        # Tab 1 grows by ~240 MB; tab 2 stays a fresh page of a few tens of MB.
        fleet.run(pool.evaluate(0, "window.__hog = new Array(3e7).fill(1.5); window.__hog.length"))  # type: ignore[attr-defined]
        sampler = ResourceSampler(
            fleet_sources(fleet), MonitorSettings(tab_memory_limit_mb=150), tmp_path,
            recycle=fleet.request_recycle,  # type: ignore[attr-defined]
        )
        sample = sampler.sample()
        assert sample.tabs[0].pss_mb > 150 > sample.tabs[1].pss_mb  # type: ignore[operator]
        wait_until(lambda: pool.tabs[0].recycle_reason, 10, "the pool notes tab 1's recycle")  # on its own thread
        assert pool.tabs[1].recycle_reason is None
        assert pool.tabs[0].restarts == 0, "nothing happens before the tab's next episode boundary"

        envs[0].reset()  # its env reports the reset; the fleet asks it to recycle at its next boundary
        action = np.zeros(3, dtype=np.float32)
        for _ in range(400):  # the episode runs to its end on the old page
            _, _, terminated, truncated, info = envs[0].step(action)
            assert "tab_failure" not in info
            if terminated or truncated:
                break
        assert terminated or truncated
        envs[0].reset()  # the boundary: the fleet swaps the page, the env waits for the new one
        for _ in range(10):
            _, _, _, _, info = envs[0].step(action)
            assert "tab_failure" not in info
        deadline = time.monotonic() + 30  # the new page may connect before its renderer is traced
        while pool.tabs[0].restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = sampler.sample()

        assert [t.restarts for t in pool.tabs] == [1, 0]
        assert pool.tabs[0].renderer_pid != before[0] and pool.tabs[1].renderer_pid == before[1]
        assert after.tabs[0].pss_mb < 150 and after.tabs[0].state == "stepping"  # type: ignore[operator]
        assert fleet.fatal is None  # type: ignore[attr-defined]
        assert fleet.health[base].failures == 0, "a recycle is not a failure of the tab"  # type: ignore[attr-defined]
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    replaced = [e for e in events if e["event"] == "tab_replaced"]
    assert len(replaced) == 1 and replaced[0]["tab"] == 0 and replaced[0]["cause"] == "recycle"
    assert "over the 150 MB limit" in replaced[0]["detail"]
    assert not [e for e in events if e["event"] == "env_saw_failure"]


def test_the_circuit_breaker_names_the_tab_and_its_causes_after_too_many_failures() -> None:
    from browser_pool.chromium import LaunchOptions
    from browser_pool.pool import PoolSettings, TabPool

    pool = TabPool(["http://x/1", "http://x/2"], [9001, 9002], LaunchOptions(), PoolSettings(breaker_failures=3))
    assert not any(pool.record_failure(1, "hang") for _ in range(3))
    assert pool.record_failure(1, "garbage") is True
    assert pool.fatal is not None and "tab 2 (port 9002) failed 4 times" in pool.fatal
    assert "hang, hang, hang, garbage" in pool.fatal and pool.tabs[0].failures == type(pool.tabs[0].failures)()
