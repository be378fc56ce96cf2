"""The step round on its own (training/step_round.py): no sockets, no processes, a clock of our own.

Each test plays the transport: it feeds answers in at chosen times and checks what the round
decides, one rule of docs/design-notes.md ("Failure semantics") at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.outages import OutageLog
from training.step_round import (
    EPISODE,
    RECYCLE,
    SLOW,
    TAB_FAILURE,
    TAB_RECYCLING,
    TAB_WAITING,
    TERMINAL_OBS,
    TRUNCATED,
    Back,
    Failed,
    Stepped,
    StepRound,
)

GRACE = 0.5
OBS = 2  # observation size of these tests


class Reports(list):
    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.append((kind, fields))


def make_round(tabs: int = 2, sims: int = 1, count_episodes: bool = True) -> tuple[StepRound, Reports]:
    reports = Reports()
    ports = [9000 + j for j in range(tabs)]
    r = StepRound(tabs, sims, (OBS,), OutageLog(reports), ports, straggler_s=GRACE, count_episodes=count_episodes, clock=lambda: 0.0)
    r.restart(np.zeros((tabs * sims, OBS), dtype=np.float32))
    return r, reports


def obs_of(value: float, sims: int = 1) -> np.ndarray:
    return np.full((sims, OBS), value, dtype=np.float32)


def stepped(value: float, sims: int = 1, done: list[bool] | None = None, reward: float = 1.0, recycling: bool = False) -> Stepped:
    dones = np.array(done or [False] * sims)
    infos: list[dict[str, Any]] = [{TRUNCATED: False} for _ in range(sims)]
    for i in np.flatnonzero(dones):
        infos[i][TERMINAL_OBS] = obs_of(value, sims)[i]
    return Stepped(obs_of(value, sims), np.full(sims, reward), dones, infos, recycling)


def crash() -> Failed:
    return Failed("crash", {TAB_FAILURE: "crash"})


def test_every_tab_answering_ends_the_round_at_once_with_their_steps() -> None:
    r, _ = make_round()
    assert r.begin(0.0) == [0, 1]
    assert r.wait_s(0.0) is None, "nothing in yet: wait for the first answer, however long"
    r.answer(0, stepped(1.0), 0.1)
    assert r.wait_s(0.1) == pytest.approx(GRACE), "the others get the grace from the first answer on"
    r.answer(1, stepped(2.0), 0.2)
    assert r.wait_s(0.2) == 0.0
    obs, rewards, dones, infos, _ = r.finish()
    assert obs[:, 0].tolist() == [1.0, 2.0] and rewards.tolist() == [1.0, 1.0] and not dones.any()
    assert all(TAB_WAITING not in info for info in infos)


def test_a_straggler_within_the_grace_is_waited_for() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(1.0), 1.0)
    assert r.wait_s(1.4) == pytest.approx(0.1)
    r.answer(1, stepped(2.0), 1.45)
    obs, _, dones, infos, _ = r.finish()
    assert not dones.any() and obs[1, 0] == 2.0 and TAB_WAITING not in infos[1]
    assert not reports, "no outage"


def test_a_straggler_after_the_grace_gets_frozen_steps_and_its_late_answer_continues_its_episode() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(1.0), 0.0)
    r.answer(1, stepped(5.0), 0.0)
    r.finish()
    r.begin(1.0)
    r.answer(0, stepped(2.0), 1.0)
    assert r.wait_s(1.0 + GRACE) == 0.0, "the grace is over"
    obs, rewards, dones, infos, _ = r.finish()
    assert dones[1] and rewards[1] == 0.0 and infos[1][TAB_WAITING] == SLOW and infos[1][TRUNCATED] is True
    assert obs[1, 0] == 5.0 and infos[1][TERMINAL_OBS][0] == 5.0, "its last good observation again"
    # next round: the slow tab is still busy, so it gets no new action; its late answer is its step
    assert r.begin(2.0) == [0]
    r.answer(1, stepped(6.0), 2.1)
    r.answer(0, stepped(3.0), 2.1)
    obs, _, dones, infos, _ = r.finish()
    assert not dones.any() and obs[:, 0].tolist() == [3.0, 6.0]
    (began, (kind, outage)) = reports
    assert began == ("outage_began", {"port": 9001, "cause": SLOW}), "said live at its first frozen step"
    assert kind == "outage" and outage["cause"] == SLOW and outage["frozen_steps"] == 1 and outage["port"] == 9001


def test_a_hang_is_slow_until_its_failure_then_out_until_its_replacement() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(1.0), 0.0)
    r.finish()  # tab 1 slow: frozen
    r.begin(1.0)
    r.answer(0, stepped(2.0), 1.0)
    r.answer(1, Failed("hang", {TAB_FAILURE: "hang"}), 1.0)  # its step deadline passed
    _, _, _, infos, _ = r.finish()
    assert infos[1][TAB_WAITING] == "hang"
    r.begin(2.0)
    r.answer(1, Back(obs_of(9.0)), 2.0)
    r.answer(0, stepped(3.0), 2.0)
    obs, rewards, dones, infos, _ = r.finish()
    assert dones[1] and rewards[1] == 0.0 and infos[1][TAB_FAILURE] == "hang" and infos[1][TRUNCATED] is True
    assert infos[1][TERMINAL_OBS][0] == 0.0, "the episode ends at the last good observation"
    assert obs[1, 0] == 9.0, "the next observation is the new page's"
    (began, (_, outage)) = reports
    assert began == ("outage_began", {"port": 9001, "cause": SLOW}), "one outage, one beginning"
    assert outage["cause"] == "hang" and outage["frozen_steps"] == 2, "a slow tab that then hung is a hang"


def test_a_known_failure_is_not_waited_for_and_its_tab_gets_no_action_while_out() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(1, crash(), 0.0)
    assert r.wait_s(0.0) is None, "a failure is no real step: still wait for one"
    r.answer(0, stepped(1.0), 0.01)
    assert r.wait_s(0.01) == 0.0, "the failed tab is not waited for (no grace)"
    obs, rewards, dones, infos, _ = r.finish()
    assert infos[1][TAB_WAITING] == "crash" and dones[1] and rewards[1] == 0.0
    assert r.begin(1.0) == [0], "no new action for a tab being replaced"


def test_a_replacements_first_observation_ends_the_cut_episode_with_its_return() -> None:
    r, _ = make_round()
    for t in range(3):
        r.begin(float(t))
        r.answer(0, stepped(1.0, reward=2.0), float(t))
        r.answer(1, stepped(1.0, reward=2.0), float(t))
        r.finish()
    r.begin(3.0)
    r.answer(0, crash(), 3.0)
    r.answer(0, Back(obs_of(7.0)), 3.0)  # the replacement was quick: the same round hands it over
    r.answer(1, stepped(1.0), 3.0)
    obs, _, dones, infos, _ = r.finish()
    assert dones[0] and TAB_WAITING not in infos[0] and infos[0][TAB_FAILURE] == "crash"
    assert infos[0][EPISODE]["r"] == 6.0 and infos[0][EPISODE]["l"] == 4, "Monitor counts the cut step"
    assert obs[0, 0] == 7.0 and r.begin(4.0) == [0, 1]


def test_a_recycle_hands_over_the_episode_end_then_the_new_pages_observation_with_a_frozen_step() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(4.0, done=[True], recycling=True), 0.0)
    r.answer(0, Back(obs_of(8.0)), 0.0)  # the new page, already there: kept for the next round
    r.answer(1, stepped(1.0), 0.0)
    obs, _, dones, infos, _ = r.finish()
    assert dones[0] and infos[0][TAB_RECYCLING] is True and EPISODE in infos[0] and TAB_WAITING not in infos[0]
    assert r.begin(1.0) == [1], "the recycled tab's new page is this round's answer, not a new action"
    r.answer(1, stepped(2.0), 1.0)
    obs, rewards, dones, infos, _ = r.finish()
    assert dones[0] and infos[0][TAB_WAITING] == RECYCLE and infos[0][TERMINAL_OBS][0] == 4.0
    assert obs[0, 0] == 8.0 and rewards[0] == 0.0 and EPISODE not in infos[0]
    assert not reports, "the tab missed no round: no outage"


def test_a_recycled_tab_out_for_several_rounds_gets_frozen_recycle_steps() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(4.0, done=[True], recycling=True), 0.0)
    r.answer(1, stepped(1.0), 0.0)
    r.finish()
    assert r.begin(1.0) == [1]
    r.answer(1, stepped(2.0), 1.0)
    assert r.wait_s(1.0) == 0.0
    _, _, dones, infos, _ = r.finish()
    assert dones[0] and infos[0][TAB_WAITING] == RECYCLE and infos[0][TERMINAL_OBS][0] == 4.0
    r.begin(2.0)
    r.answer(0, Back(obs_of(8.0)), 2.0)
    r.answer(1, stepped(3.0), 2.0)
    obs, _, _, infos, _ = r.finish()
    assert infos[0][TAB_WAITING] == RECYCLE and obs[0, 0] == 8.0
    (began, (_, outage)) = reports
    assert began[0] == "outage_began" and began[1]["cause"] == RECYCLE
    assert outage["cause"] == RECYCLE and outage["frozen_steps"] == 1


def test_one_tab_alone_is_always_waited_for_and_never_frozen() -> None:
    r, reports = make_round(tabs=1)
    r.begin(0.0)
    assert r.wait_s(100.0) is None
    r.answer(0, crash(), 100.0)
    assert r.wait_s(100.0) is None, "a failure alone is no step: wait for the replacement"
    r.answer(0, Back(obs_of(3.0)), 130.0)
    assert r.wait_s(130.0) == 0.0
    obs, _, dones, infos, _ = r.finish()
    assert dones[0] and infos[0][TAB_FAILURE] == "crash" and obs[0, 0] == 3.0
    assert r.outages.frozen_steps == 0


def test_all_tabs_failing_at_once_wait_for_the_first_replacement() -> None:
    r, _ = make_round(tabs=3)
    r.begin(0.0)
    for j in range(3):
        r.answer(j, crash(), 0.0)
    assert r.wait_s(0.0) is None
    r.answer(2, Back(obs_of(5.0)), 4.0)
    assert r.wait_s(4.0) == 0.0, "no fresh tab is waited for: the others are out"
    obs, _, dones, infos, _ = r.finish()
    assert [TAB_WAITING in info for info in infos] == [True, True, False] and dones.all()
    assert infos[2][TAB_FAILURE] == "crash" and obs[2, 0] == 5.0
    assert r.begin(5.0) == [2]


def test_k_simulations_per_tab_share_their_tabs_fate() -> None:
    r, _ = make_round(tabs=2, sims=3)
    r.begin(0.0)
    r.answer(0, stepped(1.0, sims=3, done=[False, True, False]), 0.0)
    r.answer(1, crash(), 0.0)
    obs, rewards, dones, infos, _ = r.finish()
    assert dones.tolist() == [False, True, False, True, True, True]
    assert EPISODE in infos[1] and EPISODE not in infos[0]
    assert [info.get(TAB_WAITING) for info in infos[3:]] == ["crash"] * 3
    r.begin(1.0)
    r.answer(1, Back(obs_of(2.0, sims=3)), 1.0)
    r.answer(0, stepped(1.0, sims=3), 1.0)
    _, _, dones, infos, _ = r.finish()
    assert dones.tolist() == [False, False, False, True, True, True]
    assert all(info[TAB_FAILURE] == "crash" and EPISODE in info for info in infos[3:])


def test_a_recycle_of_k_simulations_cuts_the_running_episodes_as_truncations() -> None:
    r, _ = make_round(tabs=1, sims=3)
    r.begin(0.0)
    r.answer(0, stepped(1.0, sims=3, done=[False, True, False], recycling=True), 0.0)
    _, _, dones, infos, _ = r.finish()
    assert dones.all() and all(info[TAB_RECYCLING] and EPISODE in info for info in infos)
    assert infos[0][TRUNCATED] is True and infos[2][TRUNCATED] is True and infos[1][TRUNCATED] is False


def test_envs_that_report_their_own_episodes_get_no_episode_entry() -> None:
    r, _ = make_round(count_episodes=False)
    r.begin(0.0)
    r.answer(0, stepped(1.0, done=[True]), 0.0)
    r.answer(1, crash(), 0.0)
    r.answer(1, Back(obs_of(2.0)), 0.0)
    _, _, dones, infos, _ = r.finish()
    assert dones.all() and EPISODE not in infos[0] and EPISODE not in infos[1]


def test_the_straggler_grace_must_be_positive() -> None:
    with pytest.raises(ValueError, match="straggler_s must be positive"):
        StepRound(1, 1, (OBS,), OutageLog(Reports()), [9000], straggler_s=0.0, count_episodes=True)


def test_an_outage_still_open_when_the_run_ends_is_reported_too() -> None:
    r, reports = make_round()
    r.begin(0.0)
    r.answer(0, stepped(1.0), 0.0)
    r.answer(1, crash(), 0.0)
    r.finish()
    assert reports == [("outage_began", {"port": 9001, "cause": "crash"})]
    r.outages.close(r.ports)
    (_, (kind, outage)) = reports
    assert kind == "outage" and outage["cause"] == "crash" and outage["frozen_steps"] == 1 and outage["until_run_end"] is True
