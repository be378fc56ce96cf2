"""`lunarfleet bench`, the floor: what a step costs when the page does nothing.

The echo page (`webapp/echo.html`) answers each `action` with a fixed reply of the rover page's
shape, through the product's own transport (`make_vec_env`, the inline vec env, `TabLink`), for
1 and 4 tabs: round trips per second and CPU per round trip, Python's and Chromium's by process
type. Every collection row is then also given as a ratio to this floor (`summarise`), so the
plumbing's share of a step is visible in the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.bench_table import by_type_text

if TYPE_CHECKING:
    from orchestrator.bench_results import Row
    from orchestrator.bench_session import Bench

FLOOR_PAGE = "echo.html"
FLOOR_TABS = (1, 4)


def floor_phase(bench: Bench) -> None:
    """A `floor` row for 1 and 4 tabs of the echo page."""
    with bench.browser(max(FLOOR_TABS), page=FLOOR_PAGE):
        for n in FLOOR_TABS:
            with bench.vec_env(n, "inline", 1) as venv:
                row = bench.row("floor", n, 1, venv)
                row.note = "echo page: the transport alone"
    rows = {row.tabs: row for row in bench.result.rows if row.mode == "floor"}
    if 4 in rows:
        bench.result.floor = {**floor_figures(rows[4]), "tabs": 4}
        if 1 in rows:
            bench.result.floor["one_tab"] = floor_figures(rows[1])
        f = bench.result.floor
        bench.say(f"[Bench]   floor, 4 tabs: {f['round_trips_per_s']:,.0f} round trips/s, {f['python_us']:.0f} us Python "
                  f"and {f['browser_us']:.0f} us Chromium per round trip ({by_type_text(f['browser_us_by_type'])})")


def floor_figures(row: Row) -> dict[str, Any]:
    return {
        "round_trips_per_s": row.steps_per_s,
        "python_us": row.python_cpu_ms_per_1k,
        "browser_us": row.browser_cpu_ms_per_1k,
        "browser_us_by_type": row.browser_cpu_by_type,
    }

