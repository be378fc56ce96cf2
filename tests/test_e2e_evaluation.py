"""Evaluation during training and evaluate --video, for real: headless tabs, the embedded sim, PPO.

No timing assertions: the runs are short in steps, the evaluations are due by step counts, and
the video has one frame per simulated step however fast the machine is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_e2e_task_metrics import TASK_KEYS, _common, _scalars

pytestmark = pytest.mark.browser


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == kind]


def test_training_evaluates_on_its_own_tab_and_keeps_the_best_by_task_score(tmp_path: Path, ports, no_leftovers) -> None:
    models = tmp_path / "models"
    args = ["train", "--envs", "2", "--n-steps", "128", "--max-episode-steps", "150", "--eval-freq", "1024",
            "--eval-episodes", "2", "--save-freq", "0", "--max-restarts", "0", "--no-monitor",
            "--models-dir", str(models), *_common(ports, tmp_path)]
    first = run_cli([*args, "--timesteps", "2048", "--no-auto-load"], cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Evaluation tab: tab 3" in first.stdout and "✓ Browser tab 3 connected!" in first.stdout
    assert "2 deterministic episodes of at most 51 steps" in first.stdout, "1024 / (10 x 2): a tenth of the steps"
    run_dir = sorted((tmp_path / "runs").iterdir())[-1]
    evaluations = _events(run_dir, "evaluation")
    assert [e["steps"] for e in evaluations] == [1024, 2048]
    for e in evaluations:
        assert e["stage"] == 1 and e["episodes"] == 2 and set(e["task"]) == TASK_KEYS
        assert 0 < e["task"]["mean_length"] <= 51 and e["eval_steps"] <= 2 * 51
        assert e["score"]["names"] == ["no collision", "mean length"]
    assert evaluations[0]["best"] and evaluations[0]["best_reason"] == "first"
    assert sum(line.startswith("[Eval] task score stage 1:") for line in first.stdout.splitlines()) == 2
    scalars = _scalars(run_dir)
    assert len(scalars["eval/collided"]) == 2 and len(scalars["eval/mean_length"]) == 2 and scalars["eval/stage"] == [1, 1]

    best = json.loads((models / "lunar_rover_ppo_best.json").read_text())
    assert best["basis"].startswith("evaluation: 2 deterministic episodes of at most 51 steps")
    kept = [e for e in evaluations if e["best"]][-1]
    assert best["steps"] == kept["steps"] and best["score"]["values"] == kept["score"]["values"]
    assert (models / "lunar_rover_ppo_best.zip").exists()

    # Resumed, with the score file gone (an older LunarFleet's best), now with sampled actions:
    # the old best is scored again the new way, then compared.
    (models / "lunar_rover_ppo_best.json").unlink()
    second = run_cli([*args, "--timesteps", "3072", "--eval-stochastic"], cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "2 sampled episodes of at most 51 steps" in second.stdout and "[Eval] 3,072 steps, stage 1: 2 sampled episodes" in second.stdout
    assert "its task score is unknown here" in second.stdout and "scoring it on the same episodes" in second.stdout
    resumed = _events(sorted((tmp_path / "runs").iterdir())[-1], "evaluation")
    assert [e["steps"] for e in resumed] == [3072] and resumed[0]["rescored_best"]["stage"] == 1
    assert resumed[0]["best_reason"] in ("better", "not better")
    resumed_best = json.loads((models / "lunar_rover_ppo_best.json").read_text())
    assert resumed_best["score"]["stage"] == 1 and resumed_best["basis"].startswith("evaluation: 2 sampled episodes")


def test_evaluate_video_writes_a_playable_file_of_distinct_frames_at_the_real_frame_rate(tmp_path: Path, ports, no_leftovers) -> None:
    import imageio_ffmpeg

    video, out = tmp_path / "rover.mp4", tmp_path / "r.json"
    result = run_cli(["evaluate", "--episodes", "4", "--envs", "2", "--max-episode-steps", "100", "--video", str(video),
                      "--video-episodes", "2", "--json", str(out), "--no-monitor", *_common(ports, tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    recorded = json.loads(out.read_text())["evaluation"]["video"]
    assert recorded["episodes"] == 2 and recorded["fps"] == 30.0, "timescale 2: a step is 1/30 s"
    assert f"[Video] Wrote {video}" in result.stdout and "[Video] Recording tab 1" in result.stdout

    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    assert meta["fps"] == 30.0 and tuple(meta["size"]) == (680, 500)
    frames = [np.frombuffer(f, dtype=np.uint8) for f in reader]
    assert len(frames) == recorded["frames"] >= 60
    assert len({f.tobytes() for f in frames}) > len(frames) // 2, "the rover moves: frames differ"
    # One frame per step and one per episode start: two episodes of at most 100 steps.
    assert len(frames) <= 2 * 101


def test_evaluate_video_is_refused_for_your_own_app(tmp_path: Path) -> None:
    result = run_cli(["evaluate", "--video", str(tmp_path / "v.mp4"), "--url", "http://localhost:1/?wsPort={port}"],
                     cwd=tmp_path, timeout=60)
    assert result.returncode != 0 and "--record-video instead" in result.stderr
    assert not (tmp_path / "runs").exists(), "refused before anything ran"
