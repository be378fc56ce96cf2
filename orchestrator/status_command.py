"""`lunarfleet status [RUN_DIR]`: the per-tab table of a running or finished run.

Reads the run's status.json (rewritten by the resource sampler every few seconds, and a last
time when the run ends), so it works from another terminal, over ssh, or after the fact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from orchestrator.live_view import render
from orchestrator.status_file import STATUS_FILE


def newest_run(runs_dir: Path) -> Path | None:
    """The run folder whose status.json (or, failing that, the folder itself) changed last."""
    if not runs_dir.is_dir():
        return None
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    with_status = [p for p in folders if (p / STATUS_FILE).exists()]
    pick = with_status or folders
    return max(pick, key=lambda p: (p / STATUS_FILE).stat().st_mtime if (p / STATUS_FILE).exists() else p.stat().st_mtime, default=None)


def run_folder(run_dir: Path | None, runs_dir: Path) -> Path | None:
    """The folder a command was pointed at: the named one (a file in it names it too), else the newest."""
    if run_dir is None:
        return newest_run(runs_dir)
    return run_dir.parent if run_dir.is_file() else run_dir


def read_status(path: Path) -> dict[str, Any]:
    for attempt in range(3):  # the file is replaced atomically; a retry covers odd filesystems
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def show_status(
    run_dir: Path | None, runs_dir: Path = Path("runs"), as_json: bool = False, say: Callable[[str], None] = print
) -> int:
    run_dir = run_folder(run_dir, runs_dir)
    if run_dir is None:
        say(f"no runs under {runs_dir}/: start one with 'lunarfleet train', or name a run folder")
        return 1
    path = run_dir / STATUS_FILE
    if not path.exists():
        say(
            f"{run_dir} has no {STATUS_FILE}: the run was started with --no-monitor, has not taken its first sample "
            "yet, or this is not a run folder"
        )
        summary = run_dir / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            say(f"summary: {s.get('status')}, {s.get('timesteps', 0):,} steps, {s.get('fps', 0):,.0f} steps/s, "
                f"{s.get('tab_restarts', 0)} tab restarts")
        return 1
    status = read_status(path)
    if status.get("state") == "running":
        pid = status.get("pid")
        if pid and not _alive(pid):
            status["state"] = "running, but its process is gone (killed?): this is its last status"
        elif time.time() - (status.get("updated") or status.get("time") or 0) > 3 * status.get("interval_s", 5) + 10:
            status["state"] = "running, but its status has not been updated lately (busy or stuck?)"
    if as_json:
        say(json.dumps(status, indent=1))
    else:
        say(f"{path}")
        say(render(status, now=time.time()))
    return 0


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
