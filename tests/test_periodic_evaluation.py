"""The task score, the best model kept by it, and evaluation during training, on fakes (no browser)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from orchestrator.config import eval_episode_cap
from training import checkpoints
from training.best_model import BestModel, score_path
from training.periodic_evaluation import EvalPlan, PeriodicEvaluation
from training.task_metrics import EpisodeOutcome, TaskScore, TaskSummary, task_score

LIMIT = 20


def summary(*episodes: tuple[int, bool, int, int]) -> TaskSummary:
    """Episodes as (length, collided, orbs collected, orbs deposited)."""
    infos = [{"episode_length": n, "collision_occurred": c, "orbs_collected": o, "orbs_deposited_construction": d,
              "orbs_deposited_berm": 0, "TimeLimit.truncated": not c} for n, c, o, d in episodes]
    return TaskSummary.of([EpisodeOutcome.from_info(i) for i in infos])


def test_driving_stages_rank_by_no_collision_then_length_and_orb_stages_by_deposits() -> None:
    crashes_late = task_score(summary((900, True, 0, 0), (900, True, 0, 0)), 1)
    drives_short = task_score(summary((300, False, 0, 0), (300, False, 0, 0)), 1)
    drives_long = task_score(summary((1000, False, 0, 0), (1000, False, 0, 0)), 1)
    assert crashes_late and drives_short and drives_long
    assert drives_short.beats(crashes_late) and drives_long.beats(drives_short) and not drives_short.beats(drives_long)
    assert drives_short.text() == "stage 1: no collision 100%, mean length 300"

    deposits = task_score(summary((500, True, 3, 1), (500, True, 0, 0)), 4)  # crashes, but deposits
    collects = task_score(summary((1000, False, 2, 0), (1000, False, 2, 0)), 4)
    safe = task_score(summary((1000, False, 0, 0), (1000, False, 0, 0)), 3)
    assert deposits and collects and safe
    assert deposits.values == (0.5, 0.5, 0.0) and deposits.beats(collects) and not collects.beats(deposits)
    assert deposits.text() == "stage 4: mean orbs deposited 0.50, orb collected 50%, no collision 0%"
    assert not safe.beats(collects) and not collects.beats(safe), "scores of different stages do not compare"
    assert task_score(summary(), 1) is None
    assert TaskScore.from_json(json.loads(json.dumps(deposits.to_json()))) == deposits


def test_without_a_collision_key_an_early_end_counts_as_a_collision() -> None:
    own_app = TaskSummary.of([EpisodeOutcome.from_info({"episode_length": 50}),  # terminated early
                              EpisodeOutcome.from_info({"episode_length": 20, "TimeLimit.truncated": True})])
    score = task_score(own_app, 2)
    assert score is not None and score.values == (0.5, 35.0)


def _saver(saved: list[Path]) -> Any:
    def save(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"model %d" % len(saved))
        saved.append(path)
        return path

    return save


def test_best_model_keeps_the_best_score_per_stage_and_a_resumed_run_compares_with_it(tmp_path: Path) -> None:
    saved: list[Path] = []
    best = BestModel(tmp_path, "basis A")
    good, worse = TaskScore(1, (0.9, 500.0), ("no collision", "mean length")), TaskScore(1, (0.5, 900.0), ("no collision", "mean length"))
    assert not best.unknown
    assert best.offer(good, 1000, _saver(saved)).reason == "first" and saved == [checkpoints.best_path(tmp_path)]
    assert json.loads(score_path(tmp_path).read_text())["steps"] == 1000
    assert best.offer(worse, 2000, _saver(saved)).saved is False and len(saved) == 1

    resumed = BestModel(tmp_path, "basis A")  # a resumed run: the score on file is known
    assert not resumed.unknown and resumed.score == good and resumed.steps == 1000
    assert resumed.offer(worse, 3000, _saver(saved)).saved is False
    stage2 = TaskScore(2, (0.1, 10.0), ("no collision", "mean length"))
    offer = resumed.offer(stage2, 4000, _saver(saved))
    assert offer.saved and offer.reason == "new stage" and resumed.score == stage2, "the first score at a new stage is the best"

    other = BestModel(tmp_path, "basis B")  # scored another way: unknown here
    assert other.unknown and "another basis (basis A)" in other.describe_unknown()
    offer = other.offer(worse, 5000, _saver(saved))
    assert offer.saved and offer.reason == "replaces an unknown score"
    assert json.loads(score_path(tmp_path).read_text())["basis"] == "basis B"


def test_a_best_model_without_a_score_file_is_unknown(tmp_path: Path) -> None:
    checkpoints.best_path(tmp_path).write_bytes(b"an older LunarFleet's best by reward")
    best = BestModel(tmp_path, "basis A")
    assert best.unknown and "mean training reward" in best.describe_unknown()
    score_path(tmp_path).write_text("{not json")
    assert BestModel(tmp_path, "basis A").unknown, "an unreadable score file is an unknown score"


def test_the_default_evaluation_episode_cap_bounds_its_cost_to_a_tenth() -> None:
    assert eval_episode_cap(100_000, 10, 10_000) == 1000
    assert eval_episode_cap(100_000, 10, 500) == 500, "never above the training episode limit"
    assert eval_episode_cap(50, 10, 1000) == 1
    for freq, episodes in ((100_000, 10), (50_000, 7), (2048, 3)):
        assert episodes * eval_episode_cap(freq, episodes, 10_000) <= 0.1 * freq


class _EvalTab:
    """One simulation: a policy that drives forward (action[0] > 0) collides after 5 steps; one that
    turns on the spot drives until the limit. Records the stage and seeds it is given."""

    num_envs = 1
    action_space = gym.spaces.Box(low=np.array([-1.0, -1.0, 0.0], dtype=np.float32), high=np.ones(3, dtype=np.float32))

    def __init__(self) -> None:
        self.stages: list[int] = []
        self.seeds: list[int] = []
        self.length = 0

    def seed(self, seed: int) -> None:
        self.seeds.append(seed)

    def env_method(self, name: str, *args: Any) -> None:
        assert name == "set_stage"
        self.stages.append(args[0])

    def reset(self) -> np.ndarray:
        self.length = 0
        return np.zeros((1, 30), dtype=np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.length += 1
        crashed = actions[0][0] > 0 and self.length >= 5
        done = crashed or self.length >= LIMIT
        info: dict[str, Any] = {"episode_length": self.length}
        if done:
            info.update(collision_occurred=crashed, orbs_collected=0, orbs_deposited_construction=0,
                        orbs_deposited_berm=0, **{"TimeLimit.truncated": not crashed})
            self.length = 0
        return np.zeros((1, 30), dtype=np.float32), np.array([-1.0]), np.array([done]), [info]


class _Policy:
    def __init__(self, forward: bool, draws: bool = False) -> None:
        self.forward = forward
        self.draws = draws  # samples from torch's generator, as SB3's predict does
        self.num_timesteps = 0
        self.asked: set[bool] = set()  # the deterministic flags predict was called with
        self.logged: dict[str, float] = {}
        self.logger = SimpleNamespace(record=lambda k, v, exclude=None: self.logged.__setitem__(k, v), dump=lambda step: None)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        self.asked.add(deterministic)
        if self.draws:
            torch.rand(1)
        return np.array([[1.0 if self.forward else 0.0, 1.0, 0.0]], dtype=np.float32), None


def _run(callback: PeriodicEvaluation, model: _Policy, upto: int, step: int = 256) -> None:
    callback.model = model  # type: ignore[assignment]
    callback._on_training_start()
    while model.num_timesteps < upto:
        model.num_timesteps += step
        callback._on_step()


def test_periodic_evaluation_scores_the_task_on_the_same_episodes_and_keeps_the_best(tmp_path: Path) -> None:
    tab, said, events, saved = _EvalTab(), [], [], []
    plan = EvalPlan(freq=1000, episodes=3, max_episode_steps=LIMIT, seed=7)
    stages = {0: 1, 1: 1, 2: 2}  # stage 2 from step 2,000 on
    callback = PeriodicEvaluation(tab, plan, lambda steps: stages[min(steps // 1000, 2)], BestModel(tmp_path, plan.basis),
                                  _saver(saved), said.append, events.append)  # type: ignore[arg-type]
    crasher = _Policy(forward=True)
    _run(callback, crasher, 1024)
    assert callback.evaluations == 1 and tab.seeds == [7] and tab.stages == [1]
    first = events[-1]
    assert first["event"] == "evaluation" and first["best"] and first["best_reason"] == "first"
    assert first["task"]["collided"] == 1.0 and first["task"]["episodes"] == 3 and first["stage"] == 1
    assert crasher.logged["eval/collided"] == 1.0 and crasher.logged["eval/mean_length"] == 5 and crasher.logged["eval/stage"] == 1
    assert any(s.startswith("[Eval] 1,024 steps, stage 1: 3 deterministic episodes") for s in said)
    assert crasher.asked == {True}

    crasher.num_timesteps = 1536
    callback._on_step()
    assert callback.evaluations == 1, "the next evaluation is due at 2,000 steps"
    callback._next = 1536  # due now, still at stage 1: the same score is not better
    callback._on_step()
    assert events[-1]["best"] is False and events[-1]["best_reason"] == "not better"
    driver = _Policy(forward=False)  # training went on, and the policy now drives
    driver.num_timesteps = 1792
    callback.model = driver  # type: ignore[assignment]
    callback._next = 1792
    callback._on_step()
    assert events[-1]["best"] and events[-1]["best_reason"] == "better" and events[-1]["task"]["collided"] == 0.0
    assert any("new best: saved as lunar_rover_ppo_best.zip" in s for s in said)

    crasher.num_timesteps = 2048  # the curriculum moved on: the first evaluation at stage 2 is the best
    callback.model = crasher  # type: ignore[assignment]
    callback._on_step()
    assert tab.stages == [1, 2] and tab.seeds == [7] * 4, "the same episodes every time"
    assert events[-1]["best"] and events[-1]["best_reason"] == "new stage" and events[-1]["stage"] == 2
    assert len(saved) == 3


def test_sampled_evaluations_sample_the_policy_and_say_so(tmp_path: Path) -> None:
    tab, said, events = _EvalTab(), [], []
    plan = EvalPlan(freq=1000, episodes=2, max_episode_steps=LIMIT, deterministic=False)
    assert plan.basis.startswith("evaluation: 2 sampled episodes"), "a sampled score never compares with a deterministic one"
    assert plan.basis != EvalPlan(freq=1000, episodes=2, max_episode_steps=LIMIT).basis
    callback = PeriodicEvaluation(tab, plan, lambda steps: 1, BestModel(tmp_path, plan.basis), _saver([]),
                                  said.append, events.append)  # type: ignore[arg-type]
    policy = _Policy(forward=False, draws=True)
    torch.manual_seed(5)
    expected = torch.rand(3)  # what training's next draws are without an evaluation
    torch.manual_seed(5)
    _run(callback, policy, 1000, step=1000)
    assert policy.asked == {False} and events[-1]["event"] == "evaluation"
    assert torch.equal(torch.rand(3), expected), "an evaluation leaves training's random draws as they were"
    assert any(s.startswith("[Eval] 1,000 steps, stage 1: 2 sampled episodes") for s in said)


def test_a_resumed_run_scores_an_unknown_best_model_before_replacing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stable_baselines3

    checkpoints.best_path(tmp_path).write_bytes(b"an older best")
    monkeypatch.setattr(stable_baselines3.PPO, "load", staticmethod(lambda path, device: _Policy(forward=False)))
    tab, said, events, saved = _EvalTab(), [], [], []
    plan = EvalPlan(freq=1000, episodes=2, max_episode_steps=LIMIT)
    callback = PeriodicEvaluation(tab, plan, lambda steps: 1, BestModel(tmp_path, plan.basis), _saver(saved),
                                  said.append, events.append)  # type: ignore[arg-type]
    _run(callback, _Policy(forward=True), 1000, step=1000)
    assert events[-1]["rescored_best"]["values"] == [1.0, LIMIT] and events[-1]["best"] is False
    assert saved == [] and checkpoints.best_path(tmp_path).read_bytes() == b"an older best", "the better old model stays"
    assert any("its task score is unknown" in s and "scoring it on the same episodes" in s for s in said)
    assert json.loads(score_path(tmp_path).read_text())["score"]["values"] == [1.0, LIMIT]


def test_a_failed_evaluation_is_said_and_training_goes_on(tmp_path: Path) -> None:
    class Lost(_EvalTab):
        def reset(self) -> np.ndarray:
            raise RuntimeError("no page connected to port 9 within 60 s")

    said, events = [], []
    callback = PeriodicEvaluation(Lost(), EvalPlan(1000, 2, LIMIT), lambda s: 1, BestModel(tmp_path, "b"), _saver([]),
                                  said.append, events.append)  # type: ignore[arg-type]
    callback.model = _Policy(forward=True)  # type: ignore[assignment]
    callback._on_training_start()
    callback.model.num_timesteps = 1000  # type: ignore[union-attr]
    assert callback._on_step() is True
    assert events[-1]["event"] == "warning" and "evaluation failed at 1,000 steps" in said[-1] and "training goes on" in said[-1]


def test_without_evaluation_the_best_is_kept_by_the_task_score_of_the_last_training_episodes(tmp_path: Path) -> None:
    from training.trainer import TRAINING_BASIS, RunStats, TrainSettings, _periodic_save

    def episode(length: int, collided: bool) -> dict[str, Any]:
        return {"episode_length": length, "collision_occurred": collided, "TimeLimit.truncated": not collided,
                "episode": {"r": -1.0 if collided else -500.0, "l": length, "t": 1.0}}

    stats = RunStats(10.0, 10_000, print, lambda: None, print_lines=False, max_episode_steps=1000)
    saved: list[Path] = []
    settings = TrainSettings(total_timesteps=10_000, models_dir=tmp_path, curriculum=[2000, 2000, 2000])
    periodic = _periodic_save(tmp_path, _saver(saved), stats, BestModel(tmp_path, TRAINING_BASIS), settings)
    stats.task.add_step([True] * 4, [episode(1000, False)] * 4)  # drives: a worse reward, the better task score
    periodic(1000)
    assert [p.name for p in saved] == ["lunar_rover_ppo_1000_steps.zip", "lunar_rover_ppo_best.zip"]
    stats.task.add_step([True] * 100, [episode(40, True)] * 100)  # crashes: a better reward, no task
    periodic(1500)
    assert saved[-1].name == "lunar_rover_ppo_1500_steps.zip", "a higher reward does not make a best model"
    periodic(2500)  # stage 2 from step 2,000: the first score there is the best
    assert saved[-1].name == "lunar_rover_ppo_best.zip"
    assert json.loads(score_path(tmp_path).read_text())["score"]["stage"] == 2
    assert json.loads(score_path(tmp_path).read_text())["basis"] == TRAINING_BASIS
