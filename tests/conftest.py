"""Shared fixtures: free ports, a clean temp run folder, and a guard against leftover processes."""

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
import psutil
import pytest

from browser_pool.chromium import MARK_FLAG, TAG_FLAG
from orchestrator.ports import free_block

REPO = Path(__file__).resolve().parent.parent


def lunarfleet_processes() -> dict[int, str]:
    """Chromium processes any LunarFleet run launched (they carry the owner mark)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(arg.startswith(MARK_FLAG) for arg in cmdline):
            found[proc.info["pid"]] = " ".join(cmdline)
    return found


RAY_PROCESS_WORDS = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard", "log_monitor", "runtime_env")


def tagged_processes(tag_value: str) -> dict[int, str]:
    """Processes whose environment carries LUNARFLEET_TAG=`tag_value`: what a test's CLI started,
    however far down (Ray's GCS, raylet and workers inherit it from the driver, and the hosts'
    Chromium from them), also after their parent died and they were re-parented."""
    found = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("LUNARFLEET_TAG") == tag_value:
                found[proc.pid] = " ".join(proc.info.get("cmdline") or [])[:160]
    return found


def ray_processes(found: dict[int, str]) -> dict[int, str]:
    return {p: c for p, c in found.items() if any(w in c for w in RAY_PROCESS_WORDS)}


@pytest.fixture
def no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test if it leaves a Chromium, driver, Ray or child process behind (and ends them).

    Browsers are told apart from other runs on the machine by a per-test LUNARFLEET_TAG, which
    every process a test's CLI starts inherits (Ray's processes and the Chromium of Ray hosts too).
    """
    tag = f"{TAG_FLAG}=test-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("LUNARFLEET_TAG", tag.split("=", 1)[1])
    before_children = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + 10
    while True:
        browsers = {p: c for p, c in lunarfleet_processes().items() if tag in c.split()}
        children = [
            p for p in psutil.Process().children(recursive=True)
            if p.pid not in before_children and p.status() != psutil.STATUS_ZOMBIE
        ]
        tagged = tagged_processes(tag.split("=", 1)[1])
        if not browsers and not children and not tagged:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in list(browsers) + [p.pid for p in children] + list(tagged):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"left behind: browsers {list(browsers)}, Ray processes {ray_processes(tagged)}, other tagged processes "
                f"{list(tagged)}, child processes {[p.info if hasattr(p, 'info') else p.pid for p in children]}")


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    """(app_port, base_ws_port), away from the defaults so a user's run is never disturbed."""
    app = free_block(14200 + (os.getpid() % 500) * 10, 1)
    base = free_block(app + 1, 8)
    yield app, base


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
    )


@contextlib.contextmanager
def cli_process(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """A running `lunarfleet` whose process is killed on the way out if the test did not end it."""
    proc = start_cli(args, cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read the process's output until a line contains `needle`; returns the lines read."""
    import selectors

    lines: list[str] = []
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not sel.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen within {timeout} s; output:\n{''.join(lines)}")


def wait_until(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201 - a tiny test helper
    """Poll `predicate` until it returns something truthy (which is returned); fail after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


class OutputReader:
    """Reads a running process's output on a thread, so a long run never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float = 60) -> str:
        """Wait for the process to end and its output to be read; the whole output."""
        self._proc.wait(timeout)
        self._thread.join(10)
        return self.text()


def read_events(run_dir: Path) -> list[dict]:
    """The run's events.jsonl so far (a run still writing it may have a half-written last line)."""
    path = Path(run_dir) / "events.jsonl"
    events = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return events


def the_run_dir(runs: Path, timeout: float = 60) -> Path:
    """The run folder a command started under `runs`, once it has an events log."""

    def found() -> Path | None:
        dirs = [p for p in runs.iterdir() if (p / "events.jsonl").exists()] if runs.is_dir() else []
        return dirs[0] if dirs else None

    return wait_until(found, timeout, f"a run folder with events.jsonl under {runs}")


def assert_frozen(done: bool, info: dict, cause: str | None, last_obs: np.ndarray | None = None) -> None:
    """A frozen step (training/outages.py): a one-step truncation at the last good observation."""
    assert done and info["TimeLimit.truncated"] is True, info
    assert set(info) == {"tab_waiting", "TimeLimit.truncated", "terminal_observation"}, info
    if cause is not None:
        assert info["tab_waiting"] == cause, info
    if last_obs is not None:
        np.testing.assert_array_equal(info["terminal_observation"], last_obs)
