"""Tabs on several hosts through a real local Ray cluster (`--ray local`), with real Chromium.

Each test runs the CLI, which starts its own Ray (`ray.init`, no dashboard) and shuts it down;
`no_leftovers` checks that no Ray process (GCS, raylet, workers), Chromium or child is left.
Skipped where Ray is not installed (`pip install "lunarfleet[ray]"`; the nox session has it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, start_cli, wait_until

pytest.importorskip("ray")
pytestmark = pytest.mark.browser


def _smoke(tmp_path: Path, ports: tuple[int, int], *extra: str) -> tuple[dict, list[dict], str]:
    app, base = ports
    out = tmp_path / "out.json"
    result = run_cli(
        ["smoke", "--ray", "local", "--hosts", "2", "--envs", "2", "--json", str(out), "--app-port", str(app),
         "--base-port", str(base), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines", *extra],
        cwd=tmp_path, timeout=420,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    verdict = json.loads(out.read_text())
    events = [json.loads(line) for line in (Path(verdict["run_dir"]) / "events.jsonl").read_text().splitlines()]
    return verdict, events, result.stdout


def test_smoke_on_two_hosts(tmp_path: Path, ports, no_leftovers) -> None:
    verdict, events, out = _smoke(tmp_path, ports, "--timesteps", "1024", "--n-steps", "256")
    assert verdict["ok"] is True and verdict["checkpoint_loads"] is True
    assert verdict["hosts"] == 2 and verdict["envs"] == 4
    assert verdict["host_restarts"] == 0
    assert all(steps > 0 for steps in verdict["host_steps"]), verdict["host_steps"]  # both hosts' tabs trained
    assert verdict["ray_startup_s"] > 0
    opened = {(e["host"], e["tab"]) for e in events if e["event"] == "tab_opened"}
    assert opened == {(0, 0), (0, 1), (1, 2), (1, 3)}  # each host opened its own two tabs, named as the run's
    assert "[Setup] Ray: a local Ray cluster started" in out
    # status.json (and so `lunarfleet status` and the live view) groups the tabs by host.
    status = json.loads((Path(verdict["run_dir"]) / "status.json").read_text())
    assert [row["host"] for row in status["tabs"]] == [1, 1, 2, 2] and len(status["machines"]) == 2
    shown = run_cli(["status", verdict["run_dir"]], cwd=tmp_path, timeout=120).stdout
    assert shown.index("host 1 (") < shown.index("host 2 (")


def test_a_host_killed_costs_only_its_tabs(tmp_path: Path, ports, no_leftovers) -> None:
    """`host=1` kills host 1's actor (Ray restarts it: a new browser and tabs), `crash=1` then kills
    a tab's renderer (host 1's second tab), `host_tree=1` SIGKILLs host 2's process with its browser
    and driver; each heals while training goes on."""
    verdict, events, out = _smoke(tmp_path, ports, "--timesteps", "2048", "--n-steps", "256",
                                  "--chaos", "host=1,crash=1,host_tree=1")
    assert verdict["ok"] is True, verdict["error"]
    assert verdict["trainer_exceptions"] == 0
    assert verdict["faults_planned"] == verdict["faults_injected"] == verdict["faults_recovered"] == 3
    assert verdict["faults"]["per_kind"]["host"] == {"planned": 1, "injected": 1, "recovered": 1}
    assert verdict["faults"]["per_kind"]["host_tree"] == {"planned": 1, "injected": 1, "recovered": 1}
    assert verdict["host_restarts"] == 2
    # host_tree hit the other host (hosts take turns): both failed and came back once
    assert sorted(e["host"] for e in events if e["event"] == "host_back") == [0, 1]
    failed = next(e for e in events if e["event"] == "host_failed")
    back = next(e for e in events if e["event"] == "host_back")
    assert back["host"] == failed["host"] and back["time"] >= failed["time"]
    # The other host's tabs stepped through the outage: its steps between the failure and the return.
    other = str(2 - failed["host"])
    assert back["other_hosts_steps_during"][other] > 0, back
    # Each killed host's tabs were out for its outage (frozen steps), each cut once.
    outages = [e for e in events if e["event"] == "tab_outage" and e["cause"] == "host"]
    assert sorted(o["tab"] for o in outages) == [0, 1, 2, 3]
    assert all(o["frozen_steps"] >= 1 for o in outages)
    # The restarted host opened a new browser with its tabs.
    for host in (0, 1):
        launched = [e for e in events if e["event"] == "browser_launched" and e["host"] == host]
        assert len(launched) == 2, launched
    assert "[Ray] ✓ host" in out


def test_ray_missing_is_one_clear_line(tmp_path: Path) -> None:
    """Without the extra, --ray fails with one line that says what to install, exit code 2."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ray.py").write_text("raise ImportError('No module named ray (simulated)')\n")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "smoke", "--ray", "local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{REPO}"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ['lunarfleet: --ray needs Ray, which is not installed here: pip install "lunarfleet[ray]"']


def test_help_does_not_import_ray(tmp_path: Path) -> None:
    code = "import sys; from orchestrator.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\nprint('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr


def test_tabs_on_two_hosts_keep_their_tabs_connected_to_a_plain_trainer(tmp_path: Path, ports, no_leftovers) -> None:
    """`tabs --ray local --hosts 2 --envs 1`: each host's tab connects to the trainer on its port
    (host h: the h-th block of ports), status.json groups them by host; Ctrl+C closes everything."""
    app, base = ports
    log = tmp_path / "plain.jsonl"
    trainer = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "plain_ws_server.py"), "--base-port", str(base), "--count", "2", "--log", str(log)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    tabs = None
    try:
        wait_until(lambda: any(e["event"] == "listening" for e in _lines(log)), 30, "the plain server listens")
        tabs = start_cli(["tabs", "--ray", "local", "--hosts", "2", "--envs", "1", "--base-port", str(base),
                          "--app-port", str(app), "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
        wait_until(lambda: {e["port"] for e in _lines(log) if e["event"] == "connected"} == {base, base + 1},
                   120, "each host's tab connects to the plain trainer")
        (run_dir,) = (tmp_path / "runs").iterdir()

        def grouped() -> dict | None:
            data = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
            rows = data.get("tabs", [])
            ok = [(r["host"], r["tab"], r["port"]) for r in rows] == [(1, 1, base), (2, 2, base + 1)] and all(r["connected"] for r in rows)
            return data if ok else None

        wait_until(grouped, 60, "status.json shows both hosts' tabs connected")
        tabs.send_signal(signal.SIGINT)
        out, _ = tabs.communicate(timeout=90)
        assert tabs.returncode == 0, out
        assert "Stopped; every host's tabs and browser are closed" in out
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        assert {(e["host"], e["tab"]) for e in events if e["event"] == "tab_opened"} == {(0, 0), (1, 1)}
    finally:
        for proc in (tabs, trainer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
