"""`lunarfleet bench`, (c): PPO training fps with tabs versus the null env, at identical settings
(the original app's hyperparameters, n_steps from the rollout size), the two taking turns rollout
by rollout; PPO at the original app's settings (4 envs, n_steps 2,048) as 4 tabs x 1 simulation
and packed as 2 tabs x 2; and, unless `--quick`, PPO over one simulation per tab for each vec env
kind."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from orchestrator.bench_results import MAX_EPISODE_STEPS, BenchResult, Row
from training.null_env import NullVecEnv

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from orchestrator.bench_session import Bench


class PPOTimer:
    """Splits a PPO run's wall time into collecting rollouts and training on them."""

    def __init__(self) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        timer = self

        class Callback(BaseCallback):
            def _on_rollout_start(self) -> None:
                timer._started = time.monotonic()

            def _on_rollout_end(self) -> None:
                timer.collect_s += time.monotonic() - timer._started

            def _on_step(self) -> bool:
                return True

        self.collect_s = 0.0
        self._started = 0.0
        self.callback = Callback()


class PPORun:
    """PPO (the original app's hyperparameters, n_steps from `rollout`) on `venv`, timed in wall clock,
    learning one or more rollouts at a time (so two runs can take turns)."""

    def __init__(self, venv: VecEnv, rollout: int, seed: int = 0) -> None:
        from training.trainer import PPOSettings, new_ppo

        self.n_steps = max(rollout // venv.num_envs, 2)
        self.settings = dataclasses.replace(PPOSettings(), n_steps=self.n_steps)
        self.venv = venv
        self.model = new_ppo(venv, self.settings, seed=seed)
        self.timer = PPOTimer()
        self.elapsed = 0.0

    def learn(self, rollouts: int = 1) -> None:
        began = time.monotonic()
        self.model.learn(
            total_timesteps=self.n_steps * self.venv.num_envs * rollouts,
            callback=self.timer.callback,
            reset_num_timesteps=self.model.num_timesteps == 0,
        )
        self.elapsed += time.monotonic() - began

    def result(self) -> dict[str, Any]:
        return {
            "fps": self.model.num_timesteps / self.elapsed,
            "timesteps": self.model.num_timesteps,
            "elapsed_s": round(self.elapsed, 3),
            "collect_s": round(self.timer.collect_s, 3),
            "train_s": round(self.elapsed - self.timer.collect_s, 3),
            "n_envs": self.venv.num_envs,
            "n_steps": self.n_steps,
            "batch_size": self.settings.batch_size,
            "n_epochs": self.settings.n_epochs,
        }


def ppo_fps(venv: VecEnv, rollout: int, rollouts: int, seed: int = 0) -> dict[str, Any]:
    run = PPORun(venv, rollout, seed)
    run.learn(rollouts)
    return run.result()


# ---- the phase -----------------------------------------------------------------------------------
def ppo_phase(bench: Bench) -> None:
    import torch

    from orchestrator.sizing import trainer_threads

    s = bench.s
    _original_settings(bench)
    k = s.ppo_sims or _best_sims(bench.result, s.ppo_tabs) or max(s.sims, default=1)
    threads = trainer_threads(envs=s.ppo_tabs)
    torch.set_num_threads(threads)
    tabs, null = _tabs_and_null_in_turn(bench, s.ppo_tabs, k, s.ppo_rollout, s.ppo_rollouts)
    _note_tabs_and_null(bench.result, s.ppo_tabs, k, threads, tabs, null)
    if s.ppo_single_sim:
        _single_sim_ppo(bench)
    r = bench.result
    bench.say(
        f"[Bench]   PPO {r.ppo_fps_tabs:,.0f} fps with tabs ({_mode(k)}, {s.ppo_tabs * k} envs; collecting {tabs['collect_s']:.1f} s, "
        f"training {tabs['train_s']:.1f} s) vs {r.ppo_fps_null:,.0f} with the null env "
        f"(collecting {null['collect_s']:.1f} s, training {null['train_s']:.1f} s): {r.ppo_ratio:.2f}x"
    )


def _best_sims(result: BenchResult, tabs: int) -> int | None:
    """The K of the batched rows that collected fastest with `tabs` tabs."""
    batched = [row for row in result.rows if row.mode.startswith("inline-sims") and row.tabs == tabs]
    return max(batched, key=lambda row: row.steps_per_s).sims_per_tab if batched else None


def _mode(k: int) -> str:
    return f"inline-sims{k}" if k > 1 else "inline"


def _tabs_and_null_in_turn(
    bench: Bench, tabs: int, k: int, rollout: int, rollouts: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """PPO with `tabs` tabs of `k` simulations and with as many null envs; the two runs take
    turns, rollout by rollout, so both meet the same machine load."""
    with bench.browser(tabs, extra=f"&sims={k}" if k > 1 else ""), bench.vec_env(tabs, "inline", k) as venv:
        with_tabs = PPORun(venv, rollout)
        with_null = PPORun(NullVecEnv(tabs * k, MAX_EPISODE_STEPS), rollout)
        for _ in range(rollouts):
            with_tabs.learn()
            with_null.learn()
        return with_tabs.result(), with_null.result()


# ---- PPO at the original app's settings: 4 envs, n_steps 2,048 ----------------------------------
ORIGINAL_ENVS = 4
# The same 4 PPO envs as 4 tabs x 1 simulation (the original app's way), packed as 2 tabs x 2
# simulations (half the messages) and as 1 tab x 4 (a quarter; the embedded page only): result
# key, tabs, simulations per tab. `--envs auto` picks from these figures (orchestrator/sizing.py).
ORIGINAL_LAYOUTS = (
    ("ppo_original_settings", 4, 1),
    ("ppo_original_settings_packed", 2, 2),
    ("ppo_original_settings_one_tab", 1, 4),
)


def _original_settings(bench: Bench) -> None:
    """PPO exactly as most users run it (n_steps 2,048, batch 64, 10 epochs, 1 torch thread),
    with tabs and with the null env in turn, at least 2 rollouts each, for each layout."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for key, tabs, k in ORIGINAL_LAYOUTS:
            run_tabs, run_null = _tabs_and_null_in_turn(
                bench, tabs, k, ORIGINAL_ENVS * bench.s.original_n_steps, max(2, bench.s.ppo_rollouts)
            )
            ratio = round(run_tabs["fps"] / run_null["fps"], 4)
            setattr(bench.result, key, {"tabs": tabs, "sims_per_tab": k, "torch_threads": 1,
                                        "with_tabs": run_tabs, "with_null_env": run_null, "ratio": ratio})
            bench.say(f"[Bench]   PPO at the original settings, {tabs} tab{'' if tabs == 1 else 's'} x {k}: {run_tabs['fps']:,.0f} fps with tabs "
                      f"(collecting {run_tabs['collect_s']:.1f} s, training {run_tabs['train_s']:.1f} s) vs "
                      f"{run_null['fps']:,.0f} with the null env: {ratio:.2f}x")
    finally:
        torch.set_num_threads(threads)


def _note_tabs_and_null(
    r: BenchResult, tabs_n: int, k: int, threads: int, tabs: dict[str, Any], null: dict[str, Any]
) -> None:
    r.ppo_fps_tabs, r.ppo_fps_null = round(tabs["fps"], 1), round(null["fps"], 1)
    r.ppo_ratio = round(tabs["fps"] / null["fps"], 4)
    # Training is the same computation in both runs, but on a shared machine its time varies by
    # tens of percent; with their mean for both, the ratio shows what collection alone costs.
    train = (tabs["train_s"] + null["train_s"]) / 2
    per_step_tabs = (tabs["collect_s"] + train) / tabs["timesteps"]
    per_step_null = (null["collect_s"] + train) / null["timesteps"]
    r.ppo_ratio_same_training = round(per_step_null / per_step_tabs, 4)
    mode = _mode(k)
    r.ppo = {"vec_env": mode, "tabs": tabs_n, "sims_per_tab": k, "torch_threads": threads, "with_tabs": tabs, "with_null_env": null}
    envs = tabs_n * k
    r.rows.append(Row("ppo-tabs", tabs_n, k, envs, r.ppo_fps_tabs, r.ppo_ratio, note=f"PPO fps, {mode}"))
    r.rows.append(Row("ppo-null", 0, 1, envs, r.ppo_fps_null, 1.0, note="PPO fps, null env"))


def _single_sim_ppo(bench: Bench) -> None:
    """PPO over one simulation per tab with each vec env kind, against as many null envs."""
    s, r = bench.s, bench.result
    for kind in s.kinds:
        with bench.browser(s.ppo_tabs), bench.vec_env(s.ppo_tabs, kind, 1) as venv:
            run = ppo_fps(venv, s.ppo_rollout, s.ppo_rollouts)
        r.ppo[f"with_tabs_{kind}"] = run
        r.rows.append(Row(f"ppo-{kind}", s.ppo_tabs, 1, s.ppo_tabs, round(run["fps"], 1), note=f"PPO fps, {kind}"))
        bench.say(f"[Bench]   PPO {run['fps']:,.0f} fps with {kind}, one simulation per tab "
                  f"(collecting {run['collect_s']:.1f} s, training {run['train_s']:.1f} s)")
    null1 = ppo_fps(NullVecEnv(s.ppo_tabs, MAX_EPISODE_STEPS), s.ppo_rollout, s.ppo_rollouts)
    r.ppo["with_null_env_single_sim"] = null1
    r.rows.append(Row("ppo-null", 0, 1, s.ppo_tabs, round(null1["fps"], 1), 1.0, note="PPO fps, null env"))
    for row in r.rows:
        if row.mode in ("ppo-inline", "ppo-subproc"):
            row.ratio_to_ceiling = float(f"{row.steps_per_s / null1['fps']:.4g}")
