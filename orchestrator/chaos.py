"""`--chaos`: planned faults, one at a time, each followed until it has recovered.

Faults are planned in steps, never in a share of the run's time: the first comes due `gap`
steps into the run, each next one `gap` steps after the previous one settled (recovered, or
could not be injected). So a fast machine and a loaded one inject the same faults; speed
changes only how long it takes. If `--timesteps` is reached with faults still to come,
training goes on past it for at most `--chaos-overtime` seconds; whatever is still missing
then is named, and the verdict is not ok. A fault counts as recovered when every tab it hit
is stepping again (its env has reset against a page after the fault). Training stops only once
the trainer has every tab back as well (`tabs_out`: the first step of a tab's new page, which
ends the cut episode, may still be on its way when its env reports it stepping).

With `--ray`, `host` kills a host actor and `browser`/`driver` hit one host's browser: each such
fault hits the tabs of one host (`hosts`, hosts taking turns), and recovers when they all step again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from browser_pool import faults
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet

MIN_GAP_VEC_STEPS = 32  # a healed tab steps at least this many vec steps before the next fault
INJECT_TIMEOUT_S = 15.0
RECOVERY_LIMIT_S = 120.0  # a fault not recovered by then is reported, and the next one comes due
BACK_LIMIT_S = 30.0  # past --timesteps, how long training waits for a recovered tab's first step to reach the trainer


@dataclass
class Fault:
    kind: str
    tab: int  # -1 for browser/driver faults, which hit every tab (of `host`, with --ray)
    host: int | None = None  # with --ray: the host whose tabs a host, browser or driver fault hits
    due_step: int | None = None  # known once the previous fault has settled
    injected_at: float | None = None
    recovered_s: float | None = None
    error: str | None = None  # why it could not be injected (injected_at is then None), or did not recover

    @property
    def injected(self) -> bool:
        return self.injected_at is not None

    @property
    def settled(self) -> bool:
        return self.recovered_s is not None or self.error is not None

    def where(self) -> str:
        if self.host is not None:
            return f"host {self.host + 1}"
        return "every tab" if self.tab < 0 else f"tab {self.tab + 1}"


@dataclass
class ChaosReport:
    faults_planned: int = 0
    faults_injected: int = 0
    faults_recovered: int = 0
    per_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    recovery_s: dict[str, list[float]] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)  # faults not injected or not recovered, and why
    overtime_s: float = 0.0  # how long training went on past --timesteps for them

    @property
    def ok(self) -> bool:
        return self.faults_planned == self.faults_injected == self.faults_recovered


class ChaosMonkey:
    def __init__(
        self,
        counts: dict[str, int],
        target_step: int,
        fleet: Fleet,
        events: EventLog,
        steps_per_vec_step: int,
        overtime_s: float,
        inject: Callable[[Fault], None] | None = None,
        ports: list[int] | None = None,
        hosts: list[list[int]] | None = None,
        tabs_out: Callable[[], int] = lambda: 0,
    ) -> None:
        self.fleet, self.events = fleet, events
        self.ports = list(ports or fleet.ports)  # the tabs faults go into and recover on (not an idle evaluation tab)
        self.target_step, self.overtime_s = target_step, overtime_s
        self.min_gap = MIN_GAP_VEC_STEPS * steps_per_vec_step
        tabs = len(self.ports)
        kinds = _interleave(counts)
        self.hosts = hosts  # with --ray: each host's tabs
        self._host_turn = 0  # the host the next whole-host fault hits
        self.faults = [self._fault(kind, i, tabs) for i, kind in enumerate(kinds)]
        self._inject_into_pool = inject or self._inject_through_fleet
        self.gap = 0
        self._next = 0  # index of the next fault to inject
        self._overtime_began: float | None = None
        self._overtime_over = False
        self._tabs_out = tabs_out  # tabs whose real answer the trainer has not had back yet (outages)
        self._back_wait_began: float | None = None

    @property
    def done(self) -> bool:
        return all(f.settled for f in self.faults)

    def _fault(self, kind: str, i: int, tabs: int) -> Fault:
        whole = kind in faults.FLEET_FAULTS + faults.HOST_FAULTS
        if whole and self.hosts:
            self._host_turn += 1
            return Fault(kind, -1, host=(self._host_turn - 1) % len(self.hosts))
        return Fault(kind, -1 if whole else i % tabs)

    # ---- called by the trainer ---------------------------------------------------------
    def on_steps(self, steps: int) -> None:
        """After each vec step: follow the current fault, or inject the next when it is due."""
        if not self.gap:
            self._plan(steps)
        current = self._current()
        if current is not None and not current.settled:
            self._follow(current, steps)
            return
        if self._overtime_over or self._next >= len(self.faults):
            return
        fault = self.faults[self._next]
        if fault.due_step is not None and steps >= fault.due_step:
            self._next += 1
            self._inject(fault, steps)

    def wants_more_steps(self, steps: int) -> bool:
        """Asked at and past --timesteps: train on while planned faults are left, within the overtime,
        then until the trainer has every tab back (for at most BACK_LIMIT_S: a tab may also be out for
        good, e.g. a host gone)."""
        if self._overtime_over or steps < self.target_step:
            return False
        now = time.monotonic()
        if self.done:
            self._back_wait_began = self._back_wait_began or now
            return self._tabs_out() > 0 and now - self._back_wait_began < BACK_LIMIT_S
        if self._overtime_began is None:
            self._overtime_began = now
            left = sum(1 for f in self.faults if not f.settled)
            then = (f"training on until they are (at most {self.overtime_s:g} s, --chaos-overtime)" if self.overtime_s
                    else "--chaos-overtime 0: stopping here")
            say(f"[Chaos] --timesteps {self.target_step:,} reached with {left} of {len(self.faults)} planned faults "
                f"not yet injected and recovered; {then}")
            self.events("chaos_overtime", {"steps": steps, "faults_left": left, "limit_s": self.overtime_s}, echo=False)
        if now - self._overtime_began >= self.overtime_s:
            self._overtime_over = True
            return False
        return True

    # ---- planning, injecting, following --------------------------------------------------
    def _plan(self, start_step: int) -> None:
        """The gap spreads the faults over the steps still to come (a resumed run starts past 0)."""
        span = max(self.target_step - start_step, 1)
        self.gap = max(self.min_gap, int(0.8 * span / (len(self.faults) + 1)))
        if self.faults:
            self.faults[0].due_step = start_step + self.gap

    def _current(self) -> Fault | None:
        return self.faults[self._next - 1] if self._next else None

    def _settled(self, steps: int) -> None:
        if self._next < len(self.faults):
            self.faults[self._next].due_step = steps + self.gap

    def _inject(self, fault: Fault, steps: int) -> None:
        if fault.kind == "trainer":
            self.events("chaos", {"kind": "trainer", "tab": 0, "all_tabs": True})
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        fault.injected_at = time.time()
        for port in self._targets(fault):
            self.fleet.note_fault(port, fault.kind)
        try:
            self._inject_into_pool(fault)
        except Exception as exc:
            fault.injected_at, fault.error = None, f"could not be injected: {type(exc).__name__}: {exc}"
            self.events("warning", {"message": f"chaos: {fault.kind} into {fault.where()} {fault.error}"})
            self._settled(steps)
            return
        where = {} if fault.host is None else {"host": fault.host}
        self.events("chaos", {"kind": fault.kind, "tab": max(fault.tab, 0), "all_tabs": fault.tab < 0, "steps": steps, **where})

    def _inject_through_fleet(self, fault: Fault) -> None:
        future = asyncio.run_coroutine_threadsafe(
            faults.inject(self.fleet.pool, fault.kind, max(fault.tab, 0)), self.fleet.loop
        )
        future.result(timeout=INJECT_TIMEOUT_S)

    def _targets(self, fault: Fault) -> list[int]:
        if fault.host is not None and self.hosts:
            return [self.fleet.ports[j] for j in self.hosts[fault.host]]
        return list(self.ports) if fault.tab < 0 else [self.ports[fault.tab]]

    def _recovery_s(self, fault: Fault) -> float | None:
        """Seconds from the fault to the last tab it hit stepping again; None while one is not."""
        stepping = [self.fleet.health[p].stepping_at for p in self._targets(fault)]
        if fault.injected_at is None or not all(t > fault.injected_at for t in stepping):
            return None
        return max(stepping) - fault.injected_at

    def _follow(self, fault: Fault, steps: int) -> None:
        assert fault.injected_at is not None
        fault.recovered_s = self._recovery_s(fault)
        if fault.recovered_s is not None:
            where = {} if fault.host is None else {"host": fault.host}
            self.events("chaos_recovered",
                        {"kind": fault.kind, "tab": max(fault.tab, 0), "seconds": round(fault.recovered_s, 3), **where})
        elif time.time() - fault.injected_at > RECOVERY_LIMIT_S:
            fault.error = f"injected, but not recovered within {RECOVERY_LIMIT_S:g} s"
            self.events("warning", {"message": f"chaos: {fault.kind} into {fault.where()} {fault.error}"})
        if fault.settled:
            self._settled(steps)

    # ---- the verdict ---------------------------------------------------------------------
    def finish(self, stop_reason: str | None = None) -> ChaosReport:
        """Count what happened; name each fault that was not injected or did not recover, and why."""
        current = self._current()
        if current is not None and not current.settled:
            current.recovered_s = self._recovery_s(current)
        report = ChaosReport(faults_planned=len(self.faults))
        if self._overtime_began is not None:
            report.overtime_s = round(time.monotonic() - self._overtime_began, 1)
        for fault in self.faults:
            kind = report.per_kind.setdefault(fault.kind, {"planned": 0, "injected": 0, "recovered": 0})
            kind["planned"] += 1
            if fault.injected:
                kind["injected"] += 1
                report.faults_injected += 1
            if fault.recovered_s is not None:
                kind["recovered"] += 1
                report.faults_recovered += 1
                report.recovery_s.setdefault(fault.kind, []).append(round(fault.recovered_s, 3))
            else:
                report.missing.append({"kind": fault.kind, "tab": fault.tab, "host": fault.host,
                                       "why": self._why_missing(fault, stop_reason)})
        return report

    def _why_missing(self, fault: Fault, stop_reason: str | None) -> str:
        if fault.error:
            return fault.error
        ended = f"the run stopped first ({stop_reason})" if stop_reason else "the run ended first"
        if self._overtime_over:
            ended = f"--timesteps was reached and the chaos overtime of {self.overtime_s:g} s ran out"
        if fault.injected_at is not None:
            return f"injected, but not recovered before {ended}"
        return f"not injected: {ended}"


def describe(report: ChaosReport) -> list[str]:
    """The console lines of the verdict: the counts, then one line per missing fault."""
    head = (f"[Chaos] {report.faults_injected}/{report.faults_planned} planned faults injected, "
            f"{report.faults_recovered}/{report.faults_injected} of those recovered")
    if report.overtime_s:
        head += f" ({report.overtime_s:g} s of training past --timesteps for them)"
    lines = [head + ("" if report.ok else ": NOT OK")]
    for m in report.missing:
        where = "every tab" if m["tab"] < 0 else f"tab {m['tab'] + 1}"
        if m.get("host") is not None:
            where = f"host {m['host'] + 1}"
        lines.append(f"[Chaos] ! {m['kind']} into {where}: {m['why']}")
    return lines


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
