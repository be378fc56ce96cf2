"""The curriculum's phases: the stage, and the embedded page's obstacle count, from a step count."""

from __future__ import annotations

from training.curriculum_plan import (
    FULL_FIELD,
    OBSTACLE_RAMP,
    ORIGINAL_BUDGETS,
    Phase,
    describe_phase,
    phase_for,
    stage_for,
)


def test_the_original_budgets_give_the_stages_of_the_original_guide() -> None:
    assert [stage_for(s) for s in (0, 199_999, 200_000, 499_999, 500_000, 999_999, 1_000_000, 5_000_000)] == [
        1, 1, 2, 2, 3, 3, 4, 4,
    ]


def test_the_obstacle_field_rises_in_even_parts_of_stages_1_and_2_and_is_full_after() -> None:
    assert OBSTACLE_RAMP[1][0] == 0 and OBSTACLE_RAMP[2][-1] == FULL_FIELD
    assert phase_for(0) == Phase(1, 0)
    assert phase_for(99_999) == Phase(1, 0)
    assert phase_for(100_000) == Phase(1, 4)
    assert phase_for(200_000) == Phase(2, 4)
    assert phase_for(300_000) == Phase(2, 8)
    assert phase_for(400_000) == Phase(2, FULL_FIELD)
    assert phase_for(499_999) == Phase(2, FULL_FIELD)
    assert phase_for(500_000) == Phase(3, FULL_FIELD)
    assert phase_for(2_000_000) == Phase(4, FULL_FIELD)


def test_custom_budgets_split_the_same_way_even_when_tiny() -> None:
    budgets = [2, 3, 1]
    assert [phase_for(s, budgets) for s in range(7)] == [
        Phase(1, 0), Phase(1, 4), Phase(2, 4), Phase(2, 8), Phase(2, FULL_FIELD), Phase(3, FULL_FIELD), Phase(4, FULL_FIELD),
    ]
    assert sum(ORIGINAL_BUDGETS) == 1_000_000


def test_the_console_and_the_event_stream_word_a_phase_the_same_way() -> None:
    from orchestrator.events import describe

    assert describe_phase(2, 4, 250_000) == "[Train] Curriculum: stage 2 (embedded page: 4 of 11 obstacles) from step 250,000"
    assert describe_phase(3, FULL_FIELD, 500_000) == "[Train] Curriculum: stage 3 from step 500,000"
    assert describe("stage", {"stage": 2, "obstacles": 4, "steps": 250_000}) == describe_phase(2, 4, 250_000)
    assert describe("stage", {"stage": 3, "steps": 7}) == "[Train] Curriculum: stage 3 from step 7"  # an older run's event


def test_the_curriculum_trains_each_stage_with_its_discount_and_learning_rate_and_says_so(tmp_path) -> None:
    """The trainer's curriculum callback on a real PPO (CartPole stands in for the tabs)."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from training.curriculum_plan import StagePPO
    from training.trainer import PPOSettings, TrainSettings, _curriculum

    class Staged(gym.Wrapper):
        stages: list[tuple[int, int]] = []

        def set_stage(self, stage: int, obstacles: int) -> None:
            self.stages.append((stage, obstacles))

    venv = DummyVecEnv([lambda: Staged(gym.make("CartPole-v1"))])
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    settings = TrainSettings(total_timesteps=96, models_dir=tmp_path, curriculum=[16, 16, 16],
                             stage_ppo={4: StagePPO(gamma=0.995, learning_rate=1e-4)},
                             ppo=PPOSettings(n_steps=16, batch_size=16, n_epochs=1))
    said: list[str] = []
    events: list[dict] = []
    model.learn(96, callback=_curriculum(settings, venv, model, said.append, events.append))
    assert {e["stage"]: (e["gamma"], e["learning_rate"]) for e in events} == {
        1: (0.99, 3e-4), 2: (0.99, 3e-4), 3: (0.99, 3e-4), 4: (0.995, 1e-4)}
    assert model.gamma == model.rollout_buffer.gamma == 0.995, "the returns are computed with the stage's discount"
    assert model.policy.optimizer.param_groups[0]["lr"] == 1e-4, "the updates of stage 4 used its learning rate"
    assert said.count("[Train] PPO in stage 4: gamma 0.995 (was 0.99), learning rate 0.0001 (was 0.0003)") == 1
    assert Staged.stages[-1] == (4, FULL_FIELD)
