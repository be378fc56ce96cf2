"""The morning report: what happened in a run, as `report.json` and `report.png` in its folder.

Built only from the run's own files (`events.jsonl`, `resources.jsonl`, `summary.json`), so it
works for a finished run, a running one, and one that was killed. Beside the reward it shows
what the episodes achieved (the `task` of the progress events: orbs, collisions, episode
length; training/task_metrics.py) and says plainly when the run was reward gaming.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.samples_log import SAMPLES_FILE
from training.task_metrics import SHORT_FRACTION_OF_LIMIT, TaskSummary

RESTART_EVENTS = ("tab_replaced", "browser_restarted")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return records


def newest_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.glob("*") if (p / "events.jsonl").exists() or (p / "config.json").exists()]
    if not runs:
        raise FileNotFoundError(f"no run folders in {runs_dir}/")
    return max(runs, key=lambda p: p.stat().st_mtime)


def build_report(run_dir: Path) -> dict[str, Any]:
    events = read_jsonl(run_dir / "events.jsonl")
    samples = read_jsonl(run_dir / SAMPLES_FILE)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    progress = [e for e in events if e.get("event") == "progress"]
    counts: dict[str, int] = {}
    for e in events:
        counts[e.get("event", "?")] = counts.get(e.get("event", "?"), 0) + 1
    causes: dict[str, int] = {}
    for e in events:
        if e.get("event") == "tab_failed":
            causes[str(e.get("cause"))] = causes.get(str(e.get("cause")), 0) + 1
    tab_pss = _tab_memory(samples)
    report = {
        "run_dir": str(run_dir),
        "status": summary.get("status", "running or killed"),
        "timesteps": summary.get("timesteps") or (progress[-1]["steps"] if progress else 0),
        "episodes": summary.get("episodes") or (progress[-1].get("episodes", 0) if progress else 0),
        "fps_mean": round(sum(p["fps"] for p in progress) / len(progress), 1) if progress else None,
        "mean_reward_first": _first_reward(progress),
        "mean_reward_last": _last_reward(progress),
        "tab_restarts": sum(counts.get(k, 0) for k in RESTART_EVENTS),  # events: a relaunch counts once, not per tab
        "tab_failures_by_cause": causes,
        "trainer_restarts": counts.get("trainer_restarted", 0),
        "checkpoints": [e.get("path") for e in events if e.get("event") == "checkpoint"][-5:],
        "errors": [e.get("message") for e in events if e.get("event") == "error"],
        "tab_pss_mb_start": {t: v[0][1] for t, v in tab_pss.items()},
        "tab_pss_mb_end": {t: v[-1][1] for t, v in tab_pss.items()},
        "duration_s": round(events[-1]["time"] - events[0]["time"], 1) if len(events) > 1 else 0.0,
        **_task_report(events, progress, summary),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(run_dir / "report.png", events, progress, tab_pss, _length_limit(run_dir))
    report["png"] = str(run_dir / "report.png")
    return report


def _task_report(events: list[dict[str, Any]], progress: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Task metrics at the first and last progress report (the summary's at the end), and the
    reward-gaming verdicts: every change of state, and the state at the end."""
    tasks = [p["task"] for p in progress if (p.get("task") or {}).get("episodes")]
    verdicts = [e for e in events if e.get("event") == "reward_gaming"]
    last = verdicts[-1] if verdicts else None
    gaming = bool(last and last.get("gaming"))
    # While gaming, progress events carry the verdict with their own figures: the newest says most.
    now = [p["reward_gaming_now"] for p in progress if p.get("reward_gaming_now") and p.get("time", 0) >= last.get("time", 0)] if gaming else []
    message = (now[-1] if now else last or {}).get("message")
    return {
        "task_first": tasks[0] if tasks else None,
        "task_last": summary.get("task") or (tasks[-1] if tasks else None),
        "reward_gaming": gaming,
        "reward_gaming_since_step": last.get("steps") if gaming else None,
        "reward_gaming_message": message,
        "reward_gaming_changes": [{k: e.get(k) for k in ("steps", "gaming", "message")} for e in verdicts],
    }


def _length_limit(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "config.json").read_text())["max_episode_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _first_reward(progress: list[dict[str, Any]]) -> float | None:
    values = [p["mean_reward"] for p in progress if p.get("mean_reward") is not None]
    return round(values[0], 2) if values else None


def _last_reward(progress: list[dict[str, Any]]) -> float | None:
    values = [p["mean_reward"] for p in progress if p.get("mean_reward") is not None]
    return round(values[-1], 2) if values else None


def _tab_memory(samples: list[dict[str, Any]]) -> dict[int, list[tuple[float, float]]]:
    series: dict[int, list[tuple[float, float]]] = {}
    for sample in samples:
        for tab in sample.get("tabs", []):
            if tab.get("pss_mb") is not None:
                series.setdefault(int(tab["tab"]), []).append((float(sample["time"]), float(tab["pss_mb"])))
    return series


def _plot(
    path: Path, events: list[dict[str, Any]], progress: list[dict[str, Any]], tab_pss: dict[int, list[tuple[float, float]]],
    length_limit: int | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = events[0]["time"] if events else 0.0
    fig, axes = plt.subplots(3, 2, figsize=(12, 12))
    (reward_ax, fps_ax), (task_ax, length_ax), (restart_ax, memory_ax) = axes
    rewarded = [p for p in progress if p.get("mean_reward") is not None]
    reward_ax.plot([p["steps"] for p in rewarded], [p["mean_reward"] for p in rewarded], color="tab:blue")
    reward_ax.set(title="Mean episode reward (last 100 episodes)", xlabel="steps", ylabel="reward")
    fps_ax.plot([(p["time"] - t0) / 60 for p in progress], [p["fps"] for p in progress], color="tab:green")
    fps_ax.set(title="Training speed", xlabel="minutes", ylabel="steps/s")
    _plot_task(task_ax, length_ax, events, progress, length_limit)
    _plot_restarts(restart_ax, events, t0)
    for tab, series in sorted(tab_pss.items()):
        memory_ax.plot([(t - t0) / 60 for t, _ in series], [v for _, v in series], label=f"tab {tab}")
    memory_ax.set(title="Memory per tab (PSS)", xlabel="minutes", ylabel="MB")
    if tab_pss:
        memory_ax.legend(loc="upper left")
    else:
        memory_ax.text(0.5, 0.5, "no resource samples in this run", ha="center", va="center", transform=memory_ax.transAxes)
    gaming = [e for e in events if e.get("event") == "reward_gaming"]
    if gaming and gaming[-1].get("gaming"):
        fig.suptitle("REWARD GAMING: episodes end early in collisions while the reward rises (see the task panels)",
                     color="tab:red", fontweight="bold")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


TASK_LINES = (("orb_collected", "collected an orb", "tab:green", "-"), ("orb_deposited", "deposited an orb", "tab:blue", "-"),
              ("ended_early", "ended early", "tab:orange", "-"), ("collided", "collided", "tab:red", "--"))


def _plot_task(task_ax: Any, length_ax: Any, events: list[dict[str, Any]], progress: list[dict[str, Any]],
               length_limit: int | None) -> None:
    """What the episodes achieved beside the reward, with the stretches of reward gaming shaded."""
    points = [(p["steps"], TaskSummary.from_json(p["task"])) for p in progress if (p.get("task") or {}).get("episodes")]
    steps = [s for s, _ in points]
    for key, label, color, style in TASK_LINES:
        shown = [(s, getattr(t, key)) for s, t in points if getattr(t, key) is not None]
        if shown:
            task_ax.plot([s for s, _ in shown], [100 * v for _, v in shown], label=label, color=color, linestyle=style)
    task_ax.set(title="Task outcomes (share of the last 100 episodes)", xlabel="steps", ylabel="% of episodes", ylim=(-2, 102))
    length_ax.plot(steps, [t.mean_length for _, t in points], color="tab:purple", label="mean episode length")
    if length_limit:
        length_ax.axhline(SHORT_FRACTION_OF_LIMIT * length_limit, color="tab:red", linestyle=":",
                          label=f"{SHORT_FRACTION_OF_LIMIT:.0%} of the limit ({length_limit:,})")
    length_ax.set(title="Mean episode length (last 100 episodes)", xlabel="steps", ylabel="steps")
    length_ax.set_ylim(bottom=0)
    end = steps[-1] if steps else 0
    on: float | None = None
    for e in [e for e in events if e.get("event") == "reward_gaming"] + [{"gaming": False, "steps": end, "end": True}]:
        if e.get("gaming") and on is None:
            on = e.get("steps", 0)
        elif not e.get("gaming") and on is not None:
            for ax in (task_ax, length_ax):
                ax.axvspan(on, max(e.get("steps", end), on), color="tab:red", alpha=0.12,
                           label="reward gaming" if ax is task_ax else None)
            on = None
    for ax in (task_ax, length_ax):
        if points:
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no finished episodes reported yet", ha="center", va="center", transform=ax.transAxes)


def _plot_restarts(restart_ax: Any, events: list[dict[str, Any]], t0: float) -> None:
    restarts = [e for e in events if e.get("event") in RESTART_EVENTS]
    trainer = [e for e in events if e.get("event") == "trainer_restarted"]
    for e in trainer:
        restart_ax.axvline((e["time"] - t0) / 60, color="black", linestyle="--", label="trainer restart")
    end_min = (events[-1]["time"] - t0) / 60 if events else 1.0
    times = [0.0] + [(e["time"] - t0) / 60 for e in restarts] + [end_min]
    counts = list(range(len(restarts) + 1)) + [len(restarts)]
    restart_ax.step(times, counts, where="post", color="tab:red", label="tab restarts")
    restart_ax.set_xlim(0, max(end_min, 0.1))
    restart_ax.set_ylim(0, max(len(restarts), 1) * 1.1)
    restart_ax.set(title="Tab restarts (cumulative)", xlabel="minutes", ylabel="restarts")
    restart_ax.legend(loc="upper left")


def print_report(report: dict[str, Any], say: Any = print) -> None:
    say(f"Run {report['run_dir']}: {report['status']}, {report['timesteps']:,} steps, {report['episodes']} episodes in {report['duration_s'] / 60:.1f} min")
    if report["fps_mean"] is None:  # the run ended before its first progress report
        say("  speed and mean episode reward: the run ended before its first progress report")
    else:
        say(f"  speed: {report['fps_mean']} steps/s on average; mean episode reward {report['mean_reward_first']} -> {report['mean_reward_last']}")
    causes = ", ".join(f"{k} {v}" for k, v in report["tab_failures_by_cause"].items()) or "none"
    say(f"  tab replacements and browser relaunches: {report['tab_restarts']} (tab failures by cause: {causes}); "
        f"trainer restarts: {report['trainer_restarts']}")
    if report["tab_pss_mb_start"]:
        say(f"  memory per tab (PSS MB), start -> end: {report['tab_pss_mb_start']} -> {report['tab_pss_mb_end']}")
    for line in task_report_lines(report):
        say(f"  {line}")
    for error in report["errors"]:
        say(f"  error: {error}")
    say(f"  report: {report['png']}")


def task_report_lines(report: dict[str, Any]) -> list[str]:
    """The task metrics at the start and the end, and the reward-gaming verdict in plain words."""
    first, last = report.get("task_first"), report.get("task_last")
    if not last:
        return ["task metrics: no finished episodes reported"]
    lines = [f"task (last {last.get('episodes', 0)} episodes): {TaskSummary.from_json(last).short()}"]
    if first and first != last:
        lines.append(f"  at the first report ({first.get('episodes', 0)} episodes): {TaskSummary.from_json(first).short()}")
    if report.get("reward_gaming"):
        since = report.get("reward_gaming_since_step")
        lines.append(f"! from step {since or 0:,} to the end of the run, {report.get('reward_gaming_message')}")
    elif report.get("reward_gaming_changes"):
        spans = [c for c in report["reward_gaming_changes"] if c.get("gaming")]
        lines.append(f"reward gaming was seen {len(spans)} time(s) (from step {spans[0].get('steps', 0):,}), not at the end")
    return lines
