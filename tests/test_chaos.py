"""The chaos planner without a browser: faults come due by steps after the previous one settled,
training goes on past --timesteps for those left (within the overtime), and the verdict names
every fault that was not injected or did not recover."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import chaos as chaos_module
from orchestrator.chaos import MIN_GAP_VEC_STEPS, ChaosMonkey, Fault, describe


class FakeFleet:
    def __init__(self, tabs: int = 2) -> None:
        self.ports = [9000 + i for i in range(tabs)]
        self.health = {p: SimpleNamespace(stepping_at=0.0) for p in self.ports}
        self.noted: list[tuple[int, str]] = []

    def note_fault(self, port: int, cause: str) -> None:
        self.noted.append((port, cause))

    def heal(self, fault: Fault) -> None:
        """Every tab the fault hit resets against a page again (what the env's datagram says)."""
        ports = self.ports if fault.tab < 0 else [self.ports[fault.tab]]
        for port in ports:
            self.health[port].stepping_at = time.time() + 0.001


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any], echo: bool = True) -> None:
        self.seen.append((kind, fields))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]


def _monkey(counts: dict[str, int], target: int = 10_000, overtime_s: float = 600.0, inject=None, tabs_out=lambda: 0):  # noqa: ANN001, ANN202
    fleet, events = FakeFleet(), Events()
    injected: list[Fault] = []

    def record(fault: Fault) -> None:
        injected.append(fault)
        if inject is not None:
            inject(fault)

    monkey = ChaosMonkey(counts, target, fleet, events, steps_per_vec_step=2, overtime_s=overtime_s, inject=record,  # type: ignore[arg-type]
                         tabs_out=tabs_out)
    return monkey, fleet, events, injected


def test_each_fault_comes_due_a_gap_of_steps_after_the_previous_one_recovered() -> None:
    monkey, fleet, _, injected = _monkey({"crash": 2, "hang": 1}, target=10_000)
    monkey.on_steps(0)
    gap = monkey.gap
    assert gap == int(0.8 * 10_000 / 4)
    monkey.on_steps(gap - 2)
    assert not injected
    monkey.on_steps(gap)
    assert [f.kind for f in injected] == ["crash"]
    # However many steps pass while it heals (a fast machine makes many), nothing else is injected.
    for steps in range(gap, 9 * gap, 2):
        monkey.on_steps(steps)
    assert len(injected) == 1
    fleet.heal(injected[0])
    healed_at = 9 * gap
    monkey.on_steps(healed_at)
    assert injected[0].recovered_s is not None and len(injected) == 1
    monkey.on_steps(healed_at + gap - 2)
    assert len(injected) == 1
    monkey.on_steps(healed_at + gap)
    assert [f.kind for f in injected] == ["crash", "hang"]
    assert injected[1].tab == 1, "kinds alternate and so do the tabs"


def test_at_the_target_training_goes_on_until_the_trainer_has_the_recovered_tab_back(monkeypatch) -> None:
    # The env reports its tab stepping as it resets it; that first step reaches the trainer (and ends
    # the cut episode there) a vec step later: until then the tab is still out.
    out = [1]
    monkey, fleet, events, injected = _monkey({"hang": 1}, target=10_000, tabs_out=lambda: out[0])
    monkey.on_steps(0)
    _run_all(monkey, fleet, injected)
    assert monkey.done and monkey.wants_more_steps(10_000)
    assert "chaos_overtime" not in events.kinds(), "no fault is left: this is no overtime"
    out[0] = 0
    assert not monkey.wants_more_steps(10_002)
    assert monkey.finish().overtime_s == 0
    # A tab out for good (a host gone) holds the end back only for BACK_LIMIT_S.
    out[0] = 1
    monkey, fleet, _, injected = _monkey({"hang": 1}, target=10_000, tabs_out=lambda: out[0])
    monkey.on_steps(0)
    _run_all(monkey, fleet, injected)
    assert monkey.wants_more_steps(10_000)
    began = time.monotonic()
    monkeypatch.setattr(chaos_module.time, "monotonic", lambda: began + chaos_module.BACK_LIMIT_S + 1)
    assert not monkey.wants_more_steps(10_002)


def test_a_small_run_keeps_a_minimum_gap_so_a_healed_tab_steps_before_the_next_fault() -> None:
    monkey, _, _, _ = _monkey({"crash": 7}, target=100)
    monkey.on_steps(0)
    assert monkey.gap == MIN_GAP_VEC_STEPS * 2


def test_a_resumed_run_plans_from_where_it_starts() -> None:
    monkey, _, _, injected = _monkey({"crash": 1}, target=20_000)
    monkey.on_steps(10_000)
    assert monkey.faults[0].due_step == 10_000 + monkey.gap
    monkey.on_steps(10_000 + monkey.gap - 2)
    assert not injected


def _run_all(monkey: ChaosMonkey, fleet: FakeFleet, injected: list[Fault], start: int = 0, limit: int = 10**6) -> int:
    """Step until every fault settled, healing each injected fault at once; returns the steps."""
    steps = start
    while not monkey.done and steps < limit:
        steps += 2
        monkey.on_steps(steps)
        for fault in injected:
            if fault.recovered_s is None and fault.error is None:
                fleet.heal(fault)
    return steps


def test_every_fault_recovered_is_ok_and_training_stops_at_the_target() -> None:
    monkey, fleet, _, injected = _monkey({"crash": 1, "browser": 1}, target=10_000)
    monkey.on_steps(0)
    _run_all(monkey, fleet, injected)
    assert not monkey.wants_more_steps(10_000), "nothing left: stop exactly at --timesteps"
    report = monkey.finish()
    assert report.ok and report.missing == []
    assert (report.faults_planned, report.faults_injected, report.faults_recovered) == (2, 2, 2)
    assert report.per_kind == {"crash": {"planned": 1, "injected": 1, "recovered": 1},
                               "browser": {"planned": 1, "injected": 1, "recovered": 1}}
    assert injected[1].tab == -1 and set(fleet.noted) >= {(9000, "browser"), (9001, "browser")}
    assert "NOT OK" not in describe(report)[0]


def test_faults_left_at_the_target_keep_training_going_within_the_overtime() -> None:
    monkey, fleet, events, injected = _monkey({"crash": 3}, target=150)
    monkey.on_steps(0)
    assert monkey.gap * 3 > 150, "three faults do not fit in 150 steps"
    steps = 0
    while not monkey.done:
        steps += 2
        monkey.on_steps(steps)
        if steps >= 150:
            assert monkey.wants_more_steps(steps) == (not monkey.done), "train on while faults are left"
        for fault in injected:
            if fault.recovered_s is None:
                fleet.heal(fault)
    assert steps > 150 and "chaos_overtime" in events.kinds()
    assert not monkey.wants_more_steps(steps)
    report = monkey.finish()
    assert report.ok and report.faults_recovered == 3


def test_an_overtime_that_runs_out_names_every_fault_not_injected() -> None:
    monkey, fleet, _, injected = _monkey({"disconnect": 12}, target=512, overtime_s=0.0)
    monkey.on_steps(0)
    _run_all(monkey, fleet, injected, limit=512)
    assert not monkey.wants_more_steps(512)
    report = monkey.finish()
    assert not report.ok
    assert report.faults_planned == 12 and report.faults_injected == len(injected) < 12
    assert report.faults_recovered == report.faults_injected
    assert len(report.missing) == 12 - len(injected)
    assert all("not injected" in m["why"] and "overtime of 0 s ran out" in m["why"] for m in report.missing)
    lines = describe(report)
    assert "NOT OK" in lines[0] and len(lines) == 1 + len(report.missing)
    assert lines[1].startswith("[Chaos] ! disconnect into tab ")


def test_a_fault_that_cannot_be_injected_is_named_and_the_next_one_still_comes() -> None:
    def refuse_crash(fault: Fault) -> None:
        if fault.kind == "crash":
            raise RuntimeError("tab 1 has no known renderer process to kill")

    monkey, fleet, events, injected = _monkey({"crash": 1, "garbage": 1}, inject=refuse_crash)
    monkey.on_steps(0)
    _run_all(monkey, fleet, injected)
    report = monkey.finish()
    assert [f.kind for f in injected] == ["crash", "garbage"]
    assert (report.faults_planned, report.faults_injected, report.faults_recovered) == (2, 1, 1)
    assert not report.ok
    (missing,) = report.missing
    assert missing["kind"] == "crash" and "could not be injected" in missing["why"] and "renderer" in missing["why"]
    assert any(k == "warning" and "crash" in f["message"] for k, f in events.seen)


def test_a_fault_that_never_recovers_is_given_up_on_after_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_module, "RECOVERY_LIMIT_S", 0.0)
    monkey, _, _, injected = _monkey({"hang": 1, "crash": 1})
    monkey.on_steps(0)
    steps = 0
    while len(injected) < 2 and steps < 10**5:  # nothing ever heals
        steps += 2
        monkey.on_steps(steps)
    assert [f.kind for f in injected] == ["hang", "crash"], "the next fault comes after the limit"
    report = monkey.finish("the run was interrupted")
    assert report.faults_injected == 2 and report.faults_recovered == 0
    whys = [m["why"] for m in report.missing]
    assert "not recovered within 0 s" in whys[0]
    assert "not recovered before the run stopped first (the run was interrupted)" in whys[1]


# ---- the trainer's side: training on past --timesteps while the chaos phase asks for it ---------
def _train(tmp_path, train_on) -> Any:  # noqa: ANN001
    from training.null_env import NullVecEnv
    from training.trainer import PPOSettings, TrainSettings, train

    venv = NullVecEnv(2, max_episode_steps=50)
    settings = TrainSettings(total_timesteps=96, models_dir=tmp_path, save_freq=0, auto_load=False,
                             ppo=PPOSettings(n_steps=32, batch_size=32, n_epochs=1), train_on=train_on, torch_threads=1)
    try:
        return train(settings, venv, lambda line: None)
    finally:
        venv.close()


def test_the_trainer_trains_past_the_target_until_the_chaos_phase_is_done(tmp_path) -> None:  # noqa: ANN001
    asked: list[int] = []

    def train_on(steps: int) -> bool:
        asked.append(steps)
        return steps < 300  # "faults left" until step 300, whatever the rollouts' size

    result = _train(tmp_path, train_on)
    assert result.status == "completed"
    assert asked and min(asked) >= 96, "asked only at and past the target"
    assert result.timesteps == 300, "stops at the first step at which nothing is left"
    assert result.checkpoint is not None and result.checkpoint.name == "lunar_rover_ppo_300_steps.zip"


def test_without_a_chaos_phase_the_trainer_stops_exactly_at_the_target(tmp_path) -> None:  # noqa: ANN001
    result = _train(tmp_path, lambda steps: False)
    assert result.status == "completed" and result.timesteps == 96


def test_with_ray_a_host_fault_hits_one_host_and_recovers_when_its_tabs_step_again() -> None:
    """--ray: `host` (and browser/driver) faults take the hosts in turn; each is recovered once every
    tab of that host steps again, whatever the other host's tabs do."""
    fleet, events, injected = FakeFleet(tabs=4), Events(), []
    hosts = [[0, 1], [2, 3]]
    monkey = ChaosMonkey({"host": 2, "crash": 1}, 10_000, fleet, events, steps_per_vec_step=4, overtime_s=600,  # type: ignore[arg-type]
                         inject=injected.append, hosts=hosts)
    assert [(f.kind, f.tab, f.host) for f in monkey.faults] == [("host", -1, 0), ("crash", 1, None), ("host", -1, 1)]
    assert monkey.faults[0].where() == "host 1" and monkey.faults[1].where() == "tab 2"
    monkey.on_steps(0)
    monkey.on_steps(monkey.gap)
    assert [f.kind for f in injected] == ["host"]
    assert fleet.noted == [(9000, "host"), (9001, "host")]  # both tabs of host 1, not host 2's
    # The other host's tabs stepping again is not this fault's recovery.
    for port in (9002, 9003):
        fleet.health[port].stepping_at = time.time() + 0.001
    monkey.on_steps(monkey.gap + 4)
    assert not injected[0].settled
    for port in (9000, 9001):
        fleet.health[port].stepping_at = time.time() + 0.001
    monkey.on_steps(monkey.gap + 8)
    assert injected[0].recovered_s is not None
    recovered = [f for k, f in events.seen if k == "chaos_recovered"]
    assert recovered == [{"kind": "host", "tab": 0, "seconds": pytest.approx(0, abs=1), "host": 0}]
