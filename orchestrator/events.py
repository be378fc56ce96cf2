"""The run's event log: every tab failure, replacement, checkpoint and error, as JSON lines.

The same events are said on the console in words, so what a person reads and what the log
holds never differ.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from training.curriculum_plan import describe_phase


def say(text: str, stream: TextIO | None = None) -> None:
    print(text, file=stream or sys.stdout, flush=True)


class EventLog:
    def __init__(self, path: Path | None, echo: bool = True) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, fields: dict[str, Any] | None = None, echo: bool = True) -> None:
        fields = fields or {}
        record = {"time": round(time.time(), 3), "event": kind, **fields}
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self._file:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()
        if self.echo and echo:
            text = describe(kind, {k: v for k, v in fields.items() if k != "traceback"})
            if text:
                say(text)

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


def describe(kind: str, f: dict[str, Any]) -> str | None:
    """Console wording of an event; None for events that only go to the log."""
    tab = f"tab {f['tab'] + 1}" if "tab" in f else f"port {f.get('port')}"
    text = _describe(kind, f, tab)
    if text and isinstance(f.get("host"), int) and kind not in NAME_THE_HOST:
        return f"[Host {f['host'] + 1}] {text}"  # a host's pool event, with --ray
    return text


NAME_THE_HOST = ("chaos", "host_failed", "host_back", "warning")  # their words name the host already


def _describe(kind: str, f: dict[str, Any], tab: str) -> str | None:
    if kind == "tab_failed":
        return f"[Pool] ✗ {tab} (port {f.get('port')}) failed: {f.get('cause')} {f.get('detail', '')}".rstrip()
    if kind == "tab_replaced":
        return f"[Pool] ↻ {tab} replaced in {f.get('seconds', 0):.2f} s"
    if kind == "tab_frozen":  # log only; worded for the dashboard's event stream
        return f"[Pool] {tab} frozen ({f.get('cause')}): the other tabs step on without it"
    if kind == "tab_recovered":
        return f"[Pool] ✓ {tab} stepping again {f.get('seconds', 0):.2f} s after its {f.get('cause')}"
    if kind == "browser_failed":
        return f"[Pool] ✗ {f.get('cause')}; relaunching the browser with all tabs"
    if kind == "browser_restarted":
        return f"[Pool] ↻ browser relaunched ({f.get('what')}) in {f.get('seconds', 0):.2f} s"
    if kind == "breaker":
        return f"[Pool] ✗ {f.get('message')}"
    if kind in ("warning", "error"):
        return f"[{kind.capitalize()}] {f.get('message')}"
    if kind == "worker_respawned":
        return f"[Train] ↻ env worker {f.get('env', 0) + 1} restarted: {f.get('cause')}"
    if kind == "stage":  # the trainer says the same line itself (one wording: describe_phase)
        return describe_phase(f.get("stage", 0), f.get("obstacles"), f.get("steps", 0))
    if kind == "checkpoint":
        return f"[Train] Saved checkpoint {f.get('path')} ({f.get('steps', 0):,} steps)"
    if kind == "refused":
        return f"[Security] refused a connection to port {f.get('port')}: {f.get('reason')}"
    if kind == "chaos":
        where = f"host {f['host'] + 1}" if isinstance(f.get("host"), int) else f"tab {f.get('tab', 0) + 1}"
        return f"[Chaos] injected {f.get('kind')} into {where}"
    if kind == "host_failed":
        return f"[Ray] ✗ host {f['host'] + 1} ({f.get('machine')}) failed: {f.get('detail')}; its tabs get frozen steps until it is back"
    if kind == "host_back":
        during = ", ".join(f"host {h}: {n:,}" for h, n in (f.get("other_hosts_steps_during") or {}).items())
        return f"[Ray] ✓ host {f['host'] + 1} back in {f.get('seconds', 0):.1f} s" + (f" (steps meanwhile: {during})" if during else "")
    return None
