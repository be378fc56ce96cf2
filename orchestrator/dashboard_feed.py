"""What the dashboard shows, read from the run folder: the same files `lunarfleet status` and
`lunarfleet report` read, so the page never holds a second copy of a fact.

- status.json (orchestrator/status_file.py): the run, every tab's row, the task metrics;
- events.jsonl (orchestrator/events.py): failures, replacements, checkpoints, worded by
  `events.describe` as on the console; the trainer's `progress` events are the reward and speed
  curves, its `stage` events the curriculum stage;
- config.json: the stage the run started at;
- thumbnails/tab-N.jpg (orchestrator/thumbnails.py): each tab's latest picture.

`RunFolderFeed.poll()` turns what changed since the last poll into messages for the page;
`hello()` is everything at once, for a page that (re)connects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections import deque
from pathlib import Path
from typing import Any

from orchestrator.events import describe
from orchestrator.status_file import STATUS_FILE
from orchestrator.thumbnails import THUMBNAILS_DIR

MAX_EVENTS = 300  # the newest events a page is given
MAX_CURVE_POINTS = 600  # a reconnecting page gets the curves thinned to this many points
THUMB_NAME = re.compile(r"^tab-(\d+)\.jpg$")
RUNNING_STATES = ("starting", "running")  # any other state in status.json is the run's last word

Message = tuple[str, Any]  # (kind, data): status, events, curve, thumbs, stage


class RunFolderFeed:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.status: dict[str, Any] | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.curve: list[dict[str, Any]] = []
        self.thumbs: dict[int, int] = {}  # tab (1-based) -> version (the file's mtime in ns)
        self.stage: int | None = self._configured_stage()
        self._status_version = 0
        self._events_offset = 0
        self._partial = b""

    def hello(self) -> dict[str, Any]:
        step = max(1, len(self.curve) // MAX_CURVE_POINTS + 1)
        curve = self.curve[::step] + (self.curve[-1:] if self.curve and (len(self.curve) - 1) % step else [])
        return {"run_dir": str(self.run_dir), "status": self.status, "events": list(self.events), "curve": curve,
                "thumbs": self.thumbs, "stage": self.stage}

    def poll(self) -> list[Message]:
        messages: list[Message] = []
        if (status := self._read_status()) is not None:
            self.status = status
            messages.append(("status", status))
        events, points, stage = self._read_events()
        if events:
            self.events.extend(events)
            messages.append(("events", events))
        if points:
            self.curve.extend(points)
            messages.append(("curve", points))
        if stage is not None and stage != self.stage:
            self.stage = stage
            messages.append(("stage", stage))
        if changed := self._read_thumbs():
            self.thumbs.update(changed)
            messages.append(("thumbs", changed))  # versions: the page fetches the new pictures
        return messages

    def pictures(self) -> dict[int, str]:
        """Each tab's latest picture as a data URL (for a page that can fetch nothing more)."""
        found = {}
        for tab in self.thumbs:
            with contextlib.suppress(OSError):
                data = (self.run_dir / THUMBNAILS_DIR / f"tab-{tab}.jpg").read_bytes()
                found[tab] = "data:image/jpeg;base64," + base64.b64encode(data).decode()
        return found

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.get("state") not in RUNNING_STATES

    # ---- the files -------------------------------------------------------------------------
    def _configured_stage(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return json.loads((self.run_dir / "config.json").read_text()).get("stage")
        return None

    def _read_status(self) -> dict[str, Any] | None:
        path = self.run_dir / STATUS_FILE
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            return None
        if version == self._status_version:
            return None
        try:
            status = json.loads(path.read_text())  # replaced atomically: never half a file
        except (OSError, ValueError):
            return None
        self._status_version = version
        return status

    def _read_events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int | None]:
        """The events written since the last poll: those worth a line, the curve's points, the stage."""
        path = self.run_dir / "events.jsonl"
        try:
            with open(path, "rb") as handle:
                handle.seek(self._events_offset)
                data = handle.read()
        except OSError:
            return [], [], None
        self._events_offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line still being written
        shown, points, stage = [], [], None
        for line in lines:
            try:
                record = json.loads(line)
                kind = record.pop("event")
            except (ValueError, KeyError, AttributeError):
                continue
            if kind == "progress":
                points.append({"time": record.get("time"), "steps": record.get("steps"), "fps": record.get("fps"),
                               "reward": record.get("mean_reward")})
                continue
            if kind == "stage":
                stage = record.get("stage")
            text = describe(kind, {k: v for k, v in record.items() if k != "traceback"})
            if text:
                tab = record.get("tab")
                shown.append({"time": record.get("time"), "kind": kind, "text": text,
                              "tab": tab + 1 if isinstance(tab, int) and not isinstance(tab, bool) else None})
        return shown, points, stage

    def _read_thumbs(self) -> dict[int, int]:
        folder = self.run_dir / THUMBNAILS_DIR
        changed: dict[int, int] = {}
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                match = THUMB_NAME.match(entry.name)
                if match:
                    with contextlib.suppress(OSError):
                        version = entry.stat().st_mtime_ns
                        tab = int(match.group(1))
                        if self.thumbs.get(tab) != version:
                            changed[tab] = version
        return changed
