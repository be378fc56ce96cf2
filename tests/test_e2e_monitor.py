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

from tests.conftest import REPO, OutputReader, cli_process, read_events, run_cli, the_run_dir, wait_until

pytestmark = pytest.mark.browser
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _row(text: str, tab: int, port: int, state: str = "stepping") -> re.Match[str] | None:
    return re.search(rf"^\s*{tab}\s+{port}\s+{state}\s", text, re.M)


def _tensorboard_scalars(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for folder in (run_dir / "tensorboard").glob("*"):
        board = EventAccumulator(str(folder))
        board.Reload()
        tags |= set(board.Tags()["scalars"])
    return tags


def _every_tab_measured_while_stepping(sample: dict) -> bool:
    """The one rule the wait and the final check share (tabs recycle every few seconds here, so a
    sample with each tab stepping and measured is waited for, never hoped for)."""
    return any(t["steps_per_s"] > 0 for t in sample["tabs"]) and all(
        t["state"] == "stepping" and t["renderer_pid"] and (t["pss_mb"] or 0) > 5 and t["steps"] > 0
        for t in sample["tabs"])


TB_TAGS = {"resources/tab1_pss_mb", "resources/tab2_cpu_percent", "resources/system_mem_available_mb"}


def test_smoke_leaves_status_and_samples_per_tab_and_status_prints_them(tmp_path: Path, ports, no_leftovers) -> None:
    """A smoke run watched by the sampler (every 1 s) until all it does has happened, then Ctrl+C.

    No step budget: what the sampler and its memory guard do depends on time, not steps, so the
    run goes on until the samples, a recycle and the TensorBoard scalars are there.
    """
    app, base = ports
    out = tmp_path / "out.json"
    runs = tmp_path / "runs"
    args = [
        "smoke", "--envs", "2", "--timesteps", "100000000", "--n-steps", "256", "--max-episode-steps", "150",
        "--monitor-interval", "1", "--tab-memory-limit-mb", "5", "--json", str(out),
        "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(runs), "--progress", "lines",
    ]
    with cli_process(args, cwd=tmp_path) as proc:
        output = OutputReader(proc)
        run_dir = the_run_dir(runs)

        def all_there() -> bool:
            assert proc.poll() is None, f"the run ended early ({proc.returncode}):\n{output.text()}"
            path = run_dir / "resources.jsonl"
            samples = [json.loads(line) for line in path.read_text().splitlines()[:-1]] if path.exists() else []
            stepping = [s for s in samples if _every_tab_measured_while_stepping(s)]
            recycled = [e for e in read_events(run_dir) if e["event"] == "tab_replaced" and e["cause"] == "recycle"]
            return len(samples) >= 3 and len(stepping) >= 1 and bool(recycled) and _tensorboard_scalars(run_dir) >= TB_TAGS

        wait_until(all_there, 180, "samples while stepping, a recycle and the TensorBoard scalars")
        proc.send_signal(signal.SIGINT)
        stdout = output.finish(timeout=120)
    assert proc.returncode == 130, stdout
    verdict = json.loads(out.read_text())
    assert Path(verdict["run_dir"]) == run_dir

    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == verdict["status"] == "interrupted" and status["ok"] is verdict["ok"] is False
    assert status["timesteps"] > 0
    assert [(t["tab"], t["port"]) for t in status["tabs"]] == [(1, base), (2, base + 1)]
    for row in status["tabs"]:
        # recycling never pauses, so a tab may have been in the middle of its swap at the end
        # (frozen: its env already gives it frozen steps, the pool has not begun the new page yet)
        assert row["state"] in ("stepping", "frozen", "replacing", "connecting", "connected") and row["steps"] > 0, row
        if row["state"] == "stepping" and row["renderer_pid"]:
            # (a page that has just replaced a recycled one steps before the pool knows its renderer;
            # the samples below must show every tab measured at least once)
            assert row["pss_mb"] and row["pss_mb"] > 5, row
    assert status["trainer"]["rss_mb"] > 50 and status["browser"]["pss_mb"]
    workers = 2 if status["vec_env"] == "subproc" else 0  # inline: the envs live in the trainer
    assert len(status["workers"]) == workers and all(w["alive"] and w["rss_mb"] > 20 for w in status["workers"])

    samples = [json.loads(line) for line in (run_dir / "resources.jsonl").read_text().splitlines()]
    assert len(samples) >= 3
    assert all([t["port"] for t in s["tabs"]] == [base, base + 1] for s in samples)
    assert any(t["steps_per_s"] > 0 for s in samples for t in s["tabs"])
    assert any(_every_tab_measured_while_stepping(s) for s in samples)

    # The memory guard: 5 MB is below any page, so tabs are recycled at episode boundaries,
    # and the run goes on undisturbed: no failures counted, no breaker.
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    replaced = [e for e in events if e["event"] == "tab_replaced"]
    recycled = [e for e in replaced if e["cause"] == "recycle"]
    assert recycled and recycled == replaced, "a tab over --tab-memory-limit-mb is replaced, and only that"
    assert "over the 5 MB limit" in recycled[0]["detail"] and "replacing it at its next episode boundary" in stdout
    assert not [e for e in events if e["event"] in ("breaker", "env_saw_failure")]
    # Every restart is logged as it happens; the final status was written a moment before the verdict's
    # count was read, so a swap of each tab may have finished in between (recycling never pauses).
    shown = sum(t["restarts"] for t in status["tabs"])
    assert len(replaced) >= verdict["tab_restarts"] >= shown >= 1 and verdict["tab_restarts"] - shown <= 2

    assert "[Monitor] tab 1 (port" in stdout and "[Monitor] machine: CPU" in stdout
    assert _tensorboard_scalars(run_dir) >= TB_TAGS

    for args in (["status", str(run_dir)], ["status", "--runs-dir", str(runs)]):
        shown = run_cli(args, cwd=tmp_path, timeout=60)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "interrupted" in shown.stdout and "tab   port state" in shown.stdout
        either = "(stepping|frozen|replacing|connecting|connected)"
        assert _row(shown.stdout, 1, base, either) and _row(shown.stdout, 2, base + 1, either), shown.stdout


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
    """Under a pseudo-terminal, `train` draws the per-tab table (and SB3's bar under it).

    The run is bounded by time, not steps (--hours 0.001: it stops at its first progress report past
    3.6 s, 10 s into training), so it is sampled (every 1 s) while running however fast it steps.
    """
    app, base = ports
    master, slave = os.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "train", "--envs", "2", "--timesteps", "1000000", "--hours", "0.001", "--n-steps", "256",
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
    assert re.search(r"run \S+ · running · [\d,]+ / 1,000,000 steps", text)
    assert re.search(r"run \S+ · time_up · [\d,]+ / 1,000,000 steps", text), "the last frame is the final status"
    assert "━" in text, "SB3's progress bar is drawn too"
    assert "[Monitor]" not in text, "a terminal gets the table, not log lines"
