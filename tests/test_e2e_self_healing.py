"""The self-healing pool for real: every fault kind injected into a live training run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    OutputReader,
    cli_process,
    lunarfleet_processes,
    read_events,
    run_cli,
    the_run_dir,
    wait_for_line,
    wait_until,
)

pytestmark = pytest.mark.browser


def _chaos_run(
    tmp_path: Path, ports: tuple[int, int], spec: str, timesteps: int = 3072, n_steps: int = 512, *extra: str,
    expect_rc: int = 0,
) -> tuple[dict, list[dict], str]:
    """A smoke run with faults injected. The step deadline stays at its 10 s default, so that a
    tab waiting for a hung one would wait 10 s: far above the straggler grace, on any machine."""
    app, base = ports
    out = tmp_path / "out.json"
    result = run_cli(
        [
            "smoke", "--envs", "2", "--timesteps", str(timesteps), "--n-steps", str(n_steps), "--chaos", spec,
            "--json", str(out), "--app-port", str(app), "--base-port", str(base),
            "--runs-dir", str(tmp_path / "runs"), "--progress", "lines", *extra,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == expect_rc, result.stdout + result.stderr
    verdict = json.loads(out.read_text())
    events = [json.loads(line) for line in (Path(verdict["run_dir"]) / "events.jsonl").read_text().splitlines()]
    return verdict, events, result.stdout


def _assert_healed(verdict: dict, count: int, timesteps: int = 3072) -> None:
    assert verdict["ok"] is True
    assert verdict["timesteps"] >= timesteps
    assert verdict["trainer_exceptions"] == 0
    assert verdict["faults_planned"] == verdict["faults_injected"] == verdict["faults_recovered"] == count
    assert verdict["faults"]["missing"] == []


@pytest.mark.parametrize("kind", ["crash", "hang", "disconnect", "garbage"])
def test_a_tab_fault_costs_only_that_tab(kind: str, tmp_path: Path, ports, no_leftovers) -> None:
    verdict, events, _ = _chaos_run(tmp_path, ports, f"{kind}=1")
    _assert_healed(verdict, 1)
    chaos = next(e for e in events if e["event"] == "chaos")
    hit = chaos["tab"]
    # Only the faulted tab's env saw a failure: the other tab kept its episode and its page.
    failed_tabs = {e["tab"] for e in events if e["event"] == "env_saw_failure"}
    assert failed_tabs <= {hit}, events
    other = 1 - hit
    replaced = {e["tab"] for e in events if e["event"] == "tab_replaced"}
    assert other not in replaced
    # The other tab kept stepping during the recovery: every vec step of the faulted tab's outage
    # (its frozen steps) was a real step of the other tab, which never waited longer than the
    # straggler grace (0.5 s) plus the machine's noise, where waiting for a hang would be 10 s.
    outages = [e for e in events if e["event"] == "tab_outage" and e["tab"] == hit and e["cause"] != "slow"]
    assert outages, events
    # Each outage was said as it began too (the tab's live state "frozen"), before it ended.
    said = [i for i, e in enumerate(events) if e["event"] == "tab_frozen" and e["tab"] == hit]
    ended = [i for i, e in enumerate(events) if e["event"] == "tab_outage" and e["tab"] == hit]
    assert said and said[0] < ended[0], events
    for outage in outages:
        assert outage["frozen_steps"] >= 1
        assert outage["others_longest_wait_s"] < 5.0, outage
    assert verdict["frozen_steps"] >= sum(o["frozen_steps"] for o in outages)
    assert verdict["episodes_cut_by_failures"] >= 1  # the faulted tab's episode, truncated
    assert verdict["outages"]["count"] >= len(outages)
    recovered = next(e for e in events if e["event"] == "chaos_recovered")
    assert recovered["seconds"] < (40 if kind == "hang" else 30)  # the 10 s step deadline, then a new page


@pytest.mark.parametrize("kind", ["browser", "driver"])
def test_the_browser_or_driver_dying_relaunches_everything(kind: str, tmp_path: Path, ports, no_leftovers) -> None:
    verdict, events, _ = _chaos_run(tmp_path, ports, f"{kind}=1")
    _assert_healed(verdict, 1)
    relaunch = [e for e in events if e["event"] == "browser_restarted"]
    assert relaunch and relaunch[0]["what"] == kind


def test_faults_that_do_not_fit_in_the_timesteps_are_all_injected_in_overtime(tmp_path: Path, ports, no_leftovers) -> None:
    # 8 faults at least 64 steps apart (32 vec steps of 2 tabs) cannot all recover within 512 steps,
    # however fast or slow the machine: the run trains on past --timesteps until they have.
    verdict, events, stdout = _chaos_run(tmp_path, ports, "crash=2,disconnect=4,garbage=2", 512, 128)
    _assert_healed(verdict, 8, timesteps=512)
    assert verdict["timesteps"] > 512
    assert "training on until they are" in stdout
    (overtime,) = [e for e in events if e["event"] == "chaos_overtime"]
    assert overtime["faults_left"] >= 1 and verdict["faults"]["overtime_s"] > 0
    assert len([e for e in events if e["event"] == "chaos_recovered"]) == 8


def test_a_chaos_run_whose_faults_cannot_all_be_injected_fails_and_names_them(tmp_path: Path, ports, no_leftovers) -> None:
    # 12 faults at least 64 steps apart need more than 512 steps, and --chaos-overtime 0 allows none past them.
    verdict, events, stdout = _chaos_run(tmp_path, ports, "disconnect=12", 512, 128, "--chaos-overtime", "0", expect_rc=1)
    assert verdict["ok"] is False and verdict["trainer_exceptions"] == 0
    assert verdict["timesteps"] == 512
    assert verdict["faults_planned"] == 12 and 1 <= verdict["faults_injected"] <= 8
    missing = verdict["faults"]["missing"]
    assert len(missing) == 12 - verdict["faults_recovered"] >= 4
    not_injected = [m for m in missing if m["why"].startswith("not injected")]
    assert len(not_injected) == 12 - verdict["faults_injected"] >= 4
    assert all("overtime of 0 s ran out" in m["why"] and m["kind"] == "disconnect" for m in not_injected)
    assert "NOT OK" in stdout and stdout.count("[Chaos] ! disconnect into tab") == len(missing)
    assert "planned faults were not injected and recovered" in verdict["error"]
    assert any(e["event"] == "chaos_incomplete" for e in events)


def test_sigkill_of_a_run_leaves_no_orphans(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    args = ["train", "--envs", "2", "--timesteps", "100000", "--n-steps", "256", "--models-dir", str(tmp_path / "m"),
            "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines"]
    with cli_process(args, cwd=tmp_path) as proc:
        wait_for_line(proc, "Starting parallel training", timeout=120)
        time.sleep(2)
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        browsers = [pid for pid in lunarfleet_processes() if pid in tree]
        assert browsers, "the run should have a browser among its descendants"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    alive = tree
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"orphans 10 s after SIGKILL: {[psutil.Process(p).cmdline()[:3] for p in alive]}"


def test_tabs_are_recycled_after_k_steps_at_an_episode_boundary_without_a_failure(tmp_path: Path, ports, no_leftovers) -> None:
    """The run trains until both tabs were recycled (waited for, not hoped for within a step budget),
    then is stopped with Ctrl+C."""
    app, base = ports
    out, runs = tmp_path / "out.json", tmp_path / "runs"
    args = ["smoke", "--envs", "2", "--timesteps", "100000000", "--n-steps", "512", "--recycle-steps", "600",
            "--json", str(out), "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(runs),
            "--models-dir", str(tmp_path / "models"), "--progress", "lines", "--no-monitor"]
    with cli_process(args, cwd=tmp_path) as proc:
        output = OutputReader(proc)
        run_dir = the_run_dir(runs, timeout=120)

        def both_recycled() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended early ({proc.returncode}):\n{output.text()}")
            ev = read_events(run_dir)
            # Both ends of each recycle: the pool's swap (whose event may come after the new page has
            # already connected and stepped) and the vec env's outage (written when the tab is back).
            swapped = {e["tab"] for e in ev if e["event"] == "tab_replaced" and e.get("cause") == "recycle"}
            back = {e["tab"] for e in ev if e["event"] == "tab_outage" and e["cause"] == "recycle"}
            return swapped == back == {0, 1}

        wait_until(both_recycled, 240, "both tabs recycled")
        proc.send_signal(signal.SIGINT)
        text = output.finish(timeout=120)
    assert proc.returncode == 130, text
    verdict = json.loads(out.read_text())
    assert verdict["status"] == "interrupted" and verdict["trainer_exceptions"] == 0, verdict
    events = read_events(run_dir)
    recycled = [e for e in events if e["event"] == "tab_replaced" and e.get("cause") == "recycle"]
    assert {e["tab"] for e in recycled} == {0, 1}, "each tab passes 600 steps of its own and is recycled"
    assert verdict["tab_failures_seen"] == 0, "a planned recycle is not a failure"
    assert not [e for e in events if e["event"] in ("tab_failed", "env_saw_failure")]
    # No step lost: the envs saw no truncation by a failure, only whole episodes, and the swap
    # happened between two episodes while the other tab stepped on (frozen steps of the recycled one).
    assert verdict["episodes_cut_by_failures"] == 0 and verdict["episodes"] > 0
    recycles = [e for e in events if e["event"] == "tab_outage" and e["cause"] == "recycle"]
    assert all(e["others_longest_wait_s"] < 2.0 for e in recycles), recycles
