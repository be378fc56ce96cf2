"""`lunarfleet bench`, (i): what `--dashboard` costs, at 8 tabs.

One browser of 8 tabs collects with a random policy in windows taken in turn without and with the
dashboard: its server, the thumbnails of every tab (orchestrator/thumbnails.py) and a viewer that
reads the push channel and fetches each new picture, as a page does.

Two figures: the run's CPU (this process, Chromium, the driver) per 1000 env-steps without and with
it, the windows in turn so that a machine getting busier or quieter weighs on both sides alike; on
a shared machine their difference is mostly noise, which is printed beside it. And the dashboard's
own CPU, counted where it is spent: the pages' time drawing and encoding the pictures (timed in the
page), the server's and the thumbnails' Python threads (thread CPU time), and what the Playwright
driver, which relays the pictures, used more than without it; as a share of the run's CPU with it
on. That one is the cost the target (at most 2 %) is checked against.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from orchestrator.bench_meters import collect
from orchestrator.bench_results import Row
from orchestrator.dashboard import Dashboard
from orchestrator.thumbnails import THUMBNAILS_DIR, Thumbnailer

if TYPE_CHECKING:
    from browser_pool.pool import TabPool
    from orchestrator.bench_session import Bench

TABS = 8
PAIRS = 2  # windows without and with, in turn


def dashboard_phase(bench: Bench) -> None:
    s = bench.s
    window = max(2 * s.seconds, 4.0)  # a few rounds of thumbnails (a tab every EVERY_S / 8 s)
    off: list[Window] = []
    on: list[Window] = []
    own = {"pages": 0.0, "thumbnails": 0.0, "server": 0.0}  # the dashboard's own CPU seconds, where spent
    on_s = 0.0  # wall seconds the dashboard was on
    pictures = 0
    with bench.browser(TABS) as (pool, _), bench.vec_env(TABS, "inline", 1) as venv, \
            tempfile.TemporaryDirectory(prefix="lunarfleet-bench-dashboard-") as folder:
        for _ in range(PAIRS):
            off.append(_window(bench, venv, window, pool.driver_pid))
            began = time.monotonic()
            with _dashboard_on(bench, pool, Path(folder)) as (dashboard, thumbnailer):
                on.append(_window(bench, venv, window, pool.driver_pid))
            on_s += time.monotonic() - began
            own["pages"] += thumbnailer.page_ms / 1000
            own["thumbnails"] += thumbnailer.python_s
            own["server"] += dashboard.cpu_s
            pictures += thumbnailer.taken
    cpu_off, cpu_on = _mean(w.cpu_ms_per_1k for w in off), _mean(w.cpu_ms_per_1k for w in on)
    rate_off, rate_on = _mean(w.steps_per_s for w in off), _mean(w.steps_per_s for w in on)
    # The driver relays each picture from its page; it does next to nothing else while tabs collect.
    driver_extra = max(_mean(w.driver_cores for w in on) - _mean(w.driver_cores for w in off), 0.0)
    own_s = sum(own.values())
    run_cores = cpu_on * rate_on / 1e6  # CPU seconds per second of everything, with the dashboard on
    direct = 100 * (own_s / on_s + driver_extra) / run_cores
    spread = 100 * (max(w.cpu_ms_per_1k for w in off) - min(w.cpu_ms_per_1k for w in off)) / cpu_off
    r = bench.result
    r.dashboard = {
        "tabs": TABS, "window_s": window, "pairs": PAIRS, "pictures_taken": pictures,
        "steps_per_s_without": round(rate_off, 1), "steps_per_s_with": round(rate_on, 1),
        "cpu_ms_per_1k_without": round(cpu_off, 1), "cpu_ms_per_1k_with": round(cpu_on, 1),
        "difference_percent": round(100 * (cpu_on - cpu_off) / cpu_off, 2),
        "noise_percent": round(spread, 2),  # between the windows without it
        "own_cpu_percent_of_a_core": round(100 * own_s / on_s, 2), "driver_extra_percent_of_a_core": round(100 * driver_extra, 2),
        "own_cpu_s": {k: round(v, 3) for k, v in own.items()}, "on_s": round(on_s, 1),
        "cost_percent": round(direct, 2),
    }
    for mode, windows in (("dashboard-off", off), ("dashboard-on", on)):
        r.rows.append(Row(mode, TABS, 1, TABS, round(_mean(w.steps_per_s for w in windows), 1),
                          note=f"CPU {_mean(w.cpu_ms_per_1k for w in windows):,.1f} ms per 1000 steps, all processes"))
    d = r.dashboard
    bench.say(f"[Bench]   dashboard at {TABS} tabs: its own CPU {direct:.2f} % of the run's; CPU per 1000 steps "
              f"{cpu_off:,.1f} ms without, {cpu_on:,.1f} ms with ({d['difference_percent']:+.1f} %, windows differ by "
              f"{spread:.1f} % among themselves), {pictures} pictures")


@dataclass
class Window:
    steps_per_s: float
    cpu_ms_per_1k: float  # every process of the run
    driver_cores: float  # the Playwright driver's CPU seconds per second


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _window(bench: Bench, venv: object, seconds: float, driver_pid: int | None) -> Window:
    driver = _cpu_s(driver_pid)
    began = time.monotonic()
    rate, cpu = collect(venv, seconds, bench.s.warmup_s, bench.meter)  # type: ignore[arg-type]
    return Window(rate, sum(cpu.values()), (_cpu_s(driver_pid) - driver) / (time.monotonic() - began))


def _cpu_s(pid: int | None) -> float:
    with contextlib.suppress(psutil.Error, TypeError, ValueError):
        times = psutil.Process(pid).cpu_times()  # type: ignore[arg-type]
        return times.user + times.system
    return 0.0


@contextlib.contextmanager
def _dashboard_on(bench: Bench, pool: TabPool, folder: Path) -> Iterator[tuple[Dashboard, Thumbnailer]]:
    """The dashboard of a run folder, the thumbnails of `pool`'s tabs and one viewer, for the block."""
    thumbnailer = Thumbnailer(pool, folder / THUMBNAILS_DIR)
    thumbnailer.start(bench.loop.loop)
    dashboard = Dashboard(folder, 0, thumbnailer=thumbnailer)
    viewer = threading.Thread(target=_view, args=(dashboard.port, dashboard.token), daemon=True, name="bench-viewer")
    viewer.start()
    try:
        yield dashboard, thumbnailer
    finally:
        dashboard.close()  # stops the thumbnails too; the viewer's stream ends
        viewer.join(10)


def _view(port: int, token: str) -> None:
    """A page's work: read the push channel, fetch each new picture."""
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pictures = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with contextlib.suppress(OSError, http.client.HTTPException):
        stream.request("GET", f"/stream?token={token}")
        response = stream.getresponse()
        kind = ""
        for raw in response.fp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: ") and kind == "thumbs":
                for tab, version in json.loads(line[len("data: "):]).items():
                    pictures.request("GET", f"/files/thumbnails/tab-{tab}.jpg?token={token}&v={version}")
                    pictures.getresponse().read()
                    pictures.close()  # the server speaks HTTP/1.0: one request per connection
    stream.close()
