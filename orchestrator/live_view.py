"""The fleet at a glance while training: a per-tab table on a terminal, plain lines otherwise.

On a terminal the table is a rich `Live` region, redrawn in place after every sample. SB3's
progress bar (tqdm.rich) opens its own `Live` on the same console; rich nests it, so the bar
is drawn right under the table and everything printed meanwhile scrolls by above both. When
the output is not a terminal (CI, a log file), a block of plain `[Monitor]` lines is printed
every `lines_every_s` instead. `lunarfleet status` prints the same table from status.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.sample import Sample

LINES_EVERY_S = 30.0
COLUMNS = ("tab", "port", "state", "steps/s", "restarts", "CPU %", "PSS MB", "USS MB")


def _mb(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def summary_lines(status: dict[str, Any], now: float | None = None) -> list[str]:
    """The run, the machine, the trainer side and Chromium, in three lines."""
    system = status.get("system", {})
    target = status.get("target_timesteps")
    steps = f"{status.get('timesteps', 0):,}" + (f" / {target:,}" if target else "")
    head = f"run {status.get('run_id', '?')} · {status.get('state', '?')} · {steps} steps · {status.get('fps') or 0:,.0f} steps/s"
    head += f" · {_duration(status.get('elapsed_s') or 0)}"
    updated = status.get("updated") or status.get("time")
    if now is not None and updated:
        head += f" · updated {_duration(max(now - updated, 0))} ago"
    workers = [w for w in status.get("workers", []) if w.get("alive")]
    trainer, browser, helpers = status.get("trainer", {}), status.get("browser", {}), status.get("helpers", {})
    machine = (
        f"machine: CPU {system.get('cpu_percent', 0):.0f}% of {system.get('cores', 0):.0f} cores · "
        f"{system.get('mem_available_mb', 0):,.0f} MB of {system.get('mem_total_mb', 0):,.0f} MB available"
    )
    envs = (
        f"{len(workers)} env workers: CPU {sum(w.get('cpu_percent', 0) for w in workers):.0f}% "
        f"RSS {_mb(sum(w.get('rss_mb', 0) for w in workers))} MB"
        if workers or status.get("vec_env") != "inline" else "envs run inside the trainer (inline)"
    )
    chromium = (
        f"Chromium: CPU {browser.get('cpu_percent', 0) + helpers.get('cpu_percent', 0):.0f}% "
        f"PSS {_mb(status.get('chromium_pss_mb'))} MB"
    )
    if status.get("ray"):  # the tabs' processes are on the hosts' machines, not sampled here
        machines = status.get("machines") or []
        envs = f"tabs on {len(machines)} Ray hosts (--ray {status['ray']})"
        chromium = "the hosts' processes are not sampled"
    sides = f"trainer: CPU {trainer.get('cpu_percent', 0):.0f}% RSS {_mb(trainer.get('rss_mb'))} MB · {envs} · {chromium}"
    return [head, machine, sides]


def task_lines(status: dict[str, Any]) -> list[str]:
    """Beside the reward, what the episodes achieved (training/task_metrics.py), and the reward-gaming
    warning while it holds; nothing before the trainer's first progress report."""
    task = status.get("task")
    if not task:
        return []
    from training.task_metrics import TaskSummary

    reward = task.get("mean_reward")
    shown = f"{reward:,.1f}" if isinstance(reward, (int, float)) else "n/a"
    lines = [f"episodes (last {task.get('episodes', 0)}): mean reward {shown} · {TaskSummary.from_json(task).short()}"]
    gaming = status.get("reward_gaming") or {}
    if gaming.get("gaming"):
        lines.append(f"! {gaming.get('message')}")
    return lines


def table_lines(status: dict[str, Any]) -> list[str]:
    """The per-tab table: a header and one row per tab."""
    widths = (4, 6, 11, 8, 8, 6, 7, 7)
    header = " ".join(f"{c:>{w}}" if i != 2 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(COLUMNS, widths, strict=True)))
    lines = [header]
    host = None
    for row in status.get("tabs", []):
        if row.get("host") is not None and row["host"] != host:  # --ray: the tabs grouped by host
            host = row["host"]
            lines.append(f"host {host}" + (f" ({status['machines'][host - 1]})" if len(status.get("machines") or []) >= host else ""))
        cells = (  # .get: status files of other commands (e.g. `lunarfleet tabs`) hold fewer fields
            str(row.get("tab", "?")), str(row.get("port", "?")), str(row.get("state", "?")),
            f"{row.get('steps_per_s', 0):,.1f}", str(row.get("restarts", 0)), f"{row.get('cpu_percent', 0):.1f}",
            _mb(row.get("pss_mb")), _mb(row.get("uss_mb")),
        )
        lines.append(" ".join(f"{c:>{w}}" if i != 2 else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
    return lines


def render(status: dict[str, Any], now: float | None = None) -> str:
    lines = summary_lines(status, now) + task_lines(status) + table_lines(status)
    lines += [f"! {w}" for w in status.get("warnings", [])]
    return "\n".join(lines)


def monitor_lines(status: dict[str, Any]) -> list[str]:
    """The plain-output form: one line for the machine and trainer, one per tab."""
    head, machine, sides = summary_lines(status)
    lines = [f"[Monitor] {machine} · {sides}"] + [f"[Monitor] {line}" for line in task_lines(status)]
    for row in status.get("tabs", []):
        on = f"host {row['host']} " if row.get("host") is not None else ""
        lines.append(
            f"[Monitor] {on}tab {row['tab']} (port {row['port']}) {row['state']}: {row['steps_per_s']:,.0f} steps/s, "
            f"{row['restarts']} restarts, CPU {row['cpu_percent']:.0f}%, PSS {_mb(row.get('pss_mb'))} MB"
        )
    return lines


def choose_mode(live: str, progress: str) -> str:
    """auto: the table on a terminal (unless --progress lines asked for plain output), else lines."""
    if live != "auto":
        return live
    return "table" if sys.stdout.isatty() and progress != "lines" else "lines"


class LiveView:
    """Shows each sample: `mode` is "table" (a terminal), "lines" (anything else) or "off"."""

    def __init__(self, mode: str, say: Callable[[str], None] = print, lines_every_s: float = LINES_EVERY_S) -> None:
        self.mode = mode
        self.say = say
        self.lines_every_s = lines_every_s
        self._last_lines: float | None = None
        self._live: Any = None

    def start(self) -> None:
        if self.mode != "table":
            return
        from rich import get_console
        from rich.live import Live
        from rich.text import Text

        # The global console: SB3's tqdm.rich bar uses it too, so rich nests the bar under us.
        self._live = Live(Text("waiting for the first resource sample..."), console=get_console(),
                          auto_refresh=False, redirect_stdout=True, redirect_stderr=True, transient=False)
        self._live.start(refresh=True)

    def __call__(self, sample: Sample, status: dict[str, Any]) -> None:
        if self.mode == "table" and self._live is not None:
            from rich.text import Text

            self._live.update(Text(render(status)), refresh=True)
        elif self.mode == "lines":
            now = time.monotonic()
            final = status.get("state") not in ("starting", "running")
            due = self._last_lines is None or now - self._last_lines >= self.lines_every_s
            if due or status.get("warnings") or final:
                self._last_lines = now
                for line in monitor_lines(status):
                    self.say(line)

    def stop(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        with contextlib.suppress(Exception):
            # A progress bar left open by an interrupted learn() sits above ours on the stack.
            stack = live.console._live_stack
            while stack and stack[-1] is not live:
                stack[-1].stop()
        with contextlib.suppress(Exception):
            live.stop()
