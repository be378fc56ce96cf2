"""`lunarfleet bench`, (g): the same number of tabs through Ray hosts (`--ray local --hosts 2`,
2 tabs each, by default) against the inline vec env with as many tabs, in alternating windows
(`PAIRS` of each, one after the other; the ratio is the median of the pairs' ratios: this
machine's speed drifts by a third over a bench run, so rows measured minutes apart gave ratios
from 0.47 to 0.74 for the same code, and a pair's two windows share the drift); PPO
through them at the original app's settings (rollouts of `--ppo-rollout` steps, one simulation per
tab; compared with `ppo-inline` where the full bench measures it); and the seconds Ray takes to
start and the hosts to have their tabs connected.

Also the hosts' own share of a vec step, measured on the same hosts: one empty step frame to
every host per round on its step channel (no tab stepped; the host only packs its reply), rounds
per second and the CPU of a round. A vec step through the hosts can be no faster than this,
whatever the tabs do.

The hosts are made as `train --ray` makes them (`orchestrator/ray_fleet.py`), each with its own
browser and page server. Skipped, and said so, where Ray is not installed.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.bench_meters import collect, settle
from orchestrator.bench_ppo import ppo_fps
from orchestrator.bench_results import MAX_EPISODE_STEPS, Row
from orchestrator.config import RunConfig
from orchestrator.events import EventLog

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from orchestrator.bench_session import Bench
    from training.ray_transport import RayTransport

PORT_OFFSET = 200  # the hosts' ports, clear of the bench's own tabs and page server
PAIRS = 3  # alternating windows of the hosts and of the inline vec env, for the ratio


def ray_phase(bench: Bench) -> None:
    from orchestrator.ray_fleet import HostFleet, RayMissing, require_ray, start_ray, trainer_address

    s, r = bench.s, bench.result
    try:
        require_ray()
    except RayMissing as exc:
        r.ray = {"skipped": str(exc)}
        bench.say(f"[Bench]   skipped: {exc}")
        return
    hosts, tabs = s.ray_hosts, s.ray_tabs_per_host
    cfg = RunConfig(
        command="bench", envs=tabs, ray=s.ray, hosts=hosts, max_episode_steps=MAX_EPISODE_STEPS,
        base_port=s.base_port + PORT_OFFSET, app_port=s.app_port + PORT_OFFSET, browser=s.browser,
        runs_dir=Path(tempfile.gettempdir()),
    )
    began = time.monotonic()
    hosts, ray_s = start_ray(s.ray, hosts)
    fleet = HostFleet(cfg, EventLog(None, echo=False), hosts)
    try:
        hosts_s = fleet.start(cfg)
        from training.ray_transport import RayVecEnv

        with contextlib.closing(RayVecEnv(fleet.actors, tabs, fleet.ports, report=fleet,
                                           bind_host=trainer_address(s.ray))) as venv:
            # Measured once Ray's own start-up work is over, as the inline row's browser was long up.
            settle_s = settle(bench.meter, "ray")
            row = bench.row("ray", hosts * tabs, 1, venv)
            pairs = alternate(bench, venv, hosts * tabs)
            if s.ppo:
                import torch

                from orchestrator.sizing import trainer_threads

                torch.set_num_threads(trainer_threads(envs=hosts * tabs))  # as train and the PPO phase (c) do
                r.ray_ppo = ppo_fps(venv, s.ppo_rollout, 1)
                r.rows.append(Row("ppo-ray", hosts * tabs, 1, hosts * tabs, round(r.ray_ppo["fps"], 1),
                                  note=f"PPO fps, {hosts} Ray hosts"))
                bench.say(f"[Bench]   PPO {r.ray_ppo['fps']:,.0f} fps through Ray hosts (n_steps {r.ray_ppo['n_steps']}; "
                          f"collecting {r.ray_ppo['collect_s']:.1f} s, training {r.ray_ppo['train_s']:.1f} s)")
            rounds = empty_rounds(bench, venv.ray_transport, s.seconds)
    finally:
        fleet.stop()
    row.note = f"{hosts} hosts x {tabs} tabs, --ray {s.ray}"
    r.ray = {
        "address": s.ray, "hosts": hosts, "tabs_per_host": tabs, "steps_per_s": row.steps_per_s,
        "pairs": pairs,  # [hosts, inline] env-steps/s of each pair of alternating windows
        "inline_steps_per_s": round(statistics.median(i for _, i in pairs), 1),
        "ratio_to_inline": round(statistics.median(h / i for h, i in pairs), 3),
        "ray_start_s": round(ray_s, 2), "hosts_ready_s": round(hosts_s, 2), "settle_s": round(settle_s, 1),
        "total_s": round(time.monotonic() - began, 1),
        "empty_rounds": rounds,
        # how much of the Ray row's vec step is the hosts' round alone
        "round_share_of_step": round(row.steps_per_s / hosts / tabs / rounds["rounds_per_s"], 3),
    }


def alternate(bench: Bench, hosts_venv: VecEnv, tabs: int) -> list[list[float]]:
    """`PAIRS` pairs of windows, the hosts' then the inline vec env's (as many tabs, its own
    browser on this machine), env-steps/s of a random policy in each."""
    window = bench.s.seconds / PAIRS
    pairs = []
    with bench.browser(tabs), bench.vec_env(tabs, "inline", 1) as inline:
        for _ in range(PAIRS):
            via_hosts, _ = collect(hosts_venv, window, bench.s.warmup_s)
            direct, _ = collect(inline, window, bench.s.warmup_s)
            pairs.append([round(via_hosts, 1), round(direct, 1)])
    bench.say(f"[Bench]   alternating windows, hosts vs inline with {tabs} tabs: "
              + ", ".join(f"{h:,.0f} vs {i:,.0f}" for h, i in pairs) + " env-steps/s")
    return pairs


def empty_rounds(bench: Bench, transport: RayTransport, seconds: float) -> dict[str, float]:
    """Rounds per second of one empty step frame to every host, waited for together as a vec step's
    frames are, and the CPU of a round (ms: this process; the host actors' and Ray's)."""
    transport.round_trip()
    before = bench.meter.sample()
    began, rounds = time.monotonic(), 0
    while time.monotonic() - began < seconds:
        transport.round_trip()
        rounds += 1
    elapsed = time.monotonic() - began
    cpu = bench.meter.delta(before, bench.meter.sample())
    figures = {"rounds_per_s": round(rounds / elapsed, 1), "ms_per_round": round(1e3 * elapsed / rounds, 3),
               "python_cpu_ms_per_round": round(1e3 * cpu["python"] / rounds, 3),
               "ray_cpu_ms_per_round": round(1e3 * cpu["ray"] / rounds, 3)}
    bench.say(f"[Bench]   Hosts' own round: an empty step frame to each of {len(transport.hosts)} hosts, "
              f"{figures['ms_per_round']:.3f} ms ({figures['python_cpu_ms_per_round']:.3f} ms CPU here, "
              f"{figures['ray_cpu_ms_per_round']:.3f} ms in the host actors and Ray's processes)")
    return figures
