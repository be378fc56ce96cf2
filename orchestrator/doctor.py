"""`lunarfleet doctor`: check what a run needs, and print the fix for each problem found."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import psutil

from browser_pool.chromium import ChromiumNotFound, find_chromium
from orchestrator.ports import port_free

Check = tuple[bool, str, str]  # ok, what was found, the fix when not ok


def playwright_chromium() -> str | None:
    """Where Playwright's own Chromium would be (it may not be installed)."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            return p.chromium.executable_path
    except Exception:
        return None


def browser_line(explicit: str | None = None) -> tuple[bool, str]:
    try:
        return True, "browser: " + find_chromium(explicit, playwright_chromium()).description
    except ChromiumNotFound as exc:
        return False, f"no browser: {exc}"


def check_browser(explicit: str | None) -> Check:
    ok, line = browser_line(explicit)
    if not ok:
        return False, line, "apt-get install -y chromium (as root), or python -m playwright install chromium"
    choice = find_chromium(explicit, playwright_chromium())
    exe = choice.executable or playwright_chromium() or ""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{line}, but it does not run: {exc}", "reinstall it, or name another with --browser PATH"
    return True, f"{line}, {out}", ""


def check_starts(explicit: str | None) -> Check:
    """Launch headless and load a page, as a run would."""
    try:
        from playwright.sync_api import sync_playwright

        from browser_pool.chromium import LaunchOptions

        choice = find_chromium(explicit, playwright_chromium())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=choice.executable, args=LaunchOptions().args(os.getpid()))
            page = browser.new_page()
            page.set_content("<p id=x>ok</p>")
            text = page.inner_text("#x")
            browser.close()
        return text == "ok", "headless Chromium starts and renders a page", ""
    except Exception as exc:
        return False, f"headless Chromium does not start: {str(exc).splitlines()[0][:200]}", "run 'lunarfleet doctor' output past a maintainer; try --browser PATH"


def check_ports(base: int, count: int) -> Check:
    taken = [p for p in range(base, base + count) if not port_free(p)]
    if taken:
        return False, f"ports taken: {taken}", "stop the program on them (an old trainer?) or pass --base-port; LunarFleet picks the next free block by itself"
    return True, f"ports {base}-{base + count - 1} free", ""


def check_shm() -> Check:
    if not os.path.isdir("/dev/shm"):
        return True, "/dev/shm absent (Playwright passes --disable-dev-shm-usage)", ""
    free_mb = shutil.disk_usage("/dev/shm").free / 2**20
    ok = free_mb >= 512
    return ok, f"/dev/shm has {free_mb:,.0f} MB free", "in Docker, run with --ipc=host or --shm-size=1g"


def check_memory(envs: int) -> Check:
    from orchestrator.sizing import BASE_COST_MB, DEFAULT_MEMORY_FLOOR_MB, memory_refusal, tab_cost_mb

    avail_mb = psutil.virtual_memory().available / 2**20
    need_mb = BASE_COST_MB + tab_cost_mb() * envs
    refusal = memory_refusal(envs, avail_mb)
    found = f"{avail_mb:,.0f} MB memory available (about {need_mb:,} MB needed for {envs} tabs, plus a {DEFAULT_MEMORY_FLOOR_MB:,} MB floor)"
    return refusal is None, found, refusal or ""


def check_playwright() -> Check:
    try:
        from importlib.metadata import version

        return True, f"playwright {version('playwright')} installed", ""
    except Exception as exc:
        return False, f"playwright is not installed ({exc})", "pip install playwright (or run through nox, which installs it)"


def check_cores() -> Check:
    cores = os.cpu_count() or 1
    return cores >= 2, f"{cores} CPU cores", "with one core, use --envs 2 at most"


def check_torch(envs: int = 4) -> Check:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed", "pip install torch==2.13.0 (or run through nox, which installs it)"
    from orchestrator.sizing import trainer_threads

    cores = os.cpu_count() or 1
    return True, (
        f"torch {torch.__version__}; the trainer uses {trainer_threads(cores, envs)} thread(s) with {envs} tabs on "
        f"{cores} cores (torch's own default: {torch.get_num_threads()})"
    ), ""


def run_doctor(explicit_browser: str | None, base_port: int, envs: int, say: Callable[[str], None] = print) -> int:
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("Chromium", lambda: check_browser(explicit_browser)),
        ("Playwright", check_playwright),
        ("Chromium starts", lambda: check_starts(explicit_browser)),
        ("WebSocket ports", lambda: check_ports(base_port, envs)),
        ("/dev/shm", check_shm),
        ("memory", lambda: check_memory(envs)),
        ("cores", check_cores),
        ("torch", lambda: check_torch(envs)),
    ]
    problems = 0
    for name, check in checks:
        ok, found, fix = check()
        say(f"{'✓' if ok else '✗'} {name}: {found}")
        if not ok:
            problems += 1
            say(f"    fix: {fix}")
    say("All good." if not problems else f"{problems} problem(s) found.")
    return 1 if problems else 0
