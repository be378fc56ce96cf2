"""Task metrics for real (issue 19): headless tabs, the embedded sim, PPO, TensorBoard, evaluate --json.

No timing assertions: the runs are short in steps, and nothing waits on the clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.browser

TASK_KEYS = {"episodes", "mean_reward", "mean_length", "ended_early", "collided", "orb_collected", "orb_deposited",
             "deposited_construction", "deposited_berm", "mean_orbs_collected", "mean_orbs_deposited"}


def _common(ports: tuple[int, int], tmp_path: Path) -> list[str]:
    app, base = ports
    return ["--app-port", str(app), "--base-port", str(base), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines"]


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(next((run_dir / "tensorboard").iterdir())))
    board.Reload()
    return {tag: [e.value for e in board.Scalars(tag)] for tag in board.Tags()["scalars"]}


def test_training_logs_task_scalars_and_status_report_and_summary_carry_them(tmp_path: Path, ports, no_leftovers) -> None:
    models = tmp_path / "models"
    result = run_cli(
        ["train", "--envs", "2", "--timesteps", "1024", "--n-steps", "128", "--max-episode-steps", "150",
         "--curriculum", "256,256,256", "--save-freq", "0", "--no-auto-load", "--max-restarts", "0",
         "--monitor-interval", "1", "--models-dir", str(models), *_common(ports, tmp_path)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The curriculum reached stage 4 (from step 768), which trains with its own discount and learning
    # rate on the embedded page.
    assert "[Train] Curriculum: stage 4 from step 768" in result.stdout
    assert "[Train] PPO in stage 4: gamma 0.995 (was 0.99), learning rate 0.0001 (was 0.0003)" in result.stdout
    from stable_baselines3 import PPO

    last = PPO.load(max(models.glob("*.zip"), key=lambda p: p.stat().st_mtime), device="cpu")
    assert (last.gamma, last.learning_rate) == (0.995, 1e-4)
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["task"]) == TASK_KEYS and summary["task"]["episodes"] > 0, "150-step episodes must end"
    assert 0 < summary["task"]["mean_length"] <= 150

    scalars = _scalars(run_dir)
    for key in ("task/collided", "task/orb_collected", "task/deposited_construction", "task/deposited_berm",
                "task/mean_length", "task/ended_early", "task/episodes"):
        assert key in scalars, sorted(scalars)
    assert all(0.0 <= v <= 1.0 for v in scalars["task/collided"] + scalars["task/orb_collected"])
    assert all(0 < v <= 150 for v in scalars["task/mean_length"])

    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed" and status["task"] == summary["task"]
    shown = run_cli(["status", str(run_dir)], cwd=tmp_path, timeout=60)
    assert shown.returncode == 0 and f"episodes (last {summary['task']['episodes']}): mean reward" in shown.stdout
    assert "orb collected" in shown.stdout and "collided" in shown.stdout
    assert f"task (last {summary['task']['episodes']} episodes): orb collected" in result.stdout, "the morning report"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task_last"] == summary["task"] and report["reward_gaming"] in (True, False)

    evaluated = tmp_path / "eval.json"
    checkpoint = models / "lunar_rover_ppo_1024_steps.zip"
    scored = run_cli(["evaluate", str(checkpoint), "--against-random", "--stochastic", "--episodes", "4", "--envs", "2",
                      "--max-episode-steps", "100", "--json", str(evaluated), *_common(ports, tmp_path)], cwd=tmp_path)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "actions sampled from the policy" in scored.stdout
    evaluation = json.loads(evaluated.read_text())["evaluation"]
    assert evaluation["actions"] == "sampled"
    assert evaluation["policy"] == str(checkpoint) and set(evaluation["task"]) == TASK_KEYS
    assert evaluation["against_random"]["policy"] == "random" and set(evaluation["against_random"]["task"]) == TASK_KEYS
    assert evaluation["against_random"]["episodes"] == evaluation["episodes"] == 4
    header = next(line for line in scored.stdout.splitlines() if line.split()[1:] == ["model", "random"])
    assert header.startswith("[Evaluate]")
    assert "collected an orb" in scored.stdout and "collided" in scored.stdout


def test_evaluate_random_actions_writes_the_task_metrics(tmp_path: Path, ports, no_leftovers) -> None:
    out = tmp_path / "r.json"
    result = run_cli(["evaluate", "--stage", "4", "--episodes", "6", "--envs", "2", "--max-episode-steps", "100",
                      "--json", str(out), *_common(ports, tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    evaluation = json.loads(out.read_text())["evaluation"]
    task = evaluation["task"]
    assert set(task) == TASK_KEYS and task["episodes"] == evaluation["episodes"] == 6
    assert 0 < task["mean_length"] <= 100 and task["mean_length"] == evaluation["mean_length"]
    for key in ("ended_early", "collided", "orb_collected", "orb_deposited", "deposited_construction", "deposited_berm"):
        assert 0.0 <= task[key] <= 1.0, (key, task)
    assert task["mean_orbs_collected"] >= 0 and task["mean_reward"] == pytest.approx(evaluation["mean_reward"], abs=1e-3)
    assert evaluation["against_random"] is None
    assert "collected an orb" in result.stdout and "mean orbs collected" in result.stdout


def test_evaluate_scores_the_task_metrics_of_the_original_apps_protocol(tmp_path: Path, ports, no_leftovers) -> None:
    """The compatibility page speaks the original app's protocol (real-time, its own info keys)."""
    from orchestrator.app_server import AppServer

    app, base = ports
    out = tmp_path / "compat.json"
    server = AppServer(app, Path(__file__).resolve().parent / "compat_app")
    try:
        result = run_cli(["evaluate", "--episodes", "4", "--envs", "2", "--max-episode-steps", "40", "--json", str(out),
                          "--url", f"http://localhost:{app}/?wsPort={{port}}&maxSteps={{max_steps}}",
                          "--base-port", str(base), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines",
                          "--no-monitor"], cwd=tmp_path)
    finally:
        server.close()
    assert result.returncode == 0, result.stdout + result.stderr
    task = json.loads(out.read_text())["evaluation"]["task"]
    assert task["episodes"] == 4 and 0 < task["mean_length"] <= 40
    for key in TASK_KEYS - {"episodes", "mean_reward", "mean_length"}:
        assert task[key] is not None, (key, task)  # the original app reports them all
