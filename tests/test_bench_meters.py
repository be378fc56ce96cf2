"""`lunarfleet bench`'s CPU meter puts each process in its group: this process and its Python
workers, Ray's processes (host actors, raylet, GCS, Ray's Python daemons), and the rest (the
browser and Playwright's driver). Real child processes, no Ray or Chromium needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.bench_meters import CpuMeter


@pytest.fixture
def children(tmp_path: Path) -> Iterator[dict[str, int]]:
    """A Python worker, a Ray daemon (a Python script inside a `ray` package folder), a raylet
    (a binary of that name) and a browser-like binary, each sleeping."""
    daemon = tmp_path / "ray" / "_private" / "log_monitor.py"
    daemon.parent.mkdir(parents=True)
    daemon.write_text("import time\ntime.sleep(60)\n")
    raylet = tmp_path / "raylet"
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, raylet)
    started = {
        "worker": subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
        "daemon": subprocess.Popen([sys.executable, str(daemon)]),
        "raylet": subprocess.Popen([str(raylet), "60"]),
        "browser": subprocess.Popen([sleep, "60"]),
    }
    try:
        yield {name: proc.pid for name, proc in started.items()}
    finally:
        for proc in started.values():
            proc.kill()
            proc.wait(timeout=10)


def test_each_process_in_its_group(children: dict[str, int]) -> None:
    groups = {pid: group for pid, (group, _) in CpuMeter().sample().items()}
    assert groups[os.getpid()] == "python"
    assert groups[children["worker"]] == "python"
    assert groups[children["daemon"]] == "ray"
    assert groups[children["raylet"]] == "ray"
    assert groups[children["browser"]] == "browser"


def test_delta_sums_by_group() -> None:
    before = {1: ("python", 1.0), 2: ("ray", 2.0)}
    after = {1: ("python", 1.5), 2: ("ray", 2.25), 3: ("browser", 0.5)}  # 3 started in between
    assert CpuMeter.delta(before, after) == {"python": 0.5, "browser": 0.5, "ray": 0.25, "browser:browser": 0.5}
