"""`--chaos`: faults spread over a run, one at a time, each followed until it has recovered.

A fault counts as recovered when every tab it hit is stepping again (its env has reset
against a page after the fault). Faults are spread over the first 80% of the run's steps, so
the last one has time to heal before training ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field

from browser_pool import faults
from orchestrator.events import EventLog
from orchestrator.fleet import Fleet


@dataclass
class Fault:
    kind: str
    tab: int  # -1 for browser/driver faults, which hit every tab
    due_step: int
    injected_at: float | None = None
    recovered_s: float | None = None
    error: str | None = None


@dataclass
class ChaosReport:
    faults_planned: int = 0
    faults_injected: int = 0
    faults_recovered: int = 0
    per_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    recovery_s: dict[str, list[float]] = field(default_factory=dict)


class ChaosMonkey:
    def __init__(self, counts: dict[str, int], target_step: int, fleet: Fleet, events: EventLog) -> None:
        self.fleet, self.events = fleet, events
        self.target_step = target_step
        tabs = len(fleet.ports)
        kinds = _interleave(counts)
        self.faults = [Fault(kind, -1 if kind in faults.FLEET_FAULTS else i % tabs, 0) for i, kind in enumerate(kinds)]
        self._next = 0
        self._planned = False

    def _plan(self, start_step: int) -> None:
        """Spread the faults over the steps still to come (a resumed run starts past 0)."""
        span = max(self.target_step - start_step, 1) * 0.8
        for i, fault in enumerate(self.faults):
            fault.due_step = start_step + int(span * (i + 1) / (len(self.faults) + 1))
        self._planned = True

    def on_steps(self, steps: int) -> None:
        """Called by the trainer after each vec step: inject the next fault when it is due."""
        if not self._planned:
            self._plan(steps)
        current = self._current()
        if current is not None and current.injected_at is not None and current.recovered_s is None and current.error is None:
            self._check_recovered(current)
            return
        if self._next >= len(self.faults) or steps < self.faults[self._next].due_step:
            return
        fault = self.faults[self._next]
        self._next += 1
        self._inject(fault)

    def _current(self) -> Fault | None:
        return self.faults[self._next - 1] if self._next else None

    def _inject(self, fault: Fault) -> None:
        if fault.kind == "trainer":
            self.events("chaos", {"kind": "trainer", "tab": 0, "all_tabs": True})
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        targets = self._targets(fault)
        fault.injected_at = time.time()
        for port in targets:
            self.fleet.note_fault(port, fault.kind)
        future = asyncio.run_coroutine_threadsafe(
            faults.inject(self.fleet.pool, fault.kind, max(fault.tab, 0)), self.fleet.loop
        )
        try:
            future.result(timeout=15)
        except Exception as exc:
            fault.error = f"{type(exc).__name__}: {exc}"
            self.events("warning", {"message": f"chaos: could not inject {fault.kind}: {fault.error}"})
            return
        self.events("chaos", {"kind": fault.kind, "tab": max(fault.tab, 0), "all_tabs": fault.tab < 0})

    def _targets(self, fault: Fault) -> list[int]:
        return list(self.fleet.ports) if fault.tab < 0 else [self.fleet.ports[fault.tab]]

    def _check_recovered(self, fault: Fault) -> None:
        assert fault.injected_at is not None
        stepping = [self.fleet.health[p].stepping_at for p in self._targets(fault)]
        if all(t > fault.injected_at for t in stepping):
            fault.recovered_s = max(stepping) - fault.injected_at
            self.events(
                "chaos_recovered", {"kind": fault.kind, "tab": max(fault.tab, 0), "seconds": round(fault.recovered_s, 3)}
            )

    def finish(self) -> ChaosReport:
        current = self._current()
        if current is not None and current.injected_at is not None and current.recovered_s is None and current.error is None:
            self._check_recovered(current)
        report = ChaosReport(faults_planned=len(self.faults))
        for fault in self.faults:
            kind = report.per_kind.setdefault(fault.kind, {"planned": 0, "injected": 0, "recovered": 0})
            kind["planned"] += 1
            if fault.injected_at is not None and fault.error is None:
                kind["injected"] += 1
                report.faults_injected += 1
            if fault.recovered_s is not None and fault.error is None:
                kind["recovered"] += 1
                report.faults_recovered += 1
                report.recovery_s.setdefault(fault.kind, []).append(round(fault.recovered_s, 3))
        return report


def _interleave(counts: dict[str, int]) -> list[str]:
    """crash=2,hang=1 -> crash, hang, crash: kinds alternate so each meets a different moment."""
    left = dict(counts)
    order: list[str] = []
    while any(left.values()):
        for kind in list(left):
            if left[kind]:
                order.append(kind)
                left[kind] -= 1
    return order
