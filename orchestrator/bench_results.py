"""`lunarfleet bench`'s settings, its result (rows and figures, as in `--json`), and the summary
drawn from the rows at the end: the best 4-tab collection, the faster vec env kind, real-time
versus lock-step, and each target met or missed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STARTUP_TABS = 8
MAX_EPISODE_STEPS = 1000
TARGETS = {
    "collection_4_tabs": 8000.0,  # env-steps/s, at least
    "ppo_ratio": 0.9,  # PPO fps with tabs / with the null env, at least
    "startup_s_8_tabs": 5.0,  # at most
    "pss_mb_per_tab": 60.0,  # at most
    "dashboard_cost_percent": 2.0,  # at most: --dashboard's extra CPU at 8 tabs, % of the run's
}


@dataclass
class BenchSettings:
    quick: bool = False
    tabs: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    sims: list[int] = field(default_factory=lambda: [8, 32, 64])  # K of the batched rows
    kinds: list[str] = field(default_factory=lambda: ["inline", "subproc"])
    seconds: float = 4.0  # measuring window of each collection row
    warmup_s: float = 1.0
    ppo: bool = True
    ppo_tabs: int = 4
    ppo_sims: int | None = None  # None: the K that collected fastest with ppo_tabs tabs
    ppo_rollout: int = 8192  # samples per PPO rollout (n_steps = rollout / envs)
    ppo_rollouts: int = 3
    original_n_steps: int = 2048  # PPO at the original settings: n_steps per env (2,048 is the original app's)
    ppo_single_sim: bool = True  # also PPO over one simulation per tab, per vec env kind (slow)
    realtime_tabs: list[int] = field(default_factory=lambda: [1])  # more tabs share one window: hidden ones get no frames
    vec_env_start: bool = True  # (d) also: seconds to start each vec env kind for 8 tabs, workers without preloading (slow)
    ray: str | None = "local"  # (g) the Ray hosts' row: None skips it; "local", "auto" or HOST:PORT
    ray_hosts: int = 2
    ray_tabs_per_host: int = 2
    dashboard: bool = True  # (i) the dashboard's CPU cost at 8 tabs
    floor: bool = True  # (h) the echo page's rows
    profile_dir: Path | None = None  # (p) profiles of each side at 4 tabs x 1 simulation go here
    base_port: int = 8765
    app_port: int = 4200
    browser: str | None = None
    json_path: Path | None = None

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchSettings:
        base = cls(
            quick=True, sims=[64], seconds=1.5, warmup_s=0.4, ppo_rollout=4096, ppo_rollouts=2, ppo_single_sim=False,
            realtime_tabs=[1], vec_env_start=False,
        )
        for key, value in overrides.items():
            setattr(base, key, value)
        return base


@dataclass
class Row:
    mode: str  # inline, subproc, inline-simsK, null, realtime, ppo-tabs, ppo-null
    tabs: int
    sims_per_tab: int
    envs: int
    steps_per_s: float
    ratio_to_ceiling: float | None = None
    python_cpu_ms_per_1k: float | None = None  # CPU of this process and its Python workers
    browser_cpu_ms_per_1k: float | None = None  # CPU of Chromium and the Playwright driver
    ray_cpu_ms_per_1k: float | None = None  # CPU of the Ray host actors' Python and Ray's own processes
    note: str = ""
    # ms per 1000 env-steps (= us per step) of each Chromium process type (bench_meters.process_kind)
    browser_cpu_by_type: dict[str, float] = field(default_factory=dict)
    # this row against the floor (the echo page, bench_floor.py) at its tab count (4 tabs' floor
    # for other counts): steps_per_s / round trips per s, and CPU per step / the floor's
    x_floor: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchResult:
    rows: list[Row] = field(default_factory=list)
    startup_s_8_tabs: float | None = None
    pool_ready_s_8_tabs: float | None = None
    startup: dict[str, Any] = field(default_factory=dict)  # (d) broken down, seconds after launch
    vec_env_start_s_8_tabs: dict[str, float] = field(default_factory=dict)  # until its ports listen (pages can connect)
    pss_mb_per_tab: float | None = None
    pss_mb_per_tab_max: float | None = None
    pss_mb_browser_shared: float | None = None
    pss_mb_per_subproc_worker: float | None = None  # what --vec-env subproc adds per tab (forked from a preloaded server)
    pss_mb_per_subproc_worker_as_train: float | None = None  # (full) workers started as `train` starts them
    # the floor: the echo page through the same transport, 4 tabs (1 tab under "one_tab"):
    # round_trips_per_s, python_us and browser_us per round trip, browser_us_by_type
    floor: dict[str, Any] = field(default_factory=dict)
    per_step_cpu_us: dict[str, Any] = field(default_factory=dict)  # trainer, browser at 4 tabs x 1 simulation (+ x floor)
    ppo_original_settings: dict[str, Any] = field(default_factory=dict)  # 4 tabs x 1, n_steps 2,048: with_tabs, with_null_env fps, ratio
    ppo_original_settings_packed: dict[str, Any] = field(default_factory=dict)  # the same 4 envs in 2 tabs x 2 simulations
    ppo_original_settings_one_tab: dict[str, Any] = field(default_factory=dict)  # the same 4 envs in 1 tab x 4 simulations
    ppo_fps_tabs: float | None = None
    ppo_fps_null: float | None = None
    ppo_ratio: float | None = None
    ppo_ratio_same_training: float | None = None  # the ratio if both runs' training had taken the same time
    ppo: dict[str, Any] = field(default_factory=dict)
    collection_4_tabs: dict[str, Any] = field(default_factory=dict)
    realtime: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    fastest_kind: str | None = None  # inline, subproc or tie (within 10%), one simulation per tab
    # (g) tabs through Ray hosts: steps_per_s, pairs and ratio_to_inline (alternating windows with the
    # inline vec env, as many tabs), ray_start_s, hosts_ready_s; or skipped (why)
    ray: dict[str, Any] = field(default_factory=dict)
    ray_ppo: dict[str, Any] = field(default_factory=dict)  # (g) PPO through the Ray hosts (fps, n_steps, collect_s, train_s)
    # (i) --dashboard at 8 tabs: steps/s and CPU ms per 1000 steps without and with it, cost_percent
    dashboard: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- the summary ---------------------------------------------------------------------------------
def summarise(r: BenchResult) -> None:
    """The figures drawn from the rows, then each target's verdict."""
    collecting = [row for row in r.rows if row.mode in ("inline", "subproc") or row.mode.startswith("inline-sims")]
    _best_four_tabs(r, collecting)
    _fastest_kind(r, collecting)
    _realtime_against_lockstep(r, collecting)
    _against_floor(r)
    _check_targets(r)


def _best_four_tabs(r: BenchResult, collecting: list[Row]) -> None:
    four = [row for row in collecting if row.tabs == 4]
    if four:
        best = max(four, key=lambda row: row.steps_per_s)
        r.collection_4_tabs = {"mode": best.mode, "envs": best.envs, "steps_per_s": best.steps_per_s}


def _fastest_kind(r: BenchResult, collecting: list[Row]) -> None:
    by_kind: dict[str, list[float]] = {}
    for row in collecting:
        if row.mode in ("inline", "subproc"):
            by_kind.setdefault(row.mode, []).append(row.steps_per_s)
    if len(by_kind) == 2 and len(by_kind["inline"]) == len(by_kind["subproc"]):
        # one simulation per tab, summed over the tab counts; within 10% is a tie
        inline, subproc = sum(by_kind["inline"]), sum(by_kind["subproc"])
        r.fastest_kind = "tie" if abs(inline - subproc) <= 0.1 * max(inline, subproc) else "inline" if inline > subproc else "subproc"


def _realtime_against_lockstep(r: BenchResult, collecting: list[Row]) -> None:
    for row in (row for row in r.rows if row.mode == "realtime"):
        lock = next((x for x in collecting if x.mode == "inline" and x.tabs == row.tabs), None)
        if lock is not None:
            r.realtime[f"{row.tabs}_tabs"] = {
                "realtime_steps_per_s": row.steps_per_s,
                "lockstep_steps_per_s": lock.steps_per_s,
                "lockstep_gain": round(lock.steps_per_s / max(row.steps_per_s, 1e-9), 1),
            }


def _against_floor(r: BenchResult) -> None:
    """Each row's rate and CPU per step as a ratio to the floor at its tab count (else 4 tabs'),
    and `per_step_cpu_us` at 4 tabs x 1 simulation."""
    floors = {row.tabs: row for row in r.rows if row.mode == "floor"}
    if not floors:
        return
    for row in r.rows:
        floor = floors.get(row.tabs) or floors.get(4) or next(iter(floors.values()))
        if row.mode == "floor" or row.mode.startswith("ppo") or not row.tabs:
            continue  # PPO rows count trained steps, not round trips
        row.x_floor = {
            key: round(mine / theirs, 3)
            for key, mine, theirs in (
                ("steps_per_s", row.steps_per_s, floor.steps_per_s),
                ("python", row.python_cpu_ms_per_1k, floor.python_cpu_ms_per_1k),
                ("browser", row.browser_cpu_ms_per_1k, floor.browser_cpu_ms_per_1k),
            )
            if mine is not None and theirs
        }
    four = next((row for row in r.rows if row.mode == "inline" and row.tabs == 4 and row.sims_per_tab == 1), None)
    if four is not None:
        r.per_step_cpu_us = {
            "trainer": four.python_cpu_ms_per_1k,
            "browser": four.browser_cpu_ms_per_1k,
            "browser_by_type": four.browser_cpu_by_type,
            "steps_per_s": four.steps_per_s,
            "x_floor": four.x_floor,
        }


def _check_targets(r: BenchResult) -> None:
    checks = {
        "collection_4_tabs": (r.collection_4_tabs.get("steps_per_s"), ">="),
        "ppo_ratio": (r.ppo_ratio, ">="),
        "startup_s_8_tabs": (r.startup_s_8_tabs, "<="),
        "pss_mb_per_tab": (r.pss_mb_per_tab, "<="),
        "dashboard_cost_percent": (r.dashboard.get("cost_percent"), "<="),
    }
    for name, (value, op) in checks.items():
        target = TARGETS[name]
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        r.targets[name] = {"value": value, "target": f"{op} {target:g}", "met": met}
