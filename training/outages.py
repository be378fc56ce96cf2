"""Frozen steps: how the other tabs keep stepping while one tab is slow or being replaced.

SB3 steps every env together, so one slow or failed tab would stall all the others. The vec
envs give such a tab "frozen" steps instead and let the other tabs step on. A frozen step
repeats the tab's last good observation with reward 0, as a one-step truncation (done, with
`TimeLimit.truncated` and that observation as `terminal_observation`, and `tab_waiting` in the
info): PPO then bootstraps each one on its own, so its advantage is only (gamma - 1) V(s) and
its value target gamma V(s), instead of a chain of zero rewards through the real episode. The
actions are sampled from the policy at that one state, so a constant advantage there adds no
expected policy gradient. Episode statistics skip them (they carry no `episode` entry).

A tab is out from the first vec step it misses until its real answer (a late step, or the
first observation of its replacement page) is handed to the trainer. For each outage this
records the frozen steps and the longest vec step during it: the longest the other tabs
waited (the straggler grace for a hang, a few ms otherwise). Each outage is reported twice:
"outage_began" at its first frozen step (the live tab state "frozen"), "outage" as it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STRAGGLER_S = 0.5  # how long the other tabs wait for a slow tab before it gets frozen steps


@dataclass
class Outage:
    cause: str
    began: float
    frozen_steps: int = 0
    longest_step_s: float = 0.0


class OutageLog:
    def __init__(self, report: Callable[[str, dict[str, Any]], None]) -> None:
        self._report = report
        self._open: dict[int, Outage] = {}
        self._step_began = time.monotonic()
        self.frozen_steps = 0  # over the whole run, all tabs

    def step_began(self) -> None:
        self._step_began = time.monotonic()

    def frozen(self, tab: int, port: int, cause: str) -> None:
        """Tab `tab` (on `port`) got a frozen step in the vec step that is ending now."""
        outage = self._open.get(tab)
        if outage is None:
            outage = self._open[tab] = Outage(cause, self._step_began)
            self._report("outage_began", {"port": port, "cause": cause})
        elif cause != "slow":
            outage.cause = cause  # a slow tab that then hit its deadline is a hang
        outage.frozen_steps += 1
        self.frozen_steps += 1

    def step_ended(self, ports: list[int], back: list[int]) -> None:
        """Close the outages of the tabs in `back` (their real answer is in this vec step)."""
        took = time.monotonic() - self._step_began
        for outage in self._open.values():
            outage.longest_step_s = max(outage.longest_step_s, took)
        for tab in back:
            outage = self._open.pop(tab, None)
            if outage is not None:
                self._send(ports[tab], outage)

    def tabs_out(self) -> int:
        """How many tabs are in an outage: their real answer not yet handed to the trainer."""
        return len(self._open)

    def close(self, ports: list[int]) -> None:
        """The run ends: the outages still open are reported too, so none goes uncounted."""
        for tab, outage in sorted(self._open.items()):
            self._send(ports[tab], outage, until_run_end=True)
        self._open.clear()

    def _send(self, port: int, outage: Outage, until_run_end: bool = False) -> None:
        fields: dict[str, Any] = {
            "port": port,
            "cause": outage.cause,
            "seconds": round(time.monotonic() - outage.began, 3),
            "frozen_steps": outage.frozen_steps,
            "others_longest_wait_s": round(outage.longest_step_s, 3),
        }
        if until_run_end:
            fields["until_run_end"] = True
        self._report("outage", fields)
