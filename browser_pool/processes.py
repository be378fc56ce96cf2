"""Chromium's processes: which renderer serves which tab, and sweeping what a killed run left.

CDP tells no process ids, so a tab's renderer is read from a short trace (the trace's
`TracingStartedInBrowser` event names the main frame's process). Every Chromium we launch
carries `--lunarfleet-owner=<pid>`, and every profile folder it uses is listed in a small
record file, so the sweep only ever touches what LunarFleet itself started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil
from playwright.async_api import Browser, Page

from browser_pool.chromium import MARK_FLAG

TRACE_CATEGORIES = ["disabled-by-default-devtools.timeline"]
RECORDS_DIR = Path(tempfile.gettempdir()) / "lunarfleet-owners"


async def renderer_pid(browser: Browser, page: Page) -> int | None:
    """The renderer process of a page's main frame (one trace at a time per browser)."""
    await browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    trace = json.loads(await browser.stop_tracing())
    for event in trace.get("traceEvents", []):
        if event.get("name") != "TracingStartedInBrowser":
            continue
        for frame in event.get("args", {}).get("data", {}).get("frames", []):
            if frame.get("isOutermostMainFrame") and frame.get("processId"):
                return int(frame["processId"])
    return None


def marked_browsers(owner_pid: int) -> list[psutil.Process]:
    """Browser main processes (not helpers) that carry our owner mark."""
    mark = f"{MARK_FLAG}={owner_pid}"
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if mark in cmdline and not any(arg.startswith("--type=") for arg in cmdline):
            found.append(proc)
    return found


def playwright_drivers(owner_pid: int) -> list[psutil.Process]:
    """The node drivers Playwright started for this Python process (one per pool it runs)."""
    drivers = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(owner_pid).children():
            with contextlib.suppress(psutil.Error):
                if "run-driver" in " ".join(child.cmdline()):
                    drivers.append(child)
    return drivers


def profile_dir(browser_proc: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        for arg in browser_proc.cmdline():
            if arg.startswith("--user-data-dir="):
                return arg.split("=", 1)[1]
    return None


def kill_tree(proc: psutil.Process) -> None:
    """SIGKILL a process, its process group when it leads one, and every descendant."""
    with contextlib.suppress(psutil.Error):
        victims = [proc, *proc.children(recursive=True)]
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.kill()
        psutil.wait_procs(victims, timeout=3)


def record_profile(owner_pid: int, folder: str) -> None:
    """Remember a profile folder of ours, so a sweep after a SIGKILL can delete it."""
    RECORDS_DIR.mkdir(parents=True, exist_ok=True)
    record = RECORDS_DIR / f"{owner_pid}.json"
    folders = set(json.loads(record.read_text())) if record.exists() else set()
    folders.add(folder)
    record.write_text(json.dumps(sorted(folders)))


def forget_profiles(owner_pid: int, folders: list[str]) -> None:
    """Delete these profile folders of ours and strike them from the record; the other pools
    of the same process (`lunarfleet.make_vec_env` twice) keep theirs."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    record = RECORDS_DIR / f"{owner_pid}.json"
    if record.exists():
        left = set(json.loads(record.read_text())) - set(folders)
        if left:
            record.write_text(json.dumps(sorted(left)))
        else:
            record.unlink(missing_ok=True)


def forget_owner(owner_pid: int) -> None:
    record = RECORDS_DIR / f"{owner_pid}.json"
    if record.exists():
        for folder in json.loads(record.read_text()):
            shutil.rmtree(folder, ignore_errors=True)
        record.unlink(missing_ok=True)


def sweep_leftovers() -> list[str]:
    """End browsers and delete profile folders of LunarFleet runs whose process is gone."""
    swept: list[str] = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        owner = next((a.split("=", 1)[1] for a in cmdline if a.startswith(f"{MARK_FLAG}=")), None)
        if owner is None or any(a.startswith("--type=") for a in cmdline):
            continue
        if int(owner) != me and not is_alive(int(owner)):
            swept.append(f"Chromium pid {proc.pid} of dead run {owner}")
            kill_tree(proc)
    if RECORDS_DIR.exists():
        for record in RECORDS_DIR.glob("*.json"):
            owner = int(record.stem)
            if owner != me and not is_alive(owner):
                swept.append(f"profile folders of dead run {owner}")
                forget_owner(owner)
    return swept


def is_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Pids still alive after the timeout."""
    end = time.monotonic() + timeout
    left = [p for p in pids if is_alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = [p for p in left if is_alive(p)]
    return left
