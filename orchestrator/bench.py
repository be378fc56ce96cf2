"""`lunarfleet bench`: where the time goes, measured in one run on this machine.

(a) collection steps/s with a random policy for 1, 2, 4 and 8 tabs, per vec env kind
    (`inline`, `subproc`) and with K simulations per tab (`inline-simsK`);
(b) the same number of envs through the null env (`training/null_env.py`): the ceiling;
(c) PPO training fps with tabs versus the null env, at identical settings;
(d) seconds from launching the browser to all 8 tabs connected;
(e) memory per tab: PSS of each tab's renderer process;
(f) the embedded page in real-time mode (`realtime=1`, one step per 60 Hz frame, as the
    original app) next to lock-step;
(g) the same number of tabs through Ray hosts (`--ray local --hosts 2`) against inline, and
    Ray's start-up (`bench_ray.py`);
(h) the floor: a page that only echoes (`webapp/echo.html`) through the same transport, 1 and 4
    tabs; every row is also given as a ratio to it (`bench_floor.py`);
(i) the CPU `--dashboard` costs at 8 tabs, without and with it in turn (`bench_dashboard.py`);
(p) with `--profile DIR`: profiles of each side at 4 tabs x 1 simulation (`bench_profile.py`).

Rows are measured one after another with the same code path as `train` (`make_vec_env`),
so on a shared machine compare ratios from one run, not absolute numbers across runs.

Here: the phases in order; what they use (one browser of tabs, one vec env, one row) is
`bench_session.py`. Each measurement is in its own module: (d)(e) `bench_startup.py`; (a)(b) `bench_collection.py`;
(f) `bench_realtime.py`; (c) `bench_ppo.py`; the meters in `bench_meters.py`; settings, rows
and the summary (targets) in `bench_results.py`; the printed table in `bench_table.py`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from orchestrator.bench_collection import batched_phase, ceiling_phase, single_sim_phase
from orchestrator.bench_dashboard import dashboard_phase
from orchestrator.bench_floor import floor_phase
from orchestrator.bench_ppo import ppo_phase
from orchestrator.bench_profile import profile_phase
from orchestrator.bench_ray import ray_phase
from orchestrator.bench_realtime import realtime_phase
from orchestrator.bench_results import BenchResult, BenchSettings, summarise
from orchestrator.bench_session import Bench
from orchestrator.bench_startup import vec_env_start_phase
from orchestrator.bench_table import table
from orchestrator.events import say


def _run(bench: Bench) -> BenchResult:
    began = time.monotonic()
    s, r = bench.s, bench.result
    r.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    r.machine = {"cores": os.cpu_count(), "load_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        bench.set_up()
        _phases(bench)
    finally:
        bench.tear_down()
    summarise(r)
    r.machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    r.elapsed_s = round(time.monotonic() - began, 1)
    return r


def _phases(bench: Bench) -> None:
    s = bench.s
    _phase(bench, "(d)(e)(a) one simulation per tab", lambda: single_sim_phase(bench))
    if s.floor:
        _phase(bench, "(h) the floor: the echo page", lambda: floor_phase(bench))
    if s.profile_dir:
        _phase(bench, f"(p) profiles at 4 tabs x 1 simulation into {s.profile_dir}", lambda: profile_phase(bench, s.profile_dir))
    for k in s.sims:
        _phase(bench, f"(a)(c) {k} simulations per tab", lambda k=k: batched_phase(bench, k))
    if s.realtime_tabs:
        _phase(bench, "(f) real-time page", lambda: realtime_phase(bench))
    if s.vec_env_start:
        _phase(bench, "(d) vec env start-up per kind", lambda: vec_env_start_phase(bench))
    if s.ray:
        _phase(bench, f"(g) Ray hosts (--ray {s.ray})", lambda: ray_phase(bench))
    if s.dashboard:
        _phase(bench, "(i) dashboard", lambda: dashboard_phase(bench))
    _phase(bench, "(b) null env ceiling", lambda: ceiling_phase(bench))
    if s.ppo:
        _phase(bench, "(c) PPO", lambda: ppo_phase(bench))


def _phase(bench: Bench, name: str, fn: Callable[[], None]) -> None:
    """One phase; its failure is an error of the result, and the next phase runs."""
    bench.say(f"[Bench] {name}")
    try:
        fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        message = f"{name}: {type(exc).__name__}: {exc}"
        bench.result.errors.append(message)
        bench.say(f"[Bench] ! {message}")


def run_bench(settings: BenchSettings) -> int:
    bench = Bench(settings)
    result = _run(bench)
    say("")
    say(table(result))
    if settings.json_path:
        settings.json_path.parent.mkdir(parents=True, exist_ok=True)
        settings.json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        say(f"[Bench] wrote {settings.json_path}")
    return 1 if result.errors else 0
