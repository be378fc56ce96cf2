"""End to end, for real: headless Chromium tabs, WebSockets, the embedded sim and PPO."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from stable_baselines3 import PPO

from tests.conftest import cli_process, run_cli, wait_for_line

pytestmark = pytest.mark.browser


def _common(ports: tuple[int, int], tmp_path: Path) -> list[str]:
    app, base = ports
    return ["--app-port", str(app), "--base-port", str(base), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines"]


def test_smoke_trains_two_real_tabs_and_the_checkpoint_loads(tmp_path: Path, ports, no_leftovers) -> None:
    out = tmp_path / "out.json"
    models = tmp_path / "models"
    result = run_cli(
        ["smoke", "--envs", "2", "--timesteps", "4096", "--json", str(out), "--models-dir", str(models), *_common(ports, tmp_path)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(out.read_text())
    assert verdict["ok"] is True
    assert verdict["timesteps"] >= 4096
    assert verdict["episodes"] > 0, "random driving in a walled arena must end episodes"
    assert verdict["fps"] > 0
    assert verdict["error"] is None
    assert "✓ Browser tab 1 connected!" in result.stdout and "✓ Browser tab 2 connected!" in result.stdout
    model = PPO.load(verdict["checkpoint"], device="cpu")
    assert model.num_timesteps == verdict["timesteps"]
    assert model.observation_space.shape == (30,) and model.action_space.shape == (3,)


def test_second_run_resumes_the_newest_checkpoint_and_its_step_count(tmp_path: Path, ports, no_leftovers) -> None:
    models = tmp_path / "models"
    args = ["--envs", "2", "--n-steps", "256", "--save-freq", "512", "--models-dir", str(models), *_common(ports, tmp_path)]
    first = run_cli(["train", "--timesteps", "1024", *args], cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    saved = sorted(p.name for p in models.glob("lunar_rover_ppo_*_steps.zip"))
    assert "lunar_rover_ppo_1024_steps.zip" in saved and "lunar_rover_ppo_512_steps.zip" in saved
    second = run_cli(["train", "--timesteps", "2048", *args], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "lunar_rover_ppo_1024_steps.zip (1,024 steps done); continuing" in second.stdout
    assert PPO.load(models / "lunar_rover_ppo_2048_steps.zip", device="cpu").num_timesteps == 2048
    third = run_cli(["train", "--timesteps", "2048", *args], cwd=tmp_path)
    assert third.returncode == 0 and "pass a larger --timesteps" in third.stdout


def test_ctrl_c_saves_the_interrupted_checkpoint_and_leaves_nothing(tmp_path: Path, ports, no_leftovers) -> None:
    models = tmp_path / "models"
    args = ["train", "--envs", "2", "--timesteps", "1000000", "--n-steps", "128", "--models-dir", str(models), *_common(ports, tmp_path)]
    with cli_process(args, cwd=tmp_path) as proc:
        wait_for_line(proc, "[Train]", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    interrupted = models / "lunar_rover_ppo_interrupted.zip"
    assert interrupted.exists(), out
    assert PPO.load(interrupted, device="cpu").num_timesteps > 0


def test_a_checkpoint_with_the_turn_limited_to_0_1_is_explained_then_adapted_and_trains_on(
    tmp_path: Path, ports, no_leftovers
) -> None:
    from tests.test_checkpoints import save_turn_limited

    old = save_turn_limited(tmp_path / "original_app_model.zip", steps=1234)
    models = tmp_path / "models"
    args = ["train", "--envs", "2", "--load", str(old), "--timesteps", "1490", "--n-steps", "128", "--max-restarts", "0",
            "--models-dir", str(models), *_common(ports, tmp_path)]
    refused = run_cli(args, cwd=tmp_path)
    assert refused.returncode != 0, refused.stdout
    assert "unable to turn right" in refused.stdout and "--adapt-spaces" in refused.stdout
    assert "[Setup] Browser:" not in refused.stdout, "refused before a browser starts"
    assert not list(models.glob("*.zip")), "nothing trained or saved"

    adapted = run_cli([*args, "--adapt-spaces"], cwd=tmp_path)
    assert adapted.returncode == 0, adapted.stdout + adapted.stderr
    assert "adapting it to the simulation's spaces" in adapted.stdout
    model = PPO.load(models / "lunar_rover_ppo_1490_steps.zip", device="cpu")
    assert model.num_timesteps == 1490, "its step count went on from 1,234"
    assert model.action_space.low[1] == -1.0, "saved with the simulation's turn range"
