"""The Gymnasium env with a real headless tab of the embedded simulation behind it."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from tests.real_tabs import real_tabs

pytestmark = pytest.mark.browser


def test_gymnasium_env_checker_passes_with_a_real_tab(ports, no_leftovers) -> None:
    app, base = ports
    with real_tabs(app, [base], [7]) as (envs, _, _):
        check_env(envs[0], skip_render_check=True)


def test_two_tabs_with_the_same_seed_and_actions_give_identical_observations(ports, no_leftovers) -> None:
    app, base = ports
    with real_tabs(app, [base, base + 1], [42, 42]) as (envs, _, _):
        rng = np.random.default_rng(0)
        a, b = envs
        obs_a, _ = a.reset()
        obs_b, _ = b.reset()
        np.testing.assert_array_equal(obs_a, obs_b)
        episodes = 0
        for _ in range(1500):
            action = rng.uniform([-1, -1, 0], [1, 1, 1]).astype(np.float32)
            ra, rb = a.step(action), b.step(action)
            np.testing.assert_array_equal(ra[0], rb[0])
            assert ra[1:4] == rb[1:4]
            if ra[2] or ra[3]:
                episodes += 1
                obs_a, _ = a.reset()
                obs_b, _ = b.reset()
                np.testing.assert_array_equal(obs_a, obs_b)
        assert episodes > 0, "random actions should end at least one episode in 1500 steps"


def test_one_tab_answers_ten_thousand_steps_without_error(ports, no_leftovers) -> None:
    app, base = ports
    with real_tabs(app, [base], [3]) as (envs, _, _):
        env = envs[0]
        rng = np.random.default_rng(1)
        env.reset()
        for _ in range(10_000):
            obs, reward, terminated, truncated, info = env.step(rng.uniform([-1, -1, 0], [1, 1, 1]))
            assert obs.shape == (30,) and np.all(np.isfinite(obs)) and np.all(np.abs(obs) <= 1.0)
            assert np.isfinite(reward)
            assert "tab_failure" not in info
            if terminated or truncated:
                env.reset()
        assert env.tab_failures == 0
