"""A vec env that drives every tab from this process, over one asyncio loop.

`ResilientSubprocVecEnv` puts each `TabEnv` in a worker process, so every step of every env
is pickled through a pipe twice and the workers compete with the browser for the CPU. Here
all `TabLink`s live on one loop thread: a vec step sends each tab its action(s) and awaits
all replies concurrently, no pickling, no extra processes. A tab may run K simulations
(`sims`, URL parameter `sims=K` of the embedded page): it then answers one `step_batch`
message per vec step for its K envs, and SB3 sees tabs x K envs.

Failure semantics, per tab: a tab that fails (hang, closed socket, garbage) ends the current
episode of each of its K envs as a truncation, with the last good observation as
`terminal_observation` and `TimeLimit.truncated` True (so PPO bootstraps), and `tab_failure` in
the info; the envs' next observations come from the replacement page on the same port. Other
tabs keep their episodes and never wait for the replacement: while a tab is being replaced, or
is slower than the others by more than `straggler_s`, its envs get frozen steps (the last good
observation again, reward 0, each a one-step truncation: see training/outages.py) and the
other tabs step on.
A slow tab that answers after all continues its episode (the actions given meanwhile are
dropped); one that stays silent until the step deadline is a hang. A vec step always carries
at least one tab's real step. Only a port that stays empty past the connect deadline raises
(`TabLost`). Infos carry Monitor's `episode` entry at every episode end, as `Monitor(TabEnv)`
gives in the subprocess variant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from training.event_loop import LoopThread
from training.health import HealthReporter
from training.outages import STRAGGLER_S, OutageLog, frozen_info
from training.protocol import OBS_SIZE
from training.tab_env import action_space, observation_space
from training.tab_link import LinkDeadlines, PageSettings, TabFailure, TabLink

STEP_REPORT_INTERVAL_S = 1.0
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


class InlineVecEnv(VecEnv):
    def __init__(
        self,
        ports: Sequence[int],
        settings: PageSettings | None = None,
        deadlines: LinkDeadlines | None = None,
        *,
        sims: int = 1,
        health_port: int | None = None,
        token: str | None = None,
        origins: list[str | None] | None = None,
        run_token: str = "",
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        straggler_s: float = STRAGGLER_S,
    ) -> None:
        if sims < 1:
            raise ValueError(f"sims must be at least 1, got {sims}")
        if straggler_s <= 0:
            raise ValueError(f"straggler_s must be positive, got {straggler_s}")
        self.straggler_s = straggler_s
        self.render_mode = None
        self.ports = list(ports)
        self.sims = sims
        base = settings or PageSettings()
        self.max_episode_steps = base.max_episode_steps
        health = self._health = HealthReporter(health_port, run_token)
        self._recycle_ports: set[int] = set()  # asked to recycle at the next episode boundary
        if on_event is None:
            self._report: Callable[[str, dict[str, Any]], None] = health
        else:
            # health datagrams for the fleet, and the same events to the caller (the benchmark)
            def report(kind: str, fields: dict[str, Any]) -> None:
                health(kind, fields)
                on_event(kind, fields)

            self._report = report
        self._loop = LoopThread("inline-vec-env")
        total = len(self.ports) * sims
        self._links = [
            TabLink(
                port,
                replace(base, env_id=i * sims, env_count=total, sims=sims),
                deadlines,
                token=token,
                origins=origins,
                on_event=self._report,
            )
            for i, port in enumerate(self.ports)
        ]
        self.closed = False
        try:
            self._loop.run(self._start_all())
        except BaseException:
            self._loop.stop()
            raise
        super().__init__(total, observation_space(), action_space())
        self._last_obs = np.zeros((total, OBS_SIZE), dtype=np.float32)
        self._returns = np.zeros(total, dtype=np.float64)
        self._lengths = np.zeros(total, dtype=np.int64)
        self._began = time.time()
        self._steps = [0] * len(self._links)  # simulation steps per tab, for the health channel
        self._last_report = time.monotonic()
        self._last_stepping = [0.0] * len(self._links)
        self._future: Any = None
        self.waiting = False
        self.tab_failures = [0] * len(self._links)
        # Per tab, the step or replacement the trainer has not had the answer of yet (module docstring).
        self._pending: dict[int, asyncio.Task[StepResult]] = {}
        self._replacing: dict[int, str] = {}  # tab -> failure cause, while its replacement is awaited
        self._recycling: set[int] = set()  # tabs whose episodes ended for a recycle: new page next
        self.outages = OutageLog(self._report)
        self.respawns = 0  # no worker processes to respawn (the subprocess variant's counter)

    @property
    def frozen_steps(self) -> int:
        return self.outages.frozen_steps

    async def _start_all(self) -> None:
        started: list[TabLink] = []
        try:
            for link in self._links:
                await link.start()
                started.append(link)
        except BaseException:
            await asyncio.gather(*(link.close() for link in started), return_exceptions=True)
            raise

    # ---- VecEnv ------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        self._loop.run(self._settle_pending())
        k = self.sims
        for j, link in enumerate(self._links):
            seed = self._seeds[j * k]
            if seed is not None:
                link.request_seed(int(seed))
        results = self._loop.run(_all([self._reset_link(j) for j in range(len(self._links))]))
        self.reset_infos = [info for _, infos in results for info in infos]
        obs = np.concatenate([o for o, _ in results]).astype(np.float32, copy=False)
        self._last_obs[:] = obs
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._reset_seeds()
        self._reset_options()
        return obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self.outages.step_began()
        self._future = asyncio.run_coroutine_threadsafe(self._step_all(np.asarray(actions)), self._loop.loop)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        try:
            results = self._future.result()
        except BaseException:
            self.waiting = False  # the future stays, so close() can cancel a step cut by Ctrl+C
            raise
        self.waiting = False
        self._future = None
        if len(results) == 1:
            obs, rewards, dones, infos = results[0]
        else:
            obs = np.concatenate([r[0] for r in results])
            rewards = np.concatenate([r[1] for r in results])
            dones = np.concatenate([r[2] for r in results])
            infos = [info for r in results for info in r[3]]
        self._count_steps()
        return obs, rewards.astype(np.float32, copy=False), dones, infos

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._future is not None:
                self._future.cancel()
            self._loop.run(self._close_all(), timeout=15)
        finally:
            self._loop.stop()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        per_env = {
            "render_mode": lambda i: None,
            "port": lambda i: self.ports[i // self.sims],
            "tab_failures": lambda i: self.tab_failures[i // self.sims],
            "observation_space": lambda i: self.observation_space,
            "action_space": lambda i: self.action_space,
            "max_episode_steps": lambda i: self.max_episode_steps,
        }
        if attr_name not in per_env:
            raise AttributeError(f"InlineVecEnv envs have no attribute {attr_name!r}")
        return [per_env[attr_name](i) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"InlineVecEnv envs have no settable attribute {attr_name!r}")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        targets = list(self._get_indices(indices))
        if method_name == "set_checkpoint_info":
            tabs = sorted({i // self.sims for i in targets})
            name, steps = _args(method_args, method_kwargs, ("name", "steps"))
            self._loop.run(_all([self._links[j].send_checkpoint_info(name, steps) for j in tabs]), timeout=5)
            return [None for _ in targets]
        if method_name == "set_stage":
            # Per tab: every simulation of a tab shares its stage (and replacement pages get it).
            tabs = sorted({i // self.sims for i in targets})
            (stage,) = _args(method_args, method_kwargs, ("stage",))
            self._loop.run(_all([self._links[j].send_stage(stage) for j in tabs]), timeout=5)
            return [None for _ in targets]
        raise AttributeError(f"InlineVecEnv envs have no method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        # Each env reports Monitor's `episode` info itself, so code that checks for Monitor
        # (evaluate_policy) may rely on it.
        return [wrapper_class is Monitor for _ in self._get_indices(indices)]

    # ---- one tab -------------------------------------------------------------------------
    async def _reset_link(self, j: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """New episodes in all the tab's simulations, waiting for a replacement page as long as
        the link's connect deadline allows (TabLost beyond it)."""
        link = self._links[j]
        while True:
            try:
                obs, infos = await link.reset_all()
                break
            except TabFailure as failure:
                self._on_failure(j, failure)
        self._report("stepping", {"port": link.port})
        self._last_stepping[j] = time.monotonic()
        return obs, infos

    async def _step_all(self, actions: np.ndarray) -> list[StepResult]:
        """One vec step: a new step for every tab not still out, then wait for the answers.

        All tabs are waited for, except that a tab already out, or one slower than the first
        answer by `straggler_s`, gets a frozen step; a failed tab gets frozen steps while its
        replacement is awaited. At least one tab's real step is always waited for.
        """
        k = self.sims
        fresh = [j for j in range(len(self._links)) if j not in self._pending]
        for j in fresh:
            self._pending[j] = asyncio.ensure_future(self._step_link(j, actions[j * k : (j + 1) * k]))
        grace_end: float | None = None
        while True:
            self._start_replacements()
            ready = [j for j, task in self._pending.items() if task.done()]
            unsettled = [j for j in fresh if not self._pending[j].done() and j not in self._replacing]
            if ready and not unsettled:
                break
            if ready and grace_end is None:
                grace_end = time.monotonic() + self.straggler_s
            timeout = None if grace_end is None else grace_end - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            if ready:  # the rest of this step's tabs, within the grace (usually all at once)
                await asyncio.wait([self._pending[j] for j in unsettled], timeout=timeout)
            else:  # the first answer of any tab
                await asyncio.wait([t for t in self._pending.values() if not t.done()], return_when=asyncio.FIRST_COMPLETED)
        results: list[StepResult] = []
        back: list[int] = []
        for j in range(len(self._links)):
            task = self._pending[j]
            if not task.done():
                results.append(self._frozen_step(j))
                continue
            del self._pending[j]
            self._replacing.pop(j, None)
            try:
                results.append(task.result())
            except BaseException:
                await self._settle_pending(cancel=True)
                raise
            back.append(j)
            if j in self._recycling:
                self._recycling.discard(j)
                self._replacing[j] = "recycle"
                self._pending[j] = asyncio.ensure_future(self._recycled_reset(j))
        self.outages.step_ended(self.ports, back)
        return results

    def _start_replacements(self) -> None:
        """Steps that failed become waits for the replacement page (the tab's failed step)."""
        for j, task in list(self._pending.items()):
            if task.done() and not task.cancelled() and isinstance(task.exception(), TabFailure):
                failure = task.exception()
                assert isinstance(failure, TabFailure)
                self._on_failure(j, failure)
                self._replacing[j] = failure.cause
                self._pending[j] = asyncio.ensure_future(self._failed_step(j, failure))

    def _frozen_step(self, j: int) -> StepResult:
        """Tab j is slow or being replaced: its envs stay where they were, for this vec step."""
        k = self.sims
        cause = self._replacing.get(j, "slow")
        self.outages.frozen(j, cause)
        obs = self._last_obs[j * k : (j + 1) * k].copy()
        return obs, np.zeros(k), np.ones(k, dtype=bool), [frozen_info(cause, o) for o in obs]

    async def _settle_pending(self, cancel: bool = False) -> None:
        """Wait for (or cancel) the tabs' unanswered work, so the next reset starts clean."""
        tasks = list(self._pending.values())
        self._pending.clear()
        self._replacing.clear()
        self._recycling.clear()
        if cancel:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_all(self) -> None:
        await self._settle_pending(cancel=True)
        await _all([link.close() for link in self._links], return_exceptions=True)

    async def _step_link(self, j: int, actions: np.ndarray) -> StepResult:
        """One step of tab j; a TabFailure escapes (`_step_all` turns it into a replacement)."""
        link, k = self._links[j], self.sims
        span = slice(j * k, (j + 1) * k)
        obs, rewards, dones, infos, firsts = await link.step_batch(actions)
        self._steps[j] += k
        rewards = rewards.astype(np.float64, copy=False)
        self._returns[span] += rewards
        self._lengths[span] += 1
        dones = np.asarray(dones, dtype=bool)
        for info in infos:
            info["TimeLimit.truncated"] = False
        if not dones.any():
            self._last_obs[span] = obs
            return obs, rewards, dones, infos
        obs = obs.copy()
        cut = np.zeros(k, dtype=bool)
        recycle = self._recycle_asked(j)
        if recycle and k > 1:
            # A page of K simulations has no common episode boundary: the first episode end is
            # the tab's, and its simulations still running end truncated, bootstrapped.
            cut, dones = ~dones, np.ones(k, dtype=bool)
            firsts = [None] * k
        for i in np.flatnonzero(dones):
            info = infos[i]
            # The page says done for both ends; running out of steps is a truncation.
            out_of_time = int(info.get("episode_length", 0)) >= link.settings.max_episode_steps
            info["TimeLimit.truncated"] = bool(cut[i]) or (out_of_time and not info.get("collision_occurred", False))
            info["terminal_observation"] = obs[i].copy()
            info["episode"] = self._episode(j * k + i)
            first = firsts[i]
            if first is not None:
                obs[i] = first
        if recycle:
            # The episode ends are handed over now; the new page's first observations come with
            # a frozen step once it is there (`_recycled_reset`), the other tabs stepping on.
            self._recycle_ports.discard(link.port)
            self._recycling.add(j)
            self._report("recycle_ready", {"port": link.port})
            for info in infos:
                info["tab_recycling"] = True
        elif firsts[0] is None and dones.all():
            # The original protocol: the page waits for a reset_request after an episode.
            first_obs, _ = await self._reset_link(j)
            obs[:] = first_obs
        elif time.monotonic() - self._last_stepping[j] >= STEP_REPORT_INTERVAL_S:
            # The page reset a simulation itself: an episode boundary against a live page (where
            # the fleet may recycle the tab), reported at most once a second per tab.
            self._report("stepping", {"port": link.port})
            self._last_stepping[j] = time.monotonic()
        self._last_obs[span] = obs
        return obs, rewards, dones, infos

    async def _failed_step(self, j: int, failure: TabFailure) -> StepResult:
        """The step tab j failed: its episodes end truncated at the last good observation, and the
        next observations are the replacement page's (waited for here, while the others step)."""
        k = self.sims
        span = slice(j * k, (j + 1) * k)
        terminal = self._last_obs[span].copy()
        self._lengths[span] += 1  # Monitor counts the cut-short step too
        infos: list[dict[str, Any]] = []
        for i in range(k):
            infos.append(
                {
                    "tab_failure": failure.cause,
                    "tab_failure_detail": failure.detail,
                    "TimeLimit.truncated": True,
                    "terminal_observation": terminal[i],
                    "episode": self._episode(j * k + i),
                }
            )
        obs, _ = await self._reset_link(j)
        self._last_obs[span] = obs
        return obs, np.zeros(k), np.ones(k, dtype=bool), infos

    def _episode(self, index: int) -> dict[str, Any]:
        """Monitor's summary of the episode that just ended, and a fresh count for the next."""
        episode = {
            "r": round(float(self._returns[index]), 6),
            "l": int(self._lengths[index]),
            "t": round(time.time() - self._began, 6),
        }
        self._returns[index] = 0.0
        self._lengths[index] = 0
        return episode

    def _recycle_asked(self, j: int) -> bool:
        """Whether the orchestrator asked to recycle tab j (health.py)."""
        self._recycle_ports |= self._health.recycle_requests()
        return self.ports[j] in self._recycle_ports

    async def _recycled_reset(self, j: int) -> StepResult:
        """After a recycled tab's episode ends: wait for the new page, start its episodes (a frozen
        step at the terminal observations, whose next observations are the new page's)."""
        k = self.sims
        span = slice(j * k, (j + 1) * k)
        terminal = self._last_obs[span].copy()
        await self._links[j].next_page()
        obs, _ = await self._reset_link(j)
        self._last_obs[span] = obs
        return obs, np.zeros(k), np.ones(k, dtype=bool), [frozen_info("recycle", t) for t in terminal]

    def _on_failure(self, j: int, failure: TabFailure) -> None:
        self.tab_failures[j] += 1
        self._report("failed", {"port": self._links[j].port, "cause": failure.cause, "detail": failure.detail})

    def _count_steps(self) -> None:
        now = time.monotonic()
        if now - self._last_report >= STEP_REPORT_INTERVAL_S:
            for link, steps in zip(self._links, self._steps, strict=True):
                self._report("steps", {"port": link.port, "steps": steps})
            self._last_report = now


async def _all(coros: list[Coroutine[Any, Any, Any]], return_exceptions: bool = False) -> list[Any]:
    """Run the coroutines concurrently; on an error, cancel the rest before raising it."""
    if len(coros) == 1 and not return_exceptions:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks, return_exceptions=return_exceptions)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _args(args: tuple[Any, ...], kwargs: dict[str, Any], names: tuple[str, ...]) -> list[Any]:
    values = list(args) + [kwargs[n] for n in names[len(args) :]]
    return values[: len(names)]
