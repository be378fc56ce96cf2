"""CPU and memory of a run's processes, read with psutil for the resource sampler.

RSS counts the memory that Chromium's processes share many times over, so the browser, its
helpers and the renderers are read in full (USS and PSS). Processes come and go between reads
(a tab replaced, a worker restarted, the browser relaunched): one that vanished reads as not
alive instead of failing the sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

MB = 2**20


@dataclass
class ProcStats:
    """One process, or a sum of many; `alive` is False for one that was gone when read, so a
    vanished process is a row of zeros rather than a gap."""

    pid: int | None = None
    alive: bool = False
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    uss_mb: float | None = None
    pss_mb: float | None = None
    count: int = 1  # processes summed into this row (helpers)


class ProcessMeter:
    """CPU and memory of processes by pid, tolerant of processes that vanish between reads.

    CPU percent needs two readings of the same process; a process seen for the first time
    reports its average since it started instead of 0.
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def measure(self, pid: int | None, full: bool = False) -> ProcStats:
        if not pid:
            return ProcStats(pid=pid)
        try:
            proc, fresh = self._proc(pid)
            with proc.oneshot():
                cpu = _cpu_since_start(proc) if fresh else proc.cpu_percent(None)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.ZombieProcess(pid)
                if full:
                    mem = proc.memory_full_info()
                    return ProcStats(pid, True, cpu, mem.rss / MB, mem.uss / MB, getattr(mem, "pss", mem.uss) / MB)
                return ProcStats(pid, True, cpu, proc.memory_info().rss / MB)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            self._procs.pop(pid, None)
            return ProcStats(pid=pid)

    def _proc(self, pid: int) -> tuple[psutil.Process, bool]:
        proc = self._procs.get(pid)
        if proc is not None and proc.is_running():
            return proc, False
        proc = psutil.Process(pid)
        proc.cpu_percent(None)  # starts the CPU clock for the next reading
        self._procs[pid] = proc
        return proc, True

    def forget_except(self, pids: set[int]) -> None:
        for pid in [p for p in self._procs if p not in pids]:
            del self._procs[pid]


def _cpu_since_start(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    age = max(time.time() - proc.create_time(), 1e-3)
    return 100.0 * (times.user + times.system) / age


def chromium_tree(browser_pid: int | None) -> list[int]:
    """The browser's descendants: renderers hang off the zygote, not the browser itself."""
    if not browser_pid:
        return []
    try:
        return [p.pid for p in psutil.Process(browser_pid).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def total(stats: list[ProcStats]) -> ProcStats:
    """One row for many processes (Chromium's helpers), counting only those alive."""
    alive = [s for s in stats if s.alive]
    return ProcStats(
        pid=None,
        alive=bool(alive),
        cpu_percent=sum(s.cpu_percent for s in alive),
        rss_mb=sum(s.rss_mb for s in alive),
        uss_mb=sum(s.uss_mb or 0.0 for s in alive),
        pss_mb=sum(s.pss_mb or 0.0 for s in alive),
        count=len(alive),
    )


def read_system() -> dict[str, float]:
    """The machine: CPU since the last call, cores, total and available memory."""
    vm = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(None),
        "cores": float(psutil.cpu_count() or 1),
        "mem_total_mb": vm.total / MB,
        "mem_available_mb": vm.available / MB,
    }


@dataclass
class ProcessReadings:
    """One reading of the machine and every process of the run, before it is mapped to tabs."""

    system: dict[str, float]
    trainer: ProcStats
    workers: list[ProcStats]
    driver: ProcStats
    browser: ProcStats
    helpers: ProcStats  # every other Chromium process: GPU, network, zygotes, spare renderers
    renderers: dict[int, ProcStats]  # by pid

    def renderer(self, pid: int | None) -> ProcStats:
        """A tab's renderer; an empty row while its pid is not known."""
        return (self.renderers.get(pid) if pid else None) or ProcStats()

    @property
    def chromium_pss_mb(self) -> float:
        renderers = sum((s.pss_mb or 0.0) for s in self.renderers.values() if s.alive)
        return (self.browser.pss_mb or 0.0) + (self.helpers.pss_mb or 0.0) + renderers


class ProcessSampler:
    """Reads the run's processes by pid, keeping CPU clocks only for the processes still in it."""

    def __init__(self) -> None:
        self.meter = ProcessMeter()
        psutil.cpu_percent(None)  # starts the system CPU clock

    def read(
        self,
        trainer_pid: int | None,
        worker_pids: list[int | None],
        driver_pid: int | None,
        browser_pid: int | None,
        renderer_pids: list[int | None],
    ) -> ProcessReadings:
        meter = self.meter
        system = read_system()
        trainer = meter.measure(trainer_pid)
        workers = [meter.measure(pid) for pid in worker_pids]
        driver = meter.measure(driver_pid)
        browser = meter.measure(browser_pid, full=True)
        renderers = {pid: meter.measure(pid, full=True) for pid in renderer_pids if pid}
        tree = chromium_tree(browser_pid)
        helpers = total([meter.measure(pid, full=True) for pid in tree if pid not in renderers])
        keep = {p for p in [trainer_pid, browser_pid, driver_pid, *worker_pids, *renderers, *tree] if p}
        meter.forget_except(keep)
        return ProcessReadings(system, trainer, workers, driver, browser, helpers, renderers)
