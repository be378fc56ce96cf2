"""Which Chromium to run and with which flags.

Playwright's own browser where it is installed, else a system Chromium (Debian's
`/usr/bin/chromium`), else a clear message with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Without these, Chromium floods a closed network with update and sync requests. Playwright
# already adds the anti-throttling flags; never add a second --disable-features= (Chromium keeps
# only the last one, which would erase Playwright's list).
EXTRA_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
)
# Marks every Chromium we launch, so a later start can sweep what a killed run left behind
# without touching anybody else's browser.
MARK_FLAG = "--lunarfleet-owner"
# Optional second mark from the environment, so tests (or a user's scripts) can find the
# browsers of their own runs among others on a shared machine.
TAG_FLAG = "--lunarfleet-tag"


class ChromiumNotFound(RuntimeError):
    pass


@dataclass
class BrowserChoice:
    executable: str | None  # None: Playwright's own bundled build
    description: str


@dataclass
class LaunchOptions:
    executable: str | None = None
    headless: bool = True
    extra_args: list[str] = field(default_factory=list)

    def args(self, owner_pid: int) -> list[str]:
        flags = [*EXTRA_FLAGS, f"{MARK_FLAG}={owner_pid}", *self.extra_args]
        if os.environ.get("LUNARFLEET_TAG"):
            flags.append(f"{TAG_FLAG}={os.environ['LUNARFLEET_TAG']}")
        return flags


def find_chromium(explicit: str | None = None, playwright_path: str | None = None) -> BrowserChoice:
    """Pick the browser: an explicit path, then Playwright's own, then a system Chromium."""
    explicit = explicit or os.environ.get("LUNARFLEET_CHROMIUM")
    if explicit:
        if not Path(explicit).exists():
            raise ChromiumNotFound(f"the Chromium you named does not exist: {explicit}")
        return BrowserChoice(explicit, f"{explicit} (chosen with --browser or LUNARFLEET_CHROMIUM)")
    if playwright_path and Path(playwright_path).exists():
        return BrowserChoice(None, f"Playwright's Chromium ({playwright_path})")
    for name in SYSTEM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return BrowserChoice(found, f"system Chromium ({found})")
    raise ChromiumNotFound(
        "no Chromium found. Install one:\n"
        "  as root on Debian/Ubuntu:  apt-get install -y chromium\n"
        "  anywhere else:             python -m playwright install chromium\n"
        "or name one with --browser PATH (or LUNARFLEET_CHROMIUM=PATH)."
    )
