"""The step round: what each tab's envs get in one vec step, decided from the answers in by then.

No I/O here. The vec env (`training/tab_vec_env.py`) sends the actions through its transport,
feeds each answer in as it arrives, and asks how long it may still wait. The rules
(docs/design-notes.md, "Failure semantics"):

- Every tab that is neither busy with an earlier step nor out gets the new actions.
- The round waits for all of them, but once one tab has answered the others get `straggler_s`
  more; a tab still busy then gets a frozen step ("slow"). Its late answer continues its
  episode in a later round (the actions of its frozen steps are dropped).
- A failed tab (`Failed`) is out at once, without the grace: frozen steps with its failure as
  cause, until its replacement's first observation (`Back`) ends its episodes as a one-step
  truncation from the last good observation.
- A tab whose episode ended while a recycle was asked (`Stepped.recycling`) hands over that
  episode end; it is then out ("recycle") until the new page's first observation, which comes
  with a frozen step. With K simulations per tab the others' episodes end truncated.
- A round always carries at least one real answer: with none in yet, it waits for the first.
- Episode accounting (Monitor's `episode` entry) for envs that do not report their own.

A frozen step repeats the tab's last good observation with reward 0, as a one-step truncation
(`training/outages.py` says why PPO barely notices).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.outages import OutageLog

# ---- the info keys the vec envs write (read by the trainer, task metrics and tests) -------------
TRUNCATED = "TimeLimit.truncated"
TERMINAL_OBS = "terminal_observation"
EPISODE = "episode"  # Monitor's {"r", "l", "t"} at an episode end
TAB_WAITING = "tab_waiting"  # a frozen step; the value is why ("slow", a failure cause, "recycle")
TAB_FAILURE = "tab_failure"  # an episode cut short by its tab failing; the value is the cause
TAB_FAILURE_DETAIL = "tab_failure_detail"
TAB_RECYCLING = "tab_recycling"  # the episode end at which the tab's page is swapped
WORKER_FAILURE = "worker_failure"  # an episode cut short by its env worker process failing
FAILURE_KEYS = (TAB_FAILURE, WORKER_FAILURE)
SLOW = "slow"
RECYCLE = "recycle"


def frozen_info(cause: str, observation: np.ndarray) -> dict[str, Any]:
    """The info of a frozen step; `cause` is "slow", "recycle" or the tab's failure."""
    return {TAB_WAITING: cause, TRUNCATED: True, TERMINAL_OBS: observation}


# ---- what a transport answers for one tab ------------------------------------------------------
@dataclass
class Stepped:
    """The tab's real step. `obs` holds the next observations (a new episode's first where one
    ended, except when recycling); `infos` carry `TimeLimit.truncated`, and `terminal_observation`
    where done."""

    obs: np.ndarray  # (K, obs size)
    rewards: np.ndarray  # (K,)
    dones: np.ndarray  # (K,) bool
    infos: list[dict[str, Any]]
    recycling: bool = False  # an episode ended and a recycle was asked: the page is swapped now
    reset_infos: list[dict[str, Any]] | None = None


@dataclass
class Failed:
    """The tab failed; its transport is bringing it back. `info` is what the cut episode's
    truncation carries about the failure (e.g. `tab_failure` and its detail)."""

    cause: str
    info: dict[str, Any]


@dataclass
class Back:
    """The first observations of the tab's new page (or env), after a failure or a recycle."""

    obs: np.ndarray  # (K, obs size)
    reset_infos: list[dict[str, Any]] | None = None


Answer = Stepped | Failed | Back
RoundResult = tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]


@dataclass
class _Tab:
    busy: bool = False  # a step of it is in flight
    out: str | None = None  # why it is out (a failure cause or "recycle"), awaiting a Back
    failure: dict[str, Any] | None = None  # the info of the failure whose Back ends its episodes
    result: tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]] | None = None
    recycle_next: bool = False  # out for a recycle once this round's result is handed over
    held: list[Answer] = field(default_factory=list)  # answers for the next round


class StepRound:
    def __init__(
        self,
        tabs: int,
        sims: int,
        obs_shape: tuple[int, ...],
        outages: OutageLog,
        ports: list[int],
        *,
        straggler_s: float,
        count_episodes: bool,
        obs_dtype: Any = np.float32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if straggler_s <= 0:
            raise ValueError(f"straggler_s must be positive, got {straggler_s}")
        self.tabs, self.sims = tabs, sims
        self.straggler_s = straggler_s
        self.outages, self.ports = outages, ports
        self.count_episodes = count_episodes
        self._clock = clock
        self.last_obs = np.zeros((tabs * sims, *obs_shape), dtype=obs_dtype)
        self._returns = np.zeros(tabs * sims, dtype=np.float64)
        self._lengths = np.zeros(tabs * sims, dtype=np.int64)
        self._began = clock()
        self._state = [_Tab() for _ in range(tabs)]
        self._fresh: list[int] = []
        self._grace_end: float | None = None

    def restart(self, obs: np.ndarray) -> None:
        """A vec reset: every tab idle at these first observations."""
        self._state = [_Tab() for _ in range(self.tabs)]
        self.last_obs[:] = obs
        self._returns[:] = 0.0
        self._lengths[:] = 0

    # ---- one round ---------------------------------------------------------------------
    def begin(self, now: float) -> list[int]:
        """The tabs that get this round's actions (they are busy from now on)."""
        self._grace_end = None
        for j, tab in enumerate(self._state):
            held, tab.held = tab.held, []
            for answer in held:
                self.answer(j, answer, now)
        self._fresh = [j for j, tab in enumerate(self._state) if not tab.busy and tab.out is None and tab.result is None]
        for j in self._fresh:
            self._state[j].busy = True
        return self._fresh

    def answer(self, j: int, answer: Answer, now: float) -> None:
        tab = self._state[j]
        if tab.result is not None:
            tab.held.append(answer)  # e.g. a recycled tab's new page, already there: next round
            return
        if isinstance(answer, Failed):
            tab.busy, tab.out, tab.failure = False, answer.cause, answer.info
            return
        if isinstance(answer, Stepped):
            tab.result = self._stepped(j, answer)
            tab.recycle_next = answer.recycling
        elif tab.failure is not None:
            tab.result = self._failure_truncation(j, answer)
        else:
            tab.result = self._recycled(j, answer)
        tab.busy, tab.out, tab.failure = False, None, None
        if self._grace_end is None:
            self._grace_end = now + self.straggler_s

    def wait_s(self, now: float) -> float | None:
        """How long to wait for more answers: None until the first is in, 0 when the round is done."""
        if self._grace_end is None:
            return None
        if not any(self._state[j].busy for j in self._fresh):
            return 0.0
        return max(self._grace_end - now, 0.0)

    def finish(self) -> RoundResult:
        """This round's vec step: each tab's result, or a frozen step for a tab still busy or out."""
        k = self.sims
        obs = np.empty_like(self.last_obs)
        rewards = np.zeros(self.tabs * k, dtype=np.float32)
        dones = np.zeros(self.tabs * k, dtype=bool)
        infos: list[dict[str, Any]] = []
        reset_infos: list[dict[str, Any]] = []
        back: list[int] = []
        for j, tab in enumerate(self._state):
            span = slice(j * k, (j + 1) * k)
            if tab.result is None:
                cause = tab.out or SLOW
                self.outages.frozen(j, self.ports[j], cause)
                obs[span] = self.last_obs[span]
                dones[span] = True
                infos += [frozen_info(cause, o.copy()) for o in self.last_obs[span]]
                reset_infos += [{} for _ in range(k)]
                continue
            obs[span], rewards[span], dones[span], tab_infos, tab_resets = tab.result
            infos += tab_infos
            reset_infos += tab_resets
            back.append(j)
            tab.result = None
            if tab.recycle_next:
                tab.out, tab.recycle_next = RECYCLE, False
        self.last_obs[:] = obs
        self.outages.step_ended(self.ports, back)
        return obs.copy(), rewards, dones, infos, reset_infos

    # ---- the episodes of one tab --------------------------------------------------------
    def _stepped(self, j: int, s: Stepped) -> Any:
        k = self.sims
        dones = np.asarray(s.dones, dtype=bool).copy()
        infos = s.infos
        self._returns[j * k : (j + 1) * k] += s.rewards
        self._lengths[j * k : (j + 1) * k] += 1
        if s.recycling:
            # K simulations have no common episode boundary: the first end is the tab's, and
            # the episodes still running end truncated (bootstrapped).
            for i in np.flatnonzero(~dones):
                infos[i][TRUNCATED] = True
                infos[i][TERMINAL_OBS] = np.array(s.obs[i], copy=True)
            dones[:] = True
            for info in infos:
                info[TAB_RECYCLING] = True
        for i in np.flatnonzero(dones):
            self._episode_ended(j * k + int(i), infos[i])
        return s.obs, s.rewards, dones, infos, s.reset_infos or [{} for _ in range(k)]

    def _failure_truncation(self, j: int, back: Back) -> Any:
        """The failed tab's episodes end at their last good observation; the next observations
        are the new page's."""
        k = self.sims
        span = slice(j * k, (j + 1) * k)
        self._lengths[span] += 1  # Monitor counts the cut-short step too
        failure = self._state[j].failure or {}
        infos = [{**failure, TRUNCATED: True, TERMINAL_OBS: self.last_obs[j * k + i].copy()} for i in range(k)]
        for i, info in enumerate(infos):
            self._episode_ended(j * k + i, info)
        return back.obs, np.zeros(k, dtype=np.float32), np.ones(k, dtype=bool), infos, _resets(back, k)

    def _recycled(self, j: int, back: Back) -> Any:
        """A recycled tab's new page: a frozen step at the ended episodes' observations, whose
        next observations are the new page's."""
        k = self.sims
        infos = [frozen_info(RECYCLE, o.copy()) for o in self.last_obs[j * k : (j + 1) * k]]
        return back.obs, np.zeros(k, dtype=np.float32), np.ones(k, dtype=bool), infos, _resets(back, k)

    def _episode_ended(self, env: int, info: dict[str, Any]) -> None:
        if self.count_episodes:
            info[EPISODE] = {
                "r": round(float(self._returns[env]), 6),
                "l": int(self._lengths[env]),
                "t": round(self._clock() - self._began, 6),
            }
        self._returns[env] = 0.0
        self._lengths[env] = 0


def _resets(back: Back, k: int) -> list[dict[str, Any]]:
    return back.reset_infos or [{} for _ in range(k)]
