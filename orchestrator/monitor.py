"""Resource monitoring: a sampler thread beside the trainer, the status file and the samples file.

Every few seconds (psutil) the sampler reads the machine (CPU, available memory), the trainer
and its env workers (CPU, RSS), the Playwright driver, the browser, and each tab's renderer
(CPU, USS and PSS: RSS counts the memory Chromium's processes share many times over), mapped
to tab numbers through the pool's renderer pids. Each sample is appended to
`runs/<id>/resources.jsonl`, rewrites `runs/<id>/status.json`, and is handed to listeners
(TensorBoard scalars, the live view). The guards act on the same sample: a tab over its memory
limit is recycled at its next episode boundary, and low system memory is warned about.

Also here: the memory and CPU budget of a run (`--envs auto`, the memory floor check at start,
the trainer's torch thread count), because they share the per-tab cost figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from orchestrator.config import DEFAULT_VEC_ENV

MB = 2**20
STATUS_FILE = "status.json"
SAMPLES_FILE = "resources.jsonl"

# Measured (2 cores, Chromium 156, the embedded sim, 2 tabs, a few thousand steps): a tab's
# renderer 28-48 MB PSS, its env worker 166 MB USS (243 MB RSS: Python, torch, gymnasium), the
# browser 60-120 MB PSS plus its 8 helper processes 134-207 MB PSS, the Playwright driver
# 120-140 MB RSS, the trainer 340 MB RSS. The estimates round those up, so --envs auto and the
# memory floor check err on the safe side. The inline vec env has no worker process per tab.
TAB_COST_MB = {"subproc": 250, "inline": 100}  # renderer (+ env worker), per tab, by vec env kind
BASE_COST_MB = 900  # trainer + browser + its helper processes + driver, once
DEFAULT_MEMORY_FLOOR_MB = 1000
# Tabs per core that still pay off (see `auto_envs`), and a hard cap for --envs auto.
TABS_PER_CORE = 2
AUTO_MAX_ENVS = 16
# A tab over its memory limit again this soon after being replaced: the limit is likely too low.
RECYCLE_WARN_WINDOW_S = 60.0


@dataclass
class MonitorSettings:
    enabled: bool = True
    interval_s: float = 5.0
    tab_memory_limit_mb: float = 0.0  # 0: no limit
    memory_floor_mb: float = DEFAULT_MEMORY_FLOOR_MB
    live: str = "auto"  # auto (table on a terminal, lines otherwise), table, lines, off


# ---- one sample ------------------------------------------------------------------------------
@dataclass
class ProcStats:
    pid: int | None = None
    alive: bool = False
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    uss_mb: float | None = None
    pss_mb: float | None = None
    count: int = 1  # processes summed into this row (helpers)


@dataclass
class TabInfo:
    """What the pool and the health channel know of one tab, read by the sampler."""

    index: int
    port: int
    state: str
    renderer_pid: int | None
    restarts: int = 0
    failures: int = 0
    steps: int = 0  # steps its env worker has reported (restarts at 0 with a new worker)


@dataclass
class TabRow:
    tab: int  # 1-based, as people count tabs (events use the 0-based index)
    index: int
    port: int
    state: str
    steps: int
    steps_per_s: float
    restarts: int
    failures: int
    renderer_pid: int | None
    cpu_percent: float
    pss_mb: float | None
    uss_mb: float | None
    rss_mb: float


@dataclass
class Sample:
    time: float
    elapsed_s: float
    timesteps: int
    fps: float
    system: dict[str, float]
    trainer: ProcStats
    workers: list[ProcStats]
    driver: ProcStats
    browser: ProcStats
    helpers: ProcStats  # every other Chromium process: GPU, network, zygotes, spare renderers
    tabs: list[TabRow]
    chromium_pss_mb: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return _rounded(asdict(self))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


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
                if fresh:
                    times = proc.cpu_times()
                    age = max(time.time() - proc.create_time(), 1e-3)
                    cpu = 100.0 * (times.user + times.system) / age
                else:
                    cpu = proc.cpu_percent(None)
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


def chromium_tree(browser_pid: int | None) -> list[int]:
    """The browser's descendants: renderers hang off the zygote, not the browser itself."""
    if not browser_pid:
        return []
    try:
        return [p.pid for p in psutil.Process(browser_pid).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def _sum(stats: list[ProcStats]) -> ProcStats:
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


# ---- where the numbers come from -------------------------------------------------------------
@dataclass
class Sources:
    tabs: Callable[[], list[TabInfo]]
    browser_pid: Callable[[], int | None]
    driver_pid: Callable[[], int | None] = lambda: None
    worker_pids: Callable[[], list[int | None]] = list
    trainer_pid: int = field(default_factory=os.getpid)


def tab_state(pool_state: str, restarts: int, health: Any | None) -> str:
    """One word for a tab: connecting, stepping, restarting, failed (or connected, closed).

    The pool knows whether a page is being (re)opened; the health channel knows whether an env
    is talking to it (`PortHealth`).
    """
    if pool_state in ("failed", "closed"):
        return pool_state
    if pool_state == "restarting" or (pool_state in ("new", "loading") and restarts):
        return "restarting"
    if pool_state in ("new", "loading") or health is None:
        return "connecting"
    if getattr(health, "failed_at", None) is not None and not health.connected:
        return "restarting"
    if health.connected:
        return "stepping" if health.stepping_at else "connected"
    return "connecting"


def fleet_sources(fleet: Any, venv: Any | None = None) -> Sources:
    """Sources for a run: the fleet's pool and health channel, and the vec env's workers (`venv`
    may be a function returning the vec env, or None, while it is not made yet)."""
    pool = fleet.pool

    def tabs() -> list[TabInfo]:
        out = []
        for tab in pool.tabs:
            h = fleet.health.get(tab.port)
            out.append(
                TabInfo(
                    tab.index, tab.port, tab_state(tab.state, tab.restarts, h), tab.renderer_pid,
                    tab.restarts, h.failures if h else 0, h.steps if h else 0,
                )
            )
        return out

    def workers() -> list[int | None]:
        v = venv() if callable(venv) else venv  # a getter, when the vec env is made after the sampler starts
        return [getattr(p, "pid", None) for p in getattr(v, "processes", [])] if v is not None else []

    return Sources(tabs, lambda: pool.browser_pid, lambda: pool.driver_pid, workers)


def pool_sources(pool: Any) -> Sources:
    """Sources for a bare pool (no health channel): states come from the pool alone."""

    def tabs() -> list[TabInfo]:
        return [
            TabInfo(t.index, t.port, tab_state(t.state, t.restarts, None) if t.state != "loaded" else "loaded",
                    t.renderer_pid, t.restarts)
            for t in pool.tabs
        ]

    return Sources(tabs, lambda: pool.browser_pid, lambda: pool.driver_pid)


# ---- the sampler -----------------------------------------------------------------------------
Listener = Callable[[Sample, dict[str, Any]], None]  # a sample and the status built from it


class ResourceSampler:
    """Samples every `interval_s` on its own thread; writes the samples and status files."""

    def __init__(
        self,
        sources: Sources,
        settings: MonitorSettings | None = None,
        run_dir: Path | None = None,
        run_info: dict[str, Any] | None = None,
        recycle: Callable[[int, str], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.sources = sources
        self.settings = settings or MonitorSettings()
        self.run_dir = run_dir
        self.run_info = dict(run_info or {})
        self.recycle = recycle
        self.warn = warn or (lambda message: None)
        self.listeners: list[Listener] = []
        self.state = "starting"  # what status.json says while sampling: starting, running
        self.latest: Sample | None = None
        # What the trainer last said (`Monitoring.note_training`): task metrics, the reward-gaming verdict.
        self.training: dict[str, Any] = {}
        self.samples = 0
        self.timesteps = 0
        self._meter = ProcessMeter()
        self._began = time.time()
        self._last_steps: dict[int, tuple[int, float]] = {}  # tab index -> (steps, time)
        self._last_timesteps: tuple[int, float] = (0, time.monotonic())
        self._fps = 0.0
        self._running_since: float | None = None
        self._recycle_asked: dict[int, tuple[int | None, float]] = {}  # tab index -> (renderer pid, when)
        self._limit_warned = False
        self._low_memory = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples_file = None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._samples_file = open(run_dir / SAMPLES_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        psutil.cpu_percent(None)  # starts the system CPU clock

    # ---- life ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._stop.wait(min(1.0, self.settings.interval_s)):  # a first CPU reading needs some time
            return
        while True:
            try:
                self.sample()
            except Exception as exc:  # monitoring must never take the run down
                self.warn(f"resource sampler: {type(exc).__name__}: {exc}")
            if self._stop.wait(self.settings.interval_s):
                return

    def stop(self, final_state: str | None = None, extra: dict[str, Any] | None = None) -> None:
        """Stop sampling; with `final_state`, take one last sample and write the final status."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.interval_s + 10)
            self._thread = None
        if final_state is not None:
            with contextlib.suppress(Exception):
                self.sample(state=final_state, extra=extra, act=False)
        with self._lock:
            if self._samples_file is not None:
                self._samples_file.close()
                self._samples_file = None

    def note_steps(self, timesteps: int) -> None:
        """The trainer's step count (called after every vec step; cheap)."""
        self.timesteps = timesteps

    # ---- one sample ------------------------------------------------------------------------
    def sample(self, state: str | None = None, extra: dict[str, Any] | None = None, act: bool = True) -> Sample:
        """One sample now. `act=False` is the final one: no guards, and rates averaged over the run."""
        state = state or self.state
        with self._lock:
            if state == "running" and self._running_since is None:
                self._running_since = time.time()
            sample = self._measure(whole_run=not act)
            if act:
                self._guard(sample)
            self.latest = sample
            self.samples += 1
            record = sample.to_json()
            if self._samples_file is not None:
                self._samples_file.write(json.dumps(record) + "\n")
                self._samples_file.flush()
            status = self.status(sample, state, extra)
            if self.run_dir is not None:
                write_status(self.run_dir / STATUS_FILE, status)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(sample, status)
        return sample

    def status(self, sample: Sample, state: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            **self.run_info,
            "state": state,
            "pid": os.getpid(),
            "updated": round(sample.time, 3),
            "interval_s": self.settings.interval_s,
            "tab_memory_limit_mb": self.settings.tab_memory_limit_mb,
            "memory_floor_mb": self.settings.memory_floor_mb,
            **sample.to_json(),
            **self.training,
            **(extra or {}),
        }

    def _measure(self, whole_run: bool = False) -> Sample:
        now, mono = time.time(), time.monotonic()
        meter, src = self._meter, self.sources
        vm = psutil.virtual_memory()
        system = {
            "cpu_percent": psutil.cpu_percent(None),
            "cores": float(psutil.cpu_count() or 1),
            "mem_total_mb": vm.total / MB,
            "mem_available_mb": vm.available / MB,
        }
        trainer = meter.measure(src.trainer_pid)
        workers = [meter.measure(pid) for pid in src.worker_pids()]
        driver = meter.measure(src.driver_pid())
        browser_pid = src.browser_pid()
        browser = meter.measure(browser_pid, full=True)
        tabs = src.tabs()
        renderers = {t.renderer_pid: meter.measure(t.renderer_pid, full=True) for t in tabs if t.renderer_pid}
        tree = chromium_tree(browser_pid)
        others = [meter.measure(pid, full=True) for pid in tree if pid not in renderers]
        helpers = _sum(others)
        rows = [self._row(t, renderers.get(t.renderer_pid) or ProcStats(), now, whole_run) for t in tabs]
        steps, at = self._last_timesteps
        if self.timesteps != steps and mono > at:
            self._fps = max(self.timesteps - steps, 0) / (mono - at)
            self._last_timesteps = (self.timesteps, mono)
        elif mono - at > 2 * self.settings.interval_s:
            self._fps = 0.0
        chromium_pss = (browser.pss_mb or 0.0) + (helpers.pss_mb or 0.0) + sum(
            (s.pss_mb or 0.0) for s in renderers.values() if s.alive
        )
        keep = {p for p in [src.trainer_pid, browser_pid, src.driver_pid(), *src.worker_pids(), *renderers, *tree] if p}
        self._meter.forget_except(keep)
        return Sample(
            time=now, elapsed_s=now - self._began, timesteps=self.timesteps, fps=self._fps, system=system,
            trainer=trainer, workers=workers, driver=driver, browser=browser, helpers=helpers, tabs=rows,
            chromium_pss_mb=chromium_pss,
        )

    def _row(self, tab: TabInfo, proc: ProcStats, now: float, whole_run: bool = False) -> TabRow:
        last = self._last_steps.get(tab.index)
        rate = 0.0
        if whole_run and self._running_since is not None:
            rate = tab.steps / max(now - self._running_since, 1e-3)  # steps of its current env worker
        elif last is not None and now > last[1]:
            done = tab.steps - last[0] if tab.steps >= last[0] else tab.steps  # a new worker counts from 0
            rate = done / (now - last[1])
        self._last_steps[tab.index] = (tab.steps, now)
        return TabRow(
            tab=tab.index + 1, index=tab.index, port=tab.port, state=tab.state, steps=tab.steps, steps_per_s=rate,
            restarts=tab.restarts, failures=tab.failures, renderer_pid=tab.renderer_pid,
            cpu_percent=proc.cpu_percent, pss_mb=proc.pss_mb, uss_mb=proc.uss_mb, rss_mb=proc.rss_mb,
        )

    # ---- the guards ----------------------------------------------------------------------
    def _guard(self, sample: Sample) -> None:
        limit = self.settings.tab_memory_limit_mb
        if limit > 0 and self.recycle is not None:
            for row in sample.tabs:
                over = row.pss_mb is not None and row.pss_mb > limit and row.state == "stepping"
                asked = self._recycle_asked.get(row.index)
                if not over or (asked is not None and asked[0] == row.renderer_pid):
                    continue  # one request per renderer: the next one is the replacement's
                if asked is not None and sample.time - asked[1] < RECYCLE_WARN_WINDOW_S and not self._limit_warned:
                    self._limit_warned = True
                    message = (
                        f"tab {row.tab} is over --tab-memory-limit-mb {limit:g} again soon after being replaced "
                        f"({row.pss_mb:.0f} MB PSS): the limit may be below what a fresh tab needs"
                    )
                    sample.warnings.append(message)
                    self.warn(message)
                self._recycle_asked[row.index] = (row.renderer_pid, sample.time)
                self.recycle(row.index, f"{row.pss_mb:.0f} MB PSS, over the {limit:g} MB limit")
        floor = self.settings.memory_floor_mb
        available = sample.system["mem_available_mb"]
        if floor > 0 and available < floor and not self._low_memory:
            self._low_memory = True
            message = (
                f"only {available:,.0f} MB of memory available, below the floor of {floor:,.0f} MB: "
                "close other programs or run fewer --envs next time (the kernel may kill a tab or worker)"
            )
            sample.warnings.append(message)
            self.warn(message)
        elif self._low_memory and available > floor * 1.2:
            self._low_memory = False


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Atomically, so `lunarfleet status` never reads half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(status, indent=1) + "\n")
    os.replace(tmp, path)


def tensorboard_scalars(sample: Sample) -> dict[str, float]:
    """The sample as flat `resources/...` scalars for SB3's logger (TensorBoard)."""
    alive_workers = [w for w in sample.workers if w.alive]
    scalars = {
        "resources/system_cpu_percent": sample.system["cpu_percent"],
        "resources/system_mem_available_mb": sample.system["mem_available_mb"],
        "resources/trainer_cpu_percent": sample.trainer.cpu_percent,
        "resources/trainer_rss_mb": sample.trainer.rss_mb,
        "resources/workers_cpu_percent": sum(w.cpu_percent for w in alive_workers),
        "resources/workers_rss_mb": sum(w.rss_mb for w in alive_workers),
        "resources/browser_cpu_percent": sample.browser.cpu_percent + sample.helpers.cpu_percent,
        "resources/chromium_pss_mb": sample.chromium_pss_mb,
    }
    for row in sample.tabs:
        scalars[f"resources/tab{row.tab}_cpu_percent"] = row.cpu_percent
        scalars[f"resources/tab{row.tab}_pss_mb"] = row.pss_mb or 0.0
        scalars[f"resources/tab{row.tab}_steps_per_s"] = row.steps_per_s
        scalars[f"resources/tab{row.tab}_restarts"] = float(row.restarts)
    return scalars


# ---- the budget: how many tabs, how many torch threads ---------------------------------------
def tab_cost_mb(vec_env: str = DEFAULT_VEC_ENV) -> int:
    return TAB_COST_MB.get(vec_env, max(TAB_COST_MB.values()))


def max_envs_for_memory(available_mb: float, floor_mb: float, vec_env: str = DEFAULT_VEC_ENV) -> int:
    return max(int((available_mb - floor_mb - BASE_COST_MB) // tab_cost_mb(vec_env)), 0)


def auto_envs(
    cores: int | None = None,
    available_mb: float | None = None,
    floor_mb: float = DEFAULT_MEMORY_FLOOR_MB,
    vec_env: str = DEFAULT_VEC_ENV,
) -> tuple[int, str]:
    """N for `--envs auto`, and why, in words.

    Cores: the tabs step in lock-step with the trainer, so each tab (renderer + env worker)
    keeps only part of a core busy (measured 2 tabs on 2 cores: ~10% renderer + ~13% worker
    each at ~110 steps/s per tab, the trainer the rest); two tabs a core keep the cores busy
    without starving the trainer. Memory: what is available above the floor, at TAB_COST_MB a tab.
    """
    cores = cores or os.cpu_count() or 1
    available_mb = psutil.virtual_memory().available / MB if available_mb is None else available_mb
    by_cores = max(min(TABS_PER_CORE * cores, AUTO_MAX_ENVS), 1)
    by_memory = max_envs_for_memory(available_mb, floor_mb, vec_env)
    n = max(min(by_cores, by_memory), 1)
    limit = "cores" if by_cores <= by_memory else "memory"
    why = (
        f"--envs auto: {n} tab{'' if n == 1 else 's'} ({cores} cores allow {by_cores} at {TABS_PER_CORE} a core, capped at {AUTO_MAX_ENVS}; "
        f"{available_mb:,.0f} MB available minus the {floor_mb:,.0f} MB floor and {BASE_COST_MB} MB for the trainer and "
        f"browser allow {by_memory} at about {tab_cost_mb(vec_env)} MB a tab with the {vec_env} vec env; {limit} decide)"
    )
    return n, why


def memory_refusal(
    envs: int,
    available_mb: float | None = None,
    floor_mb: float = DEFAULT_MEMORY_FLOOR_MB,
    vec_env: str = DEFAULT_VEC_ENV,
) -> str | None:
    """Why `envs` tabs must not be opened with the memory there is, or None when they fit."""
    if floor_mb <= 0:
        return None
    available_mb = psutil.virtual_memory().available / MB if available_mb is None else available_mb
    fits = max_envs_for_memory(available_mb, floor_mb, vec_env)
    if envs <= fits:
        return None
    per_tab = tab_cost_mb(vec_env)
    need = BASE_COST_MB + envs * per_tab
    advice = f"Use --envs {fits} or fewer, close other programs" if fits else "Not even one tab fits: close other programs"
    return (
        f"--envs {envs} needs about {need:,} MB ({BASE_COST_MB} MB + {per_tab} MB a tab) and would leave less than "
        f"the memory floor of {floor_mb:,.0f} MB: {available_mb:,.0f} MB are available. {advice}, or lower the floor "
        "with --memory-floor-mb"
    )


def trainer_threads(cores: int | None = None, envs: int = 1) -> int:
    """Torch threads for the trainer: a core for each tab first, torch gets what is left (1 to 4).

    Measured on 2 cores (shared, load average 7-10), one run each, iterations interleaved:
    2 tabs, subproc vec env: 226 steps/s with 1 torch thread, 36 with 2 (update 1.8 s against
    19.8 s; rollout 370 against 126 steps/s: idle OpenMP threads spin on the cores the tabs
    need); 4 tabs: 216 against 34 steps/s; 2 tabs, inline vec env: 287 against 43 steps/s
    (update 0.6 s against 10 s). PPO's update alone, no tabs: 3.3 s with 1 thread, 3.1-12.8 s
    with 2. The policy is a small MLP trained in minibatches of 64, which a second thread
    barely speeds up even on an idle core.
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(4, cores - envs))


# ---- one run's monitoring, wired ---------------------------------------------------------
class NotEnoughMemory(RuntimeError):
    pass


class Monitoring:
    """The sampler, the live view and the TensorBoard hook of one run, started and stopped together."""

    def __init__(
        self,
        settings: MonitorSettings,
        fleet: Any,
        venv: Any,
        run_dir: Path,
        run_info: dict[str, Any],
        progress: str,
        events: Callable[..., None],
        say: Callable[[str], None],
    ) -> None:
        from orchestrator.live_view import LiveView, choose_mode

        def recycle(index: int, why: str) -> None:
            say(f"[Monitor] tab {index + 1}: {why}; replacing it at its next episode boundary")
            fleet.request_recycle(index, why)

        self.sampler = ResourceSampler(
            fleet_sources(fleet, venv), settings, run_dir, run_info, recycle,
            warn=lambda message: events("warning", {"message": message}),
        )
        self.view = LiveView(choose_mode(settings.live, progress), say)
        self.sampler.listeners.append(self.view)

    def start(self) -> None:
        self.view.start()
        self.sampler.start()

    def running(self) -> None:
        self.sampler.state = "running"

    def on_steps(self, steps: int) -> None:
        self.sampler.note_steps(steps)

    def note_training(self, kind: str, fields: dict[str, Any]) -> None:
        """A trainer event: `progress` brings the task metrics, `reward_gaming` the verdict, into
        status.json (and so the live view and `lunarfleet status`) from the next sample on."""
        if kind == "progress" and fields.get("task") is not None:
            self.sampler.training = {**self.sampler.training, "task": fields["task"]}
            if fields.get("reward_gaming_now"):  # the warning's figures, refreshed
                self.sampler.training["reward_gaming"] = fields["reward_gaming_now"]
        elif kind == "reward_gaming":
            self.sampler.training = {**self.sampler.training, "reward_gaming": dict(fields)}

    def callbacks(self) -> list[Any]:
        """SB3 callbacks: the latest sample as `resources/...` TensorBoard scalars."""
        from training.trainer import LatestScalars

        sampler = self.sampler
        return [LatestScalars(lambda: tensorboard_scalars(sampler.latest) if sampler.latest else None)]

    def finish(self, state: str, extra: dict[str, Any] | None = None) -> None:
        """A last sample, the final status.json, and the live view's last frame."""
        try:
            self.sampler.stop(final_state=state, extra=extra)
        finally:
            self.view.stop()
