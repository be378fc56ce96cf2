"""`lunarfleet bench --profile DIR`: where a step's time goes at 4 tabs x 1 simulation, each side.

Python: cProfile of the trainer's thread while a random policy steps: SB3's side (the vec env,
the step round) and, since that thread runs the tabs' asyncio loop while it waits for them
(`training/event_loop.py`), the sockets, JSON and `TabLink` too; `python.pstats` and its top
functions in `python-profile.txt`.
Chromium: a trace of the browser (`chromium-trace.json`, for Perfetto or chrome://tracing)
while the same stepping goes on, and its busy time per process and per event in
`chromium-profile.txt`. Each side is profiled in its own window: a profiler slows what it watches.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.bench_meters import collect

if TYPE_CHECKING:
    from orchestrator.bench_session import Bench

PROFILE_TABS = 4
TRACE_CATEGORIES = ["toplevel", "devtools.timeline", "v8.execute", "net", "mojom"]


def profile_phase(bench: Bench, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    seconds = max(bench.s.seconds, 3.0)
    with bench.browser(PROFILE_TABS) as (pool, _), bench.vec_env(PROFILE_TABS, "inline", 1) as venv:
        collect(venv, bench.s.warmup_s, 0.0)
        steps = _python_profile(venv, seconds, folder)
        bench.say(f"[Bench]   Python profile of {steps:,} env-steps: {folder / 'python-profile.txt'}")
        traced = asyncio.run_coroutine_threadsafe(pool.trace(seconds, TRACE_CATEGORIES), bench.loop.loop)
        rate, _ = collect(venv, seconds * 0.9, 0.0)
        trace = traced.result(timeout=seconds + 60)
    (folder / "chromium-trace.json").write_bytes(trace)
    (folder / "chromium-profile.txt").write_text(chromium_summary(json.loads(trace), rate * seconds))
    bench.say(f"[Bench]   Chromium trace: {folder / 'chromium-trace.json'}, summary {folder / 'chromium-profile.txt'}")


def _python_profile(venv: Any, seconds: float, folder: Path) -> int:
    profile = cProfile.Profile()
    profile.enable()
    rate, _ = collect(venv, seconds, 0.0)
    profile.disable()
    steps = int(rate * seconds)
    profile.dump_stats(folder / "python.pstats")
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    out.write(f"cProfile, {PROFILE_TABS} tabs x 1 simulation, ~{steps:,} env-steps in {seconds:.1f} s (slowed by the profiler)\n")
    # The thread waits for the pages inside the loop's epoll call: time, not CPU.
    waiting = sum(row[2] for (_, _, name), row in stats.stats.items() if "'poll' of 'select.epoll'" in name)  # type: ignore[attr-defined]
    busy = stats.total_tt - waiting
    out.write(f"==== the trainer's thread: {stats.total_tt:.3f} s, of it {waiting:.3f} s waiting for the pages (epoll); "
              f"{1e6 * busy / max(steps, 1):.0f} us busy per env-step ====\n")
    stats.sort_stats("tottime").print_stats(25)
    (folder / "python-profile.txt").write_text(out.getvalue())
    return steps


def chromium_summary(trace: dict[str, Any], steps: float) -> str:
    """Busy time per process (top-level tasks) and the events that take it, in us per env-step."""
    events = trace.get("traceEvents", [])
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    busy: dict[str, float] = defaultdict(float)
    by_event: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        process = names.get(e.get("pid"), str(e.get("pid")))
        if "toplevel" in e.get("cat", ""):
            busy[process] += e["dur"]
        else:
            by_event[(process, e.get("name", "?"))] += e["dur"]
    per = max(steps, 1.0)
    lines = [f"Chromium trace, {PROFILE_TABS} tabs x 1 simulation, ~{steps:,.0f} env-steps; us per env-step (wall time of tasks)",
             "", "busy (top-level tasks) per process:"]
    lines += [f"  {us / per:8.1f}  {process}" for process, us in sorted(busy.items(), key=lambda kv: -kv[1])]
    lines += ["", "events inside them (nested events counted in each of their parents):"]
    top = sorted(by_event.items(), key=lambda kv: -kv[1])[:30]
    lines += [f"  {us / per:8.1f}  {process}: {name}" for (process, name), us in top]
    return "\n".join(lines) + "\n"
