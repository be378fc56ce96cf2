"""The Gymnasium env with a real headless tab of the embedded simulation behind it."""

from __future__ import annotations

import time

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


def test_a_page_with_its_socket_in_a_shared_worker_steps_recovers_and_stays_out_of_playwrights_sight(
    ports, no_leftovers
) -> None:
    """`socket=worker` (train's and bench's pages): the same steps as a page's own socket, the
    fault hooks still work through the worker, and Playwright sees no WebSocket (its per-frame
    events are what the worker saves)."""
    app, base = ports
    with real_tabs(app, [base, base + 1], [42, 42], extra="&socket=worker") as (envs, pool, loop):
        page = pool.tabs[0].page
        seen: list[str] = []
        page.on("websocket", lambda ws: seen.append(ws.url))
        worker_env, twin = envs
        rng = np.random.default_rng(2)
        worker_env.reset()
        twin.reset()
        for _ in range(300):
            action = rng.uniform([-1, -1, 0], [1, 1, 1]).astype(np.float32)
            a, b = worker_env.step(action), twin.step(action)
            np.testing.assert_array_equal(a[0], b[0])  # same seed, same actions: same simulation
            if a[2] or a[3]:
                worker_env.reset()
                twin.reset()
        assert loop.run(pool.evaluate(0, "window.lunarfleet.disconnect()"), timeout=30) is True
        *_, truncated, info = worker_env.step(np.zeros(3, dtype=np.float32))
        assert truncated and info["tab_failure"] in ("disconnected", "page_reconnected"), info
        worker_env.reset()  # the worker has reconnected by itself
        worker_env.step(np.zeros(3, dtype=np.float32))
        assert loop.run(pool.evaluate(0, "window.lunarfleet.sendGarbage()"), timeout=30) is True
        *_, truncated, info = worker_env.step(np.zeros(3, dtype=np.float32))
        assert truncated and info["tab_failure"] == "garbage", info
        worker_env.reset()
        assert worker_env.step(np.zeros(3, dtype=np.float32))[4].get("tab_failure") is None
        assert loop.run(pool.evaluate(0, "window.lunarfleet.connected"), timeout=30) is True
        assert seen == [], f"Playwright saw the page's socket: {seen}"


def test_the_page_replays_what_its_worker_answered_and_ends_in_the_same_state(ports, no_leftovers) -> None:
    """With `socket=worker` the worker answers the steps and the page replays them a batch at a
    time (webapp/worker_answers.js): the page's own simulation, which it draws, snapshots and
    records, must end where the answers Python got say it is."""
    app, base = ports
    with real_tabs(app, [base], [11], extra="&socket=worker") as (envs, pool, loop):
        env = envs[0]
        rng = np.random.default_rng(5)
        obs, _ = env.reset()
        steps = 0
        for _ in range(400):
            obs, _, terminated, truncated, info = env.step(rng.uniform([-1, -1, 0], [1, 1, 1]).astype(np.float32))
            assert info.get("tab_failure") is None, info
            steps += 1
            if terminated or truncated:
                obs, _ = env.reset()
        # the page gets the worker's frames every 0.1 s: wait for the last batch (no deadline to meet)
        for _ in range(300):
            if loop.run(pool.evaluate(0, "window.lunarfleet.steps"), timeout=30) == steps:
                break
            time.sleep(0.1)
        assert loop.run(pool.evaluate(0, "window.lunarfleet.steps"), timeout=30) == steps
        page_obs = loop.run(pool.evaluate(0, "window.lunarfleet.session.sims[0].observation()"), timeout=30)
        np.testing.assert_allclose(np.asarray(page_obs, dtype=np.float32), obs, atol=1e-6)
