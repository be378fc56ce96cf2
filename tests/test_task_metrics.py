"""Task metrics and the reward-gaming rule, on fake episode infos (no browser)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from orchestrator.live_view import monitor_lines, render
from orchestrator.report import build_report, print_report
from training.evaluate import comparison_lines, evaluate, evaluation_report
from training.step_round import frozen_info
from training.task_metrics import (
    EARLY_END_FRACTION,
    MIN_EPISODES,
    EpisodeOutcome,
    TaskSummary,
    TaskTracker,
    compare_with_random,
    gaming_verdict,
    is_episode_end,
)
from training.trainer import RunStats

LIMIT = 1000


def sim_info(length: int, *, collided: bool, orbs: int = 0, construction: int = 0, berm: int = 0,
             reward: float | None = None) -> dict[str, Any]:
    """The info of an episode's last step as the embedded sim (and the original app) sends it,
    as the vec env hands it on (TimeLimit.truncated, Monitor's `episode`)."""
    info: dict[str, Any] = {
        "episode_length": length, "orbs_collected": orbs, "orbs_deposited_construction": construction,
        "orbs_deposited_berm": berm, "collision_occurred": collided, "zone": "obstacle", "total_reward": reward or 0.0,
        "TimeLimit.truncated": not collided and length >= LIMIT,
    }
    if reward is not None:
        info["episode"] = {"r": reward, "l": length, "t": 1.0}
    return info


def crash(reward: float = -205.0) -> dict[str, Any]:
    return sim_info(40, collided=True, reward=reward)


def drive(reward: float = -900.0, orbs: int = 1) -> dict[str, Any]:
    return sim_info(LIMIT, collided=False, orbs=orbs, reward=reward)


def test_outcome_from_an_embedded_sim_info() -> None:
    outcome = EpisodeOutcome.from_info(sim_info(123, collided=True, orbs=3, berm=2, reward=-250.0))
    assert outcome == EpisodeOutcome(length=123, reward=-250.0, ended_early=True, collided=True, orbs_collected=3,
                                     deposited_construction=0, deposited_berm=2)
    timed_out = EpisodeOutcome.from_info(drive())
    assert not timed_out.ended_early and timed_out.collided is False and timed_out.length == LIMIT


def test_outcome_from_an_app_that_reports_nothing_is_unknown_not_zero() -> None:
    outcome = EpisodeOutcome.from_info({"TimeLimit.truncated": True}, reward=1.0, length=50)
    assert (outcome.collided, outcome.orbs_collected, outcome.deposited_berm) == (None, None, None)
    summary = TaskSummary.of([outcome])
    assert summary.collided is None and summary.orb_collected is None and summary.mean_length == 50
    assert "task/collided" not in summary.scalars() and summary.scalars()["task/mean_length"] == 50.0


def test_summary_fractions_and_means() -> None:
    outcomes = [EpisodeOutcome.from_info(i) for i in (
        crash(), crash(), sim_info(LIMIT, collided=False, orbs=2, construction=1, reward=100.0),
        sim_info(500, collided=True, orbs=4, berm=3, reward=50.0),
    )]
    s = TaskSummary.of(outcomes)
    assert s.episodes == 4
    assert s.collided == 0.75 and s.ended_early == 0.75
    assert s.orb_collected == 0.5 and s.orb_deposited == 0.5
    assert s.deposited_construction == 0.25 and s.deposited_berm == 0.25
    assert s.mean_orbs_collected == 1.5 and s.mean_orbs_deposited == 1.0
    assert s.mean_length == (40 + 40 + LIMIT + 500) / 4
    assert s.mean_reward == pytest.approx((-205 - 205 + 100 + 50) / 4)
    assert TaskSummary.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert set(s.scalars()) >= {"task/collided", "task/orb_collected", "task/deposited_berm", "task/mean_length"}
    assert "collided 75%" in s.short() and "orb collected 50%" in s.short()


def test_frozen_steps_and_failures_are_no_episodes() -> None:
    obs = np.zeros(30, dtype=np.float32)
    assert not is_episode_end(True, frozen_info("slow", obs))
    assert not is_episode_end(True, {"tab_failure": "crash", "episode": {"r": 0.0, "l": 3}})
    assert not is_episode_end(True, {"worker_failure": "died", "TimeLimit.truncated": True})
    assert not is_episode_end(False, crash())
    tracker = TaskTracker(LIMIT)
    tracker.add_step([True, True, True, False], [frozen_info("hang", obs), {"tab_failure": "crash"}, crash(), drive()])
    assert tracker.seen == 1 and tracker.summary().collided == 1.0


def _tracker(first: list[dict[str, Any]], then: list[dict[str, Any]]) -> TaskTracker:
    tracker = TaskTracker(LIMIT)
    for info in first + then:
        tracker.add_step([True], [info])
    return tracker


def test_a_policy_that_crashes_at_once_while_reward_rises_is_reward_gaming() -> None:
    tracker = _tracker([drive(-1100.0, orbs=1)] * 20, [crash(-205.0)] * 100)
    verdict = tracker.verdict()
    assert verdict is not None and verdict.gaming
    assert verdict.ended_early == 1.0 and verdict.collided == 1.0 and verdict.orb_collected == 0.0
    assert verdict.mean_length == 40 and verdict.reward_before == -1100.0 and verdict.reward_now == -205.0
    text = verdict.sentence()
    assert "reward gaming" in text and "100% of the last 100 episodes ended early (100% in a collision)" in text
    assert "the mean reward, -205.0, is above that of the run's first episodes, -1,100.0" in text
    assert "not the task" in text and "0% deposited one" in text
    assert verdict.to_json()["gaming"] is True and verdict.to_json()["message"] == text


def test_a_policy_that_drives_is_not_reward_gaming() -> None:
    verdict = _tracker([drive(-1100.0)] * 20, [drive(-300.0)] * 100).verdict()
    assert verdict is not None and not verdict.gaming and not verdict.ends_early_and_short
    assert "no reward gaming" in verdict.sentence()


def test_crashing_without_a_reward_rise_is_no_gaming_but_is_said_when_asked() -> None:
    verdict = _tracker([crash(-205.0)] * 20, [crash(-210.0)] * 100).verdict()
    assert verdict is not None and verdict.ends_early_and_short and verdict.reward_rising is False and not verdict.gaming
    unknown = gaming_verdict([EpisodeOutcome.from_info(crash())] * 30, 30, LIMIT, reward_before=None)
    assert unknown is not None and unknown.reward_rising is None and not unknown.gaming
    assert "--against-random" in unknown.sentence()


def test_the_rule_waits_for_enough_episodes_and_respects_its_thresholds() -> None:
    assert _tracker([drive(-1100.0)] * 5, [crash()] * (MIN_EPISODES - 6)).verdict() is None
    assert _tracker([drive(-1100.0)] * 10, [crash()] * 10).verdict().gaming  # type: ignore[union-attr]
    # A quarter of the recent episodes driving to the limit: below the early-end share, and long on average.
    mixed = [crash()] * 75 + [drive(-100.0)] * 25
    assert EARLY_END_FRACTION > 0.75
    assert not _tracker([drive(-1100.0)] * 20, mixed).verdict().gaming  # type: ignore[union-attr]
    # Most episodes end early, but not short: long episodes that end in a collision are no gaming.
    late = [sim_info(900, collided=True, reward=-300.0)] * 100
    assert not _tracker([drive(-1100.0)] * 20, late).verdict().gaming  # type: ignore[union-attr]


def test_the_warning_is_reported_when_it_turns_on_and_again_only_when_it_turns_off() -> None:
    tracker = _tracker([drive(-1100.0)] * 20, [crash()] * 30)
    first = tracker.changed()
    assert first is not None and first.gaming
    tracker.add_step([True] * 10, [crash()] * 10)
    assert tracker.changed() is None
    tracker.add_step([True] * 100, [drive(-150.0)] * 100)
    off = tracker.changed()
    assert off is not None and not off.gaming and tracker.changed() is None


class _Logger:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def record(self, key: str, value: float) -> None:
        self.values[key] = value


def test_run_stats_logs_task_scalars_and_reports_reward_gaming_once() -> None:
    said: list[str] = []
    events: list[dict[str, Any]] = []
    stats = RunStats(1e9, 10**9, said.append, lambda: None, True, record=events.append, max_episode_steps=LIMIT)
    model = SimpleNamespace(num_timesteps=0, logger=_Logger())
    stats.model = model  # type: ignore[assignment]
    for infos in ([drive(-1100.0)] * 2,) * 10 + ([crash(), crash()],) * 50:
        model.num_timesteps += 2
        stats.locals = {"dones": np.array([True, True]), "infos": infos}
        assert stats._on_step()
        stats._on_rollout_end()
    assert model.logger.values["task/collided"] == 1.0 and model.logger.values["task/mean_length"] > 0
    gaming = [e for e in events if e["event"] == "reward_gaming"]
    assert len(gaming) == 1 and gaming[0]["gaming"] is True and gaming[0]["length_limit"] == LIMIT
    assert len([s for s in said if "reward gaming" in s]) == 1 and said[-1].startswith("[Train] ! reward gaming:")
    stats._report(1e12)
    progress = events[-1]
    assert progress["event"] == "progress" and progress["reward_gaming"] is True and progress["task"]["episodes"] == 100
    assert progress["reward_gaming_now"]["gaming"] is True and progress["reward_gaming_now"]["reward_now"] == -205.0
    assert "task (last 100): orb collected" in said[-1]


def test_live_view_and_status_show_task_metrics_and_the_warning() -> None:
    verdict = _tracker([drive(-1100.0)] * 20, [crash()] * 100).verdict()
    assert verdict is not None
    status = {"run_id": "r", "state": "running", "tabs": [],
              "task": TaskSummary.of(list(_tracker([], [crash()] * 100).recent)).to_json(),
              "reward_gaming": verdict.to_json()}
    text = render(status)
    assert "episodes (last 100): mean reward -205.0 · orb collected 0% · deposited 0% · collided 100%" in text
    assert "! reward gaming: 100% of the last 100 episodes ended early" in text
    assert any("[Monitor] ! reward gaming" in line for line in monitor_lines(status))
    assert "episodes (last" not in render({"run_id": "r", "tabs": []}), "nothing before the first progress report"


def test_monitor_takes_task_metrics_and_the_refreshed_warning_from_the_trainer_events() -> None:
    from orchestrator.monitor import Monitoring

    monitoring = Monitoring.__new__(Monitoring)  # only its hook, without a fleet
    monitoring.sampler = SimpleNamespace(training={})  # type: ignore[assignment]
    task = TaskSummary.of([EpisodeOutcome.from_info(crash())]).to_json()
    monitoring.note_training("progress", {"task": task, "reward_gaming": False, "reward_gaming_now": None})
    assert monitoring.sampler.training == {"task": task}
    monitoring.note_training("reward_gaming", {"gaming": True, "message": "old figures"})
    monitoring.note_training("progress", {"task": task, "reward_gaming_now": {"gaming": True, "message": "new figures"}})
    assert monitoring.sampler.training["reward_gaming"]["message"] == "new figures"
    monitoring.note_training("reward_gaming", {"gaming": False, "message": "no reward gaming: ..."})
    assert monitoring.sampler.training["reward_gaming"]["gaming"] is False


def _write_run(run_dir: Path, gaming_at: int | None) -> None:
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"max_episode_steps": LIMIT}))
    records = []
    for i in range(1, 6):
        crashing = gaming_at is not None and i * 1000 >= gaming_at
        infos = [crash()] * 100 if crashing else [drive(-1000.0)] * 100
        task = TaskSummary.of([EpisodeOutcome.from_info(x) for x in infos]).to_json()
        records.append({"time": 100.0 + i, "event": "progress", "steps": i * 1000, "fps": 100.0, "episodes": 100 * i,
                        "mean_reward": task["mean_reward"], "tab_failures": 0, "task": task, "reward_gaming": crashing,
                        "reward_gaming_now": {"gaming": True, "message": f"reward gaming: figures of step {i * 1000}"}
                        if crashing and i * 1000 > gaming_at else None})
        if gaming_at is not None and i * 1000 == gaming_at:
            verdict = _tracker([drive(-1100.0)] * 20, [crash()] * 100).verdict()
            records.append({"time": 100.5 + i, "event": "reward_gaming", "steps": i * 1000, **verdict.to_json()})  # type: ignore[union-attr]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_morning_report_has_a_task_panel_and_says_reward_gaming(tmp_path: Path) -> None:
    _write_run(tmp_path / "gaming", gaming_at=3000)
    report = build_report(tmp_path / "gaming")
    assert report["reward_gaming"] is True and report["reward_gaming_since_step"] == 3000
    assert report["reward_gaming_message"] == "reward gaming: figures of step 5000", "the newest figures, not the flip's"
    assert report["task_first"]["collided"] == 0.0 and report["task_last"]["collided"] == 1.0
    assert (tmp_path / "gaming" / "report.png").stat().st_size > 0
    said: list[str] = []
    print_report(report, said.append)
    assert any("task (last 100 episodes): orb collected 0%" in s for s in said)
    assert any(s.startswith("  ! from step 3,000 to the end of the run, reward gaming:") for s in said)

    _write_run(tmp_path / "fine", gaming_at=None)
    fine = build_report(tmp_path / "fine")
    assert fine["reward_gaming"] is False and fine["reward_gaming_changes"] == []
    said.clear()
    print_report(fine, said.append)
    assert not [s for s in said if "gaming" in s] and any("orb collected 100%" in s for s in said)
    assert "  speed: 100.0 steps/s on average; mean episode reward -1000.0 -> -1000.0" in said


def test_a_run_shorter_than_one_progress_report_says_so_rather_than_none(tmp_path: Path) -> None:
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "events.jsonl").write_text("")
    said: list[str] = []
    print_report(build_report(tmp_path / "short"), said.append)
    assert "  speed and mean episode reward: the run ended before its first progress report" in said
    assert not [s for s in said if "None" in s]


class _FakeVecEnv:
    """Env 0 crashes every 3 steps (reward -1 a step, an orb collected); env 1 gets a frozen step
    every 4, a tab failure every 8, and ends a real episode every 8 (reward 1 a real step)."""

    num_envs = 2
    action_space = gym.spaces.Box(low=np.array([-1.0, -1.0, 0.0], dtype=np.float32), high=np.ones(3, dtype=np.float32))

    def __init__(self) -> None:
        self.t = 0

    def reset(self) -> np.ndarray:
        return np.zeros((2, 30), dtype=np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        self.t += 1
        obs = np.zeros((2, 30), dtype=np.float32)
        infos: list[dict[str, Any]] = [{"episode_length": 0}, {"episode_length": 0}]
        dones = np.array([self.t % 3 == 0, self.t % 2 == 0])
        rewards = np.array([-1.0, 0.0 if self.t % 4 == 2 or self.t % 8 == 4 else 1.0])
        if dones[0]:
            infos[0] = sim_info(3, collided=True, orbs=1)
        if self.t % 4 == 2:
            infos[1] = frozen_info("slow", obs[1])
        elif self.t % 8 == 4:
            infos[1] = {"tab_failure": "crash"}
        elif self.t % 8 == 0:
            infos[1] = sim_info(3, collided=False)
        return obs, rewards, dones, infos


def test_evaluate_scores_task_metrics_spread_over_the_envs_and_skips_frozen_steps_and_failures() -> None:
    result = evaluate(_FakeVecEnv(), None, episodes=4)  # type: ignore[arg-type]
    assert result.episodes == 4 and result.mean_length == 3
    assert result.mean_reward == 0.0, "two crashes of env 0 (-3 each) and two episodes of env 1 (+3 each)"
    assert result.task["collided"] == 0.5 and result.task["orb_collected"] == 0.5 and result.task["episodes"] == 4
    said: list[str] = []
    evaluation = evaluation_report(_FakeVecEnv(), None, 4, against_random=True, length_limit=LIMIT, say=said.append)  # type: ignore[arg-type]
    assert evaluation["task"]["collided"] == 0.5 and evaluation["against_random"] is None
    assert "outcomes" not in evaluation and evaluation["reward_gaming"] is None  # fewer than MIN_EPISODES
    assert any("nothing to compare with" in s for s in said)
    table = comparison_lines([result, result])
    assert table[0].split() == ["random", "random"] and any(line.startswith("collected an orb") for line in table)


def test_evaluate_takes_the_mean_action_unless_asked_to_sample_it() -> None:
    """`evaluate --stochastic` reaches the policy's predict, and the JSON says which actions were scored."""
    asked: list[bool] = []

    class Policy:
        def predict(self, observation: np.ndarray, *, deterministic: bool = True) -> tuple[np.ndarray, None]:
            asked.append(deterministic)
            return np.zeros((len(observation), 3), dtype=np.float32), None

    for deterministic in (True, False):
        asked.clear()
        report = evaluation_report(_FakeVecEnv(), Policy(), 4, say=lambda _: None, deterministic=deterministic)  # type: ignore[arg-type]
        assert asked and set(asked) == {deterministic}
        assert report["actions"] == ("deterministic" if deterministic else "sampled")


@pytest.mark.parametrize("model_drives", [False, True], ids=["crashes at once", "drives"])
def test_evaluate_against_random_warns_about_a_model_that_crashes_at_once_and_not_one_that_drives(
    monkeypatch: pytest.MonkeyPatch, model_drives: bool
) -> None:
    """Both models beat random actions by reward; only the one that drives does the task."""
    import training.evaluate as evaluation

    def fake_evaluate(venv: Any, model_path: Path | None, episodes: int, **kwargs: Any) -> evaluation.EvaluationResult:
        if model_path is None:  # random actions: long episodes, often an orb, a collision in half of them
            infos = [drive(-1100.0), sim_info(400, collided=True, reward=-1300.0)] * (episodes // 2)
        else:
            infos = [drive(-300.0, orbs=0) if model_drives else crash(-65.0)] * episodes
        outcomes = [EpisodeOutcome.from_info(i) for i in infos]
        summary = TaskSummary.of(outcomes)
        return evaluation.EvaluationResult(str(model_path or "random"), episodes, summary.mean_reward or 0.0, 0.0,
                                           summary.mean_length or 0.0, 40 * episodes, summary.to_json(), outcomes)

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    said: list[str] = []
    result = evaluation.evaluation_report(None, Path("m.zip"), 40, against_random=True, length_limit=LIMIT,  # type: ignore[arg-type]
                                          say=said.append, stage=1)
    assert any(s.split()[1:] == ["model", "random"] for s in said)
    assert result["against_random"]["task"]["collided"] == 0.5
    comparison = result["task_vs_random"]
    if model_drives:
        assert result["reward_gaming"]["gaming"] is False and not any(" ! reward gaming" in s for s in said)
        assert comparison["better"] is True
        assert comparison["figures"] == ["collided 0% vs 50% (fewer)", "mean length 1,000 vs 700 (longer)"]
        assert any(s.startswith("[Evaluate] ✓ the model does the stage-1 task better than random actions") for s in said)
    else:
        assert result["reward_gaming"]["gaming"] is True
        assert "above that of random actions on the same tabs, -1,200.0" in result["reward_gaming"]["message"]
        assert any(s.startswith("[Evaluate] ! reward gaming:") for s in said)
        assert comparison["better"] is False and comparison["figures"][0] == "collided 100% vs 50% (not fewer)"
        assert any(s.startswith("[Evaluate] ! the model does not do the stage-1 task better") for s in said)


def test_the_task_comparison_with_random_actions_at_the_orb_stages() -> None:
    random = TaskSummary.of([EpisodeOutcome.from_info(drive(orbs=1)), EpisodeOutcome.from_info(drive(orbs=0))])
    collects = TaskSummary.of([EpisodeOutcome.from_info(sim_info(300, collided=True, orbs=2, construction=1))] * 2)
    nothing = TaskSummary.of([EpisodeOutcome.from_info(drive(orbs=0))] * 2)
    better = compare_with_random(collects, random, 4)
    assert better.better and better.figures == ("collected an orb 100% vs 50% (more)",
                                                "mean orbs deposited 1.00 vs 0.00 (at least as many)")
    assert not compare_with_random(nothing, random, 3).better
    unknown = TaskSummary.of([EpisodeOutcome.from_info({"episode_length": 10})])
    assert not compare_with_random(unknown, random, 1).better, "a figure the page does not report fails the check"


def test_a_random_policy_whose_reward_wobbles_up_a_little_is_no_gaming() -> None:
    # A young policy crashes in every episode and its mean reward moves by noise alone (seen: -11.9
    # against -11.9): that is no rise, so no warning yet.
    verdict = _tracker([crash(-12.0)] * 20, [crash(-11.6)] * 100).verdict()
    assert verdict is not None and verdict.ends_early_and_short and verdict.reward_rising is False and not verdict.gaming
    risen = _tracker([crash(-12.0)] * 20, [crash(-10.0)] * 100).verdict()
    assert risen is not None and risen.gaming
