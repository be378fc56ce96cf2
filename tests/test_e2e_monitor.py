"""Watching a run for real: status and samples files, `status`, `doctor`, the guards, the live table."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.browser
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _row(text: str, tab: int, port: int, state: str = "stepping") -> re.Match[str] | None:
    return re.search(rf"^\s*{tab}\s+{port}\s+{state}\s", text, re.M)


def test_smoke_leaves_status_and_samples_per_tab_and_status_prints_them(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    out = tmp_path / "out.json"
    runs = tmp_path / "runs"
    result = run_cli(
        ["smoke", "--envs", "2", "--timesteps", "1024", "--n-steps", "256", "--max-episode-steps", "150",
         "--monitor-interval", "1", "--tab-memory-limit-mb", "5", "--json", str(out),
         "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(runs), "--progress", "lines"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(out.read_text())
    run_dir = Path(verdict["run_dir"])

    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["ok"] is True and status["timesteps"] >= 1024
    assert [(t["tab"], t["port"]) for t in status["tabs"]] == [(1, base), (2, base + 1)]
    for row in status["tabs"]:
        assert row["renderer_pid"] and row["pss_mb"] and row["pss_mb"] > 5 and row["steps"] > 0
    assert status["trainer"]["rss_mb"] > 50 and status["browser"]["pss_mb"]
    workers = 2 if status["vec_env"] == "subproc" else 0  # inline: the envs live in the trainer
    assert len(status["workers"]) == workers and all(w["alive"] and w["rss_mb"] > 20 for w in status["workers"])

    samples = [json.loads(line) for line in (run_dir / "resources.jsonl").read_text().splitlines()]
    assert len(samples) >= 3
    assert all([t["port"] for t in s["tabs"]] == [base, base + 1] for s in samples)
    assert any(t["steps_per_s"] > 0 for s in samples for t in s["tabs"])
    assert any(all(t["pss_mb"] for t in s["tabs"]) for s in samples)

    # The memory guard: 5 MB is below any page, so tabs are recycled at episode boundaries,
    # and the run goes on undisturbed: no failures counted, no breaker.
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    recycled = [e for e in events if e["event"] == "tab_replaced" and e["cause"] == "recycle"]
    assert recycled, "a tab over --tab-memory-limit-mb is replaced"
    assert "over the 5 MB limit" in recycled[0]["detail"] and "replacing it at its next episode boundary" in result.stdout
    assert not [e for e in events if e["event"] in ("breaker", "env_saw_failure")]
    assert sum(t["restarts"] for t in status["tabs"]) == verdict["tab_restarts"] >= len(recycled)

    assert "[Monitor] tab 1 (port" in result.stdout and "[Monitor] machine: CPU" in result.stdout

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(next((run_dir / "tensorboard").iterdir())))
    board.Reload()
    tags = board.Tags()["scalars"]
    assert {"resources/tab1_pss_mb", "resources/tab2_cpu_percent", "resources/system_mem_available_mb"} <= set(tags)

    for args in (["status", str(run_dir)], ["status", "--runs-dir", str(runs)]):
        shown = run_cli(args, cwd=tmp_path, timeout=60)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "completed" in shown.stdout and "tab   port state" in shown.stdout
        assert _row(shown.stdout, 1, base) and _row(shown.stdout, 2, base + 1), shown.stdout


def test_envs_auto_says_why_and_memory_floor_refuses_before_any_tab(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    result = run_cli(
        ["smoke", "--envs", "auto", "--memory-floor-mb", "100000000", "--app-port", str(app), "--base-port", str(base),
         "--runs-dir", str(tmp_path / "runs"), "--progress", "lines"],
        cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1
    assert "[Setup] --envs auto: 1 tab (" in result.stdout, result.stdout
    assert "memory decide" in result.stdout
    assert "needs about" in result.stdout and "Not even one tab fits" in result.stdout
    assert "Browser:" not in result.stdout, "refused before looking for a browser or opening a tab"


def test_doctor_prints_each_check_and_the_fix(tmp_path: Path, ports) -> None:
    _, base = ports
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        result = run_cli(["doctor", "--envs", "2", "--base-port", str(base)], cwd=tmp_path, timeout=120)
    out = result.stdout
    for name in ("Chromium", "Playwright", "Chromium starts", "/dev/shm", "memory", "cores", "torch"):
        assert re.search(rf"^[✓✗] {re.escape(name)}: ", out, re.M), out
    assert "✓ Chromium starts: headless Chromium starts" in out
    assert f"✗ WebSocket ports: ports taken: [{base}]" in out and "    fix: stop the program on them" in out
    assert re.search(r"the trainer uses \d+ thread\(s\) with 2 tabs", out)
    assert result.returncode == 1 and "problem(s) found" in out


def test_live_view_on_a_terminal_shows_the_per_tab_rows(tmp_path: Path, ports, no_leftovers) -> None:
    """Under a pseudo-terminal, `train` draws the per-tab table (and SB3's bar under it)."""
    app, base = ports
    master, slave = os.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "train", "--envs", "2", "--timesteps", "1024", "--n-steps", "256",
         "--monitor-interval", "1", "--no-auto-load", "--models-dir", str(tmp_path / "models"),
         "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"},
    )
    os.close(slave)
    raw = b""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the run is over
                    break
                if not chunk:
                    break
                raw += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.close(master)
    text = ANSI.sub("", raw.decode("utf-8", "replace")).replace("\r", "\n")
    assert proc.returncode == 0, text[-3000:]
    assert "tab   port state" in text
    assert _row(text, 1, base) and _row(text, 2, base + 1), text[-3000:]
    assert re.search(r"run \S+ · running · [\d,]+ / 1,024 steps", text)
    assert re.search(r"run \S+ · completed · [\d,]+ / 1,024 steps", text), "the last frame is the final status"
    assert "━" in text, "SB3's progress bar is drawn too"
    assert "[Monitor]" not in text, "a terminal gets the table, not log lines"
