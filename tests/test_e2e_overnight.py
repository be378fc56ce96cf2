"""Unattended runs for real: kills, resume to the exact target, supervision, budgets, curriculum."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from tests.conftest import REPO, cli_process, run_cli, wait_for_line
from training import checkpoints

pytestmark = pytest.mark.browser


def _args(ports: tuple[int, int], tmp_path: Path) -> list[str]:
    app, base = ports
    return [
        "--envs", "2", "--n-steps", "128", "--app-port", str(app), "--base-port", str(base),
        "--models-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines",
    ]


def _events(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for run in (tmp_path / "runs").iterdir() for line in (run / "events.jsonl").read_text().splitlines()]


def test_sigkill_after_a_checkpoint_then_restart_ends_exactly_at_the_target(tmp_path: Path, ports, no_leftovers) -> None:
    # The first run cannot reach its target before the kill, however fast the machine; the second
    # one's target is 1000 steps past the checkpoint it resumes, not a whole number of rollouts.
    args = [*_args(ports, tmp_path), "--save-freq", "512", "--max-restarts", "0"]
    with cli_process(["train", *args, "--timesteps", "100000000"], cwd=tmp_path) as proc:
        wait_for_line(proc, "Saved checkpoint", timeout=180)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    saved = checkpoints.candidates(tmp_path / "models")
    assert saved, "the first checkpoint must survive the kill"
    first_steps = PPO.load(saved[0], device="cpu").num_timesteps
    target = first_steps + 1000
    second = run_cli(["train", *args, "--timesteps", str(target)], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"({first_steps:,} steps done); continuing" in second.stdout
    final = PPO.load(tmp_path / "models" / f"lunar_rover_ppo_{target}_steps.zip", device="cpu")
    assert final.num_timesteps == target


def test_a_crashed_trainer_is_restarted_by_the_supervisor(tmp_path: Path, ports, no_leftovers) -> None:
    result = run_cli(
        ["train", *_args(ports, tmp_path), "--timesteps", "2048", "--save-freq", "256", "--chaos", "trainer=1", "--max-restarts", "2"],
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[Supervisor] ↻ the run died (killed by signal SIGKILL)" in result.stdout
    restarts = [e for e in _events(tmp_path) if e["event"] == "trainer_restarted"]
    assert len(restarts) == 1 and "SIGKILL" in restarts[0]["cause"]
    assert PPO.load(tmp_path / "models" / "lunar_rover_ppo_2048_steps.zip", device="cpu").num_timesteps == 2048
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "report.png").stat().st_size > 10_000


def test_a_tiny_time_budget_from_a_config_file_stops_with_a_checkpoint(tmp_path: Path, ports, no_leftovers) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("timesteps = 1000000\nhours = 0.004\nsave-freq = 0\n")
    result = run_cli(["train", "--config", str(config), *_args(ports, tmp_path)], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "time budget of 0.004 h is used up" in result.stdout
    run_dir = next((tmp_path / "runs").iterdir())
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["hours"] == 0.004 and resolved["timesteps"] == 1_000_000 and resolved["save_freq"] == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "time_up" and summary["checkpoint"]
    assert PPO.load(summary["checkpoint"], device="cpu").num_timesteps == summary["timesteps"] > 0


def test_a_curriculum_interrupted_in_stage_2_resumes_in_stage_2(tmp_path: Path, ports, no_leftovers) -> None:
    args = [*_args(ports, tmp_path), "--timesteps", "100000", "--curriculum", "256,50000,50000", "--save-freq", "256", "--max-restarts", "0"]
    with cli_process(["train", *args], cwd=tmp_path) as proc:
        wait_for_line(proc, "Curriculum: stage 2", timeout=180)
        wait_for_line(proc, "Saved checkpoint", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    with cli_process(["train", *args], cwd=tmp_path) as resumed:
        lines = wait_for_line(resumed, "Curriculum: stage", timeout=180)
        resumed.send_signal(signal.SIGINT)
        resumed.communicate(timeout=60)
    assert "Curriculum: stage 2 " in lines[-1] and "from step" in lines[-1], "".join(lines)


def test_sigkill_during_checkpoint_writes_leaves_the_previous_one_loadable(tmp_path: Path) -> None:
    script = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from stable_baselines3 import PPO
from training import checkpoints
model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, policy_kwargs={{"net_arch": [1024, 1024]}}, device="cpu")
steps = 0
while True:
    steps += 1
    checkpoints.save_atomic(model, checkpoints.steps_path(Path({str(tmp_path)!r}), steps))
    if steps == 1:
        print("saved", flush=True)
"""
    # Each kill comes at its own moment into the writes that follow a first whole checkpoint (a write
    # of this 8 MB model takes tens of ms here): waiting for that one, not guessing how long it takes.
    for delay in (0.0, 0.37, 0.81):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "saved"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        saved = checkpoints.candidates(tmp_path)
        assert saved, "the checkpoints written before the kill are still there"
        for path in saved:
            assert checkpoints.looks_loadable(path) is None, path
        PPO.load(saved[0], device="cpu")
