"""`lunarfleet bench`, (a) collection with a random policy: one simulation per tab for each tab
count and vec env kind, K simulations per tab (`inline-simsK`); and (b) the same number of envs
through the null env (`training/null_env.py`), the ceiling each row is compared with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.bench_meters import collect
from orchestrator.bench_results import MAX_EPISODE_STEPS, STARTUP_TABS, Row
from orchestrator.bench_startup import measure_memory, measure_workers, timed_startup
from training.null_env import NullVecEnv

if TYPE_CHECKING:
    from orchestrator.bench_session import Bench


# ---- (a) one simulation per tab ----------------------------------------------------------------
def single_sim_phase(bench: Bench) -> None:
    """(d)(e)(a): one browser for the most tabs, its start-up timed and its memory measured, then
    a row per tab count and vec env kind."""
    tabs = sorted(set(bench.s.tabs), reverse=True)
    with timed_startup(bench, max(STARTUP_TABS, max(tabs))) as (pool, startup_venv):
        if "inline" in bench.s.kinds and STARTUP_TABS in tabs:
            bench.row("inline", STARTUP_TABS, 1, startup_venv)
        else:
            collect(startup_venv, 0.5, 0.0)
        measure_memory(bench, pool)
        startup_venv.close()
        _one_sim_rows(bench, tabs)


def _one_sim_rows(bench: Bench, tabs: list[int]) -> None:
    for n in tabs:
        for kind in bench.s.kinds:
            if kind == "inline" and n == STARTUP_TABS:
                continue  # measured with the start-up's vec env
            with bench.vec_env(n, kind, 1) as venv:
                bench.row(kind, n, 1, venv)
                if kind == "subproc" and n == max(tabs):
                    measure_workers(bench, venv)


# ---- (a) K simulations per tab -----------------------------------------------------------------
def batched_phase(bench: Bench, k: int) -> None:
    """A row per tab count, each tab's page running `k` simulations (the inline vec env)."""
    with bench.browser(max(bench.s.tabs), extra=f"&sims={k}"):
        for n in sorted(set(bench.s.tabs)):
            with bench.vec_env(n, "inline", k) as venv:
                bench.row(f"inline-sims{k}", n, k, venv)


# ---- (b) the null env ceiling ------------------------------------------------------------------
def ceiling_phase(bench: Bench) -> None:
    """A null row for each number of envs measured, and each row's share of its ceiling."""
    rows = bench.result.rows
    for envs in sorted({row.envs for row in rows}):
        rate = null_rate(bench, envs)
        rows.append(Row("null", 0, 1, envs, round(rate, 1), 1.0, note="ceiling: in-process null env"))
        bench.say(f"[Bench]   {'null':<14} {envs:>3} envs: {rate:>9,.0f} env-steps/s")
    for row in rows:
        if row.mode != "null" and row.envs in bench.null_rates:
            row.ratio_to_ceiling = float(f"{row.steps_per_s / bench.null_rates[row.envs]:.4g}")


def null_rate(bench: Bench, envs: int) -> float:
    if envs not in bench.null_rates:
        venv = NullVecEnv(envs, MAX_EPISODE_STEPS)
        window = min(bench.s.seconds, 1.0) / 3
        bench.null_rates[envs] = max(collect(venv, window, 0.1)[0] for _ in range(3))  # a ceiling: the best of three
    return bench.null_rates[envs]
