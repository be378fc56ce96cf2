"""LunarFleet as a library: `lunarfleet.make_vec_env` under SB3's PPO (a tab crash healed, nothing left
behind), the original app's trainer with only its vec env line replaced, and `LunarFleet/Rover-v0`
through both env checkers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import lunarfleet
from browser_pool import faults
from browser_pool.processes import RECORDS_DIR
from tests.conftest import REPO, read_events, wait_until
from tests.fake_page import FakePage, PageThread, free_port
from tests.test_e2e_user_app import compat_page_served
from training.step_round import TAB_FAILURE
from training.tab_link import LinkDeadlines, PageSettings
from training.vec_env import VEC_ENV_KINDS, FleetEnvSettings, make_vec_env

N_STEPS = 64  # per env and rollout: two rollouts of 2 tabs are 256 steps


# ---- no browser ------------------------------------------------------------------------------
def test_unknown_options_are_refused_naming_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) stagee, timesteps; the options are n_envs, url, sims_per_tab, timescale, .*stage"):
        lunarfleet.make_vec_env(2, stagee=2, timesteps=100)
    with pytest.raises(TypeError, match=r"LunarFleet/Rover-v0: unknown option\(s\) sims_per_tab, stages; the options are url, timescale"):
        gym.make("LunarFleet/Rover-v0", stages=2, sims_per_tab=4)


def test_bad_values_are_refused_in_the_apis_words_before_anything_opens() -> None:
    with pytest.raises(ValueError, match=r"make_vec_env: stage: invalid choice: '?7'? \(choose from 1, 2, 3, 4\)"):
        lunarfleet.make_vec_env(2, stage=7)
    with pytest.raises(ValueError, match="sims_per_tab needs vec_env inline"):
        lunarfleet.make_vec_env(2, sims_per_tab=4, vec_env="subproc")
    with pytest.raises(ValueError, match="must be a positive whole number"):
        lunarfleet.make_vec_env(0)


def test_the_version_is_the_package_metadatas() -> None:
    import tomllib
    from importlib.metadata import version

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert lunarfleet.__version__ == version("lunarfleet") == pyproject["project"]["version"]


@pytest.mark.parametrize("kind", VEC_ENV_KINDS)
def test_each_vec_env_kind_answers_the_original_apps_env_methods(kind: str) -> None:
    """connect waits for the tab's page; the other three send it their message (fake pages, no browser)."""
    ports = [free_port(), free_port()]
    settings = FleetEnvSettings(ports, PageSettings(), LinkDeadlines(step_s=10.0, connect_s=30.0), vec_env=kind)
    venv = make_vec_env(settings)
    pages = [PageThread(FakePage(port)) for port in ports]
    try:
        pages[0].start()
        venv.env_method("connect", indices=[0])
        asked = time.monotonic()
        threading.Timer(1.0, pages[1].start, kwargs={"wait_connected": None}).start()  # tab 2 comes later
        venv.env_method("connect", indices=[1])
        assert time.monotonic() - asked >= 1.0  # connect waited for the page, which started 1 s later
        wait_until(pages[1].page.connected.is_set, 10, "page 2 sees its connection")
        for i in (0, 1):
            venv.env_method("set_timescale", timescale=3.5, indices=[i])
            venv.env_method("send_parallel_training_info", 2, i, indices=[i])
        venv.env_method("send_checkpoint_info", "lunar_rover_ppo_500_steps", 500, indices=[0])
        for i, page in enumerate(pages):
            wanted = [{"type": "set_timescale", "timescale": 3.5}, {"type": "parallel_training_info", "env_count": 2, "env_id": i}]
            if i == 0:
                wanted.append({"type": "checkpoint_info", "checkpoint_name": "lunar_rover_ppo_500_steps", "checkpoint_steps": 500})
            wait_until(lambda page=page, wanted=wanted: all(m in page.page.received for m in wanted), 10, f"page {i + 1} got {wanted}")
        assert not any(m["type"] == "checkpoint_info" for m in pages[1].page.received)  # indices=[0] only
        with pytest.raises(Exception, match="no attribute 'no_such_method'|no method 'no_such_method'"):
            venv.env_method("no_such_method")  # a name no tab answers is said, whichever the kind
    finally:
        venv.close()
        for page in pages:
            page.stop()


# ---- PPO on make_vec_env, a tab crash healed as in `lunarfleet train` -------------------------
class CrashTab1(BaseCallback):
    """Kills tab 1's renderer once, halfway through the first rollout; notes what the envs saw."""

    def __init__(self, venv: lunarfleet.FleetVecEnv) -> None:
        super().__init__()
        self.venv = venv
        self.crashed_at: float | None = None
        self.failures_seen: list[str] = []

    def _on_step(self) -> bool:
        if self.crashed_at is None and self.num_timesteps >= N_STEPS:
            self.venv.fleet.run(faults.inject(self.venv.fleet.pool, "crash", 0), timeout=30)
            self.crashed_at = time.time()
        self.failures_seen += [info[TAB_FAILURE] for info in self.locals["infos"] if TAB_FAILURE in info]
        return True


def recovered_after(runs: Path, since: float) -> dict | None:
    """The fleet's `tab_recovered` event of tab 1 after `since`, if it came."""
    run_dir = next(iter(runs.iterdir()), None)
    events = read_events(run_dir) if run_dir else []
    return next((e for e in events if e["event"] == "tab_recovered" and e["tab"] == 0 and e["time"] >= since), None)


@pytest.mark.browser
def test_ppo_trains_on_make_vec_env_through_a_tab_crash_and_leaves_no_process(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    runs = tmp_path / "runs"
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with lunarfleet.make_vec_env(2, base_port=base, app_port=app, max_episode_steps=200, runs_dir=runs) as venv:
        browser_pid = venv.fleet.pool.browser_pid
        crash = CrashTab1(venv)
        model = PPO("MlpPolicy", venv, n_steps=N_STEPS, batch_size=64, n_epochs=1, device="cpu", seed=0)
        model.learn(2 * N_STEPS * venv.num_envs, callback=crash)
        assert model.num_timesteps == 2 * N_STEPS * venv.num_envs  # the run completed: two whole rollouts
        assert crash.crashed_at is not None
        # The replacement page steps once the env has reset against it: train on, a rollout at a
        # time, until the fleet says so (however long this machine takes).
        end = time.monotonic() + 180
        while (recovered := recovered_after(runs, crash.crashed_at)) is None and time.monotonic() < end:
            model.learn(N_STEPS * venv.num_envs, callback=crash, reset_num_timesteps=False)
        assert recovered is not None, "tab 1 never stepped again after its renderer was killed"
        assert "crash" in crash.failures_seen or "disconnected" in crash.failures_seen, crash.failures_seen
    assert venv.closed
    assert not psutil.pid_exists(browser_pid) or psutil.Process(browser_pid).status() == psutil.STATUS_ZOMBIE

    def all_gone() -> bool:
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in children_before]
        return not [p for p in left if p.status() != psutil.STATUS_ZOMBIE]

    wait_until(all_gone, 10, "every process the vec env started has ended after its with block")
    events = [e["event"] for e in read_events(next(runs.iterdir()))]
    assert "tab_replaced" in events and "env_saw_failure" in events


@pytest.mark.browser
def test_a_vec_env_left_open_is_closed_at_interpreter_exit(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    script = (
        "import os, lunarfleet\n"
        f"env = lunarfleet.make_vec_env(1, base_port={base}, app_port={app})\n"
        "env.reset()\n"
        "print('pids', os.getpid(), env.fleet.pool.browser_pid, flush=True)\n"  # and exit without close()
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    owner, browser = (int(x) for x in done.stdout.split("pids ", 1)[1].split()[:2])
    # close() ran: the browser is gone, and its profile folder and record with it (a process that
    # is killed leaves them to the next run's sweep)
    assert not psutil.pid_exists(browser) or psutil.Process(browser).status() == psutil.STATUS_ZOMBIE
    assert not (RECORDS_DIR / f"{owner}.json").exists()


# ---- the original app's trainer, its SubprocVecEnv line replaced --------------------------------
def original_trainer(make_env, models: Path, num_envs: int, timescale: float) -> PPO:  # noqa: ANN001 - as the user's script
    """The flow of the original app's train_ppo_parallel.py after its vec env line (which was
    `env = SubprocVecEnv([make_env(i) for i in range(NUM_ENVS)])`)."""
    env = make_env(num_envs)
    print(f"[Setup] Creating {num_envs} parallel environments...")
    for i in range(num_envs):
        print(f"[Setup] Waiting for browser tab {i + 1} on port {8765 + i}...")
        env.env_method("connect", indices=[i])
        env.env_method("set_timescale", timescale=timescale, indices=[i])
        env.env_method("send_parallel_training_info", num_envs, i, indices=[i])
        print(f"[Setup] ✓ Browser tab {i + 1} connected!")
    saved = sorted(models.glob("lunar_rover_ppo_*_steps.zip"))
    if saved:
        model = PPO.load(saved[-1], env=env, device="cpu")
        env.env_method("send_checkpoint_info", saved[-1].stem, model.num_timesteps, indices=[0])
    else:
        model = PPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=64, n_epochs=1, device="cpu", verbose=0)
    model.learn(total_timesteps=N_STEPS * num_envs, reset_num_timesteps=not saved)
    model.save(models / f"lunar_rover_ppo_{model.num_timesteps}_steps")
    return model


@pytest.mark.browser
def test_the_original_apps_trainer_runs_on_make_vec_env_and_its_messages_reach_the_pages(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    models = tmp_path / "models"
    models.mkdir()
    opened: list[lunarfleet.FleetVecEnv] = []

    def make_env(num_envs: int) -> lunarfleet.FleetVecEnv:  # the one line the user changes
        opened.append(lunarfleet.make_vec_env(num_envs, url=page + "?wsPort={port}&maxSteps={max_steps}", base_port=base))
        return opened[-1]

    def page_state(venv: lunarfleet.FleetVecEnv, tab: int) -> dict:
        return venv.fleet.run(venv.fleet.pool.evaluate(tab, "window.compat"), timeout=30)

    with compat_page_served(app) as page:
        try:
            first = original_trainer(make_env, models, num_envs=2, timescale=3.0)
            assert first.num_timesteps == 2 * N_STEPS
            for tab in (0, 1):
                state = page_state(opened[0], tab)
                assert state["parallelText"] == "Parallel Training: 2 environments"
                # one set_timescale with the page's settings as it connected, one from the trainer
                assert state["received"]["set_timescale"] >= 2, state["received"]
                assert state["received"]["parallel_training_info"] >= 2, state["received"]
            opened[0].close()
            second = original_trainer(make_env, models, num_envs=2, timescale=3.0)  # resumes the checkpoint
            assert second.num_timesteps == 4 * N_STEPS
            state = page_state(opened[1], 0)
            assert state["checkpointText"] == f"Checkpoint: lunar_rover_ppo_{2 * N_STEPS}_steps ({2 * N_STEPS} steps)"
            assert page_state(opened[1], 1)["checkpointText"] == ""  # indices=[0]: the first tab only
        finally:
            for venv in opened:
                venv.close()


# ---- LunarFleet/Rover-v0 -----------------------------------------------------------------------
@pytest.mark.browser
def test_the_registered_rover_env_passes_both_env_checkers_heals_a_crash_and_closes_everything(ports, no_leftovers) -> None:
    app, base = ports
    env = gym.make("LunarFleet/Rover-v0", stage=1, base_port=base, app_port=app)
    try:
        rover = env.unwrapped
        assert isinstance(rover, lunarfleet.RoverEnv)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any complaint of Gymnasium's checker fails the test
            gym_check_env(rover)  # also makes and closes a second env from the spec, twice closed
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            sb3_check_env(rover)
        # SB3 only recommends a symmetric action space; the rover's dig is 0..1, as the original app's
        assert all("symmetric and normalized Box action space" in str(w.message) for w in said), [str(w.message) for w in said]
        first, _ = env.reset(seed=7)
        again, _ = env.reset(seed=7)
        assert (first == again).all()
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (30,) and not terminated and not truncated and info["episode_length"] == 1

        # its tab crashes: the episode ends truncated, the pool replaces the tab, reset waits for it
        stand_still = np.zeros(3, dtype=np.float32)  # no collision can end the episode first
        rover.fleet.run(faults.inject(rover.fleet.pool, "crash", 0), timeout=30)
        end = time.monotonic() + 120
        while TAB_FAILURE not in info and time.monotonic() < end:
            obs, reward, terminated, truncated, info = env.step(stand_still)
        assert truncated and not terminated and TAB_FAILURE in info, info
        env.reset()
        assert env.step(stand_still)[4]["episode_length"] == 1  # a new episode, on the new page
        wait_until(rover.fleet.recoveries, 30, "the fleet saw the replaced tab step again")
    finally:
        env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.unwrapped.step(env.action_space.sample())
