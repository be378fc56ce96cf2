"""The in-process transport: every tab driven from this process, over one asyncio loop.

No pickling and no worker processes competing with the browser for the CPU: a vec step hands
each tab's actions to its `TabLink` on one asyncio loop, which SB3's thread runs itself while it
waits for the answers (`training/event_loop.py`); between vec steps the loop's own thread runs
it, so a replacement page is served during a PPO update too. A tab may run K simulations
(`sims`, URL parameter `sims=K` of the embedded page): it then answers one `step_batch` message
per vec step for its K envs, and SB3 sees tabs x K envs. Which answer counts for what is the
step round's (`training/step_round.py`); this module only drives the pages, and repairs a failed
tab by waiting for its replacement page on the same port. Only a port that stays empty past
the connect deadline raises (`TabLost`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor

from training.event_loop import LoopThread
from training.health import HealthReporter
from training.outages import STRAGGLER_S
from training.protocol import ended_by_time_limit
from training.step_round import (
    TAB_FAILURE,
    TAB_FAILURE_DETAIL,
    TERMINAL_OBS,
    TRUNCATED,
    Answer,
    Back,
    Failed,
    Stepped,
)
from training.tab_env import STEP_REPORT_INTERVAL_S, action_space, observation_space
from training.tab_link import ENV_METHODS, LinkDeadlines, PageSettings, StepReply, TabFailure, TabLink
from training.tab_vec_env import Report, TabVecEnv, Transport

CLOSE_TIMEOUT_S = 15.0
HOLD_S = 0.002  # how long an answer may wait on the loop for the other tabs' (`_put`)


class InlineTransport(Transport):
    def __init__(self, links: list[TabLink], sims: int, report: Report, health: HealthReporter) -> None:
        self.links, self.sims = links, sims
        self.report = report  # the health channel (and the caller's hook): where outages go too
        self._report, self._health = report, health
        self._loop = LoopThread("inline-vec-env")
        # Answers go to the vec env's thread in batches (`_put`), so that it wakes about once a vec step.
        self._answers: queue.SimpleQueue[list[tuple[int, Answer | BaseException]]] = queue.SimpleQueue()
        self._outbox: list[tuple[int, Answer | BaseException]] = []
        self._hold: asyncio.TimerHandle | None = None  # when the answers in the outbox go at the latest
        self._waiter: asyncio.Future[None] | None = None  # done when answers are handed over (`collect`)
        self._in_flight = 0  # steps sent and not answered yet
        self._tasks: dict[int, asyncio.Task[None]] = {}  # per tab, the repair, reset or recycle that follows its step
        self._on_reply = [partial(self._stepped, j) for j in range(len(links))]
        self._recycle_ports: set[int] = set()  # asked to recycle at the next episode boundary
        self._steps = [0] * len(links)  # simulation steps per tab, for the health channel
        self._last_report = time.monotonic()
        self._last_stepping = [0.0] * len(links)
        self.tab_failures = [0] * len(links)
        try:
            self._loop.run(self._start_all())
        except BaseException:
            self._loop.stop()
            raise

    async def _start_all(self) -> None:
        started: list[TabLink] = []
        try:
            for link in self.links:
                await link.start()
                started.append(link)
        except BaseException:
            await asyncio.gather(*(link.close() for link in started), return_exceptions=True)
            raise

    # ---- Transport ---------------------------------------------------------------------
    def send(self, actions: dict[int, np.ndarray]) -> None:
        # Started by whoever runs the loop next: this thread in `collect`, or the loop's own after a pause.
        self._loop.loop.call_soon_threadsafe(self._start_steps, actions)

    def _start_steps(self, actions: dict[int, np.ndarray]) -> None:
        for j, tab_actions in actions.items():
            self._in_flight += 1
            self.links[j].start_step_batch(tab_actions, self._on_reply[j])

    def collect(self, timeout: float | None) -> list[tuple[int, Answer]]:
        with self._loop.held() as loop:
            if loop is not None:  # this thread runs the loop until the answers come (`_flush`)
                self._run_until_answered(loop, timeout)
                timeout = 0
        try:
            items = self._answers.get(timeout=timeout)
        except queue.Empty:
            return []
        while not self._answers.empty():
            items += self._answers.get_nowait()
        for _, item in items:
            if isinstance(item, BaseException):
                self._loop.run(self._settle(cancel=True))
                raise item
        return items  # type: ignore[return-value]

    def _run_until_answered(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        if not self._answers.empty():
            return
        self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, self._wake)
        try:
            loop.run_until_complete(self._waiter)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        self._loop.run(self._settle())
        k = self.sims
        for j, link in enumerate(self.links):
            if seeds[j * k] is not None:
                link.request_seed(int(seeds[j * k]))  # type: ignore[arg-type]
        results = self._loop.run(_all([self._reset_link(j) for j in range(len(self.links))]))
        obs = np.concatenate([o for o, _ in results]).astype(np.float32, copy=False)
        return obs, [info for _, infos in results for info in infos]

    def get_attr(self, attr_name: str, envs: list[int]) -> list[Any]:
        per_env: dict[str, Callable[[int], Any]] = {
            "render_mode": lambda i: None,
            "port": lambda i: self.links[i // self.sims].port,
            "tab_failures": lambda i: self.tab_failures[i // self.sims],
            "observation_space": lambda i: observation_space(),
            "action_space": lambda i: action_space(),
            "max_episode_steps": lambda i: self.links[0].settings.max_episode_steps,
        }
        if attr_name not in per_env:
            raise AttributeError(f"InlineVecEnv envs have no attribute {attr_name!r}")
        return [per_env[attr_name](i) for i in envs]

    def set_attr(self, attr_name: str, value: Any, envs: list[int]) -> None:
        raise AttributeError(f"InlineVecEnv envs have no settable attribute {attr_name!r}")

    def env_method(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], envs: list[int]) -> list[Any]:
        # Per tab: every simulation of a tab shares its page and settings (replacement pages get them).
        if method_name not in ENV_METHODS:
            raise AttributeError(f"InlineVecEnv envs have no method {method_name!r}; they answer {', '.join(ENV_METHODS)}")
        tabs = sorted({i // self.sims for i in envs})
        calls = [getattr(self.links[j], ENV_METHODS[method_name])(*args, **kwargs) for j in tabs]
        # `connect` waits as long as the links' connect deadline; the others only send a message.
        self._loop.run(_all(calls), timeout=None if method_name == "connect" else 5)
        return [None for _ in envs]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], envs: list[int]) -> list[bool]:
        # The step round reports Monitor's `episode` info itself, so code that checks for Monitor
        # (evaluate_policy) may rely on it.
        return [wrapper_class is Monitor for _ in envs]

    def close(self) -> None:
        try:
            self._loop.run(self._close_all(), timeout=CLOSE_TIMEOUT_S)
        except TimeoutError:
            # Seen once, after Ctrl+C in a full test run (cause not found yet): a run that has saved
            # its checkpoint must not fail for it. The sockets close with the process; what was
            # still open is logged, to find the cause.
            pending = [t.get_coro() for t in asyncio.all_tasks(self._loop.loop) if not t.done()]
            logging.getLogger("lunarfleet.inline").warning(
                "closing the tabs' sockets took over %.0f s; still open: %s", CLOSE_TIMEOUT_S, pending
            )
        finally:
            self._loop.stop()
            self._health.close()

    async def _close_all(self) -> None:
        await self._settle(cancel=True)
        await _all([link.close() for link in self.links], return_exceptions=True)

    async def _settle(self, cancel: bool = False) -> None:
        """Wait for (or cancel) the tabs' work in flight, dropping its answers: a clean start."""
        for link in self.links:
            if cancel:
                link.cancel_step()
            else:
                await link.step_settled()
        self._in_flight = 0
        tasks = list(self._tasks.values())
        self._tasks.clear()
        if cancel:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush()  # and dropped, below
        while not self._answers.empty():
            self._answers.get_nowait()

    # ---- one tab -------------------------------------------------------------------------
    def _put(self, item: tuple[int, Answer | BaseException]) -> None:
        """Hand an answer over once no step is in flight any more, or HOLD_S after the first
        answer held: each hand-over ends a run of the loop in `collect` (or, where the loop's own
        thread runs it, wakes SB3's thread), a cost like a tab's JSON. HOLD_S is noise against the
        straggler grace (`--straggler-grace`, 0.5 s)."""
        self._outbox.append(item)
        if self._in_flight == 0:
            self._flush()
        elif self._hold is None:
            self._hold = self._loop.loop.call_later(HOLD_S, self._flush)

    def _flush(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._outbox:
            items, self._outbox = self._outbox, []
            self._answers.put(items)
            self._wake()

    def _stepped(self, j: int, reply: StepReply | TabFailure) -> None:
        """Tab j's reply, handed over as its answer; what must wait for the page (a repair, the
        original protocol's reset, a recycle) continues in a task, its answers following."""
        self._in_flight -= 1
        try:
            self._answer(j, reply)
        except Exception as exc:  # a bug here must reach the trainer, not the page's socket
            self._put((j, exc))

    def _answer(self, j: int, reply: StepReply | TabFailure) -> None:
        if isinstance(reply, TabFailure):
            self._follow(j, self._recover, reply)
            return
        obs, rewards, dones, infos, firsts = reply
        self._count_steps(j)
        for info in infos:
            info[TRUNCATED] = False
        if not dones.any():
            self._put((j, Stepped(obs, rewards, dones, infos)))
            return
        link = self.links[j]
        obs = obs.copy()
        recycling = self._recycle_asked(j)
        for i in np.flatnonzero(dones):
            infos[i][TRUNCATED] = ended_by_time_limit(infos[i], link.settings.max_episode_steps)
            infos[i][TERMINAL_OBS] = obs[i].copy()
            if firsts[i] is not None and not recycling:
                obs[i] = firsts[i]
        stepped = Stepped(obs, rewards, dones, infos, recycling=recycling)
        if recycling:
            # The new page's first observations follow (a `Back`), the other tabs stepping on.
            self._recycle_ports.discard(link.port)
            self._report("recycle_ready", {"port": link.port})
            self._put((j, stepped))
            self._follow(j, self._next_page)
        elif firsts[0] is None and dones.all():
            # The original protocol: the page waits for a reset_request after an episode.
            self._follow(j, self._reset_after, stepped)
        else:
            if time.monotonic() - self._last_stepping[j] >= STEP_REPORT_INTERVAL_S:
                # The page reset a simulation itself: an episode boundary against a live page
                # (where the fleet may recycle the tab), reported at most once a second per tab.
                self._stepping(j)
            self._put((j, stepped))

    def _follow(self, j: int, then: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        self._tasks[j] = self._loop.loop.create_task(self._guarded(j, then, *args))

    async def _guarded(self, j: int, then: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        try:
            await then(j, *args)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # TabLost: nothing left to train on
            self._put((j, exc))

    async def _recover(self, j: int, failure: TabFailure) -> None:
        self._on_failure(j, failure)
        self._put((j, Failed(failure.cause, {TAB_FAILURE: failure.cause, TAB_FAILURE_DETAIL: failure.detail})))
        self._put((j, Back((await self._reset_link(j))[0])))

    async def _next_page(self, j: int) -> None:
        await self.links[j].next_page()
        self._put((j, Back((await self._reset_link(j))[0])))

    async def _reset_after(self, j: int, stepped: Stepped) -> None:
        stepped.obs[:] = (await self._reset_link(j))[0]
        self._put((j, stepped))

    async def _reset_link(self, j: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """New episodes in all the tab's simulations, waiting for a replacement page as long as
        the link's connect deadline allows (TabLost beyond it)."""
        link = self.links[j]
        while True:
            try:
                obs, infos = await link.reset_all()
                break
            except TabFailure as failure:
                self._on_failure(j, failure)
        self._stepping(j)
        return obs, infos

    def _recycle_asked(self, j: int) -> bool:
        """Whether the orchestrator asked to recycle tab j (training/health.py)."""
        self._recycle_ports |= self._health.recycle_requests()
        return self.links[j].port in self._recycle_ports

    def _stepping(self, j: int) -> None:
        self._report("stepping", {"port": self.links[j].port})
        self._last_stepping[j] = time.monotonic()

    def _on_failure(self, j: int, failure: TabFailure) -> None:
        self.tab_failures[j] += 1
        self._report("failed", {"port": self.links[j].port, "cause": failure.cause, "detail": failure.detail})

    def _count_steps(self, j: int) -> None:
        self._steps[j] += self.sims
        now = time.monotonic()
        if now - self._last_report >= STEP_REPORT_INTERVAL_S:
            for link, steps in zip(self.links, self._steps, strict=True):
                self._report("steps", {"port": link.port, "steps": steps})
            self._last_report = now


class InlineVecEnv(TabVecEnv):
    """Tabs x K simulations, driven from this process (module docstring)."""

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
        on_event: Report | None = None,
        on_outage: Report | None = None,
        straggler_s: float = STRAGGLER_S,
    ) -> None:
        transport = inline_transport(
            ports, settings, deadlines, sims=sims, health_port=health_port, token=token, origins=origins,
            run_token=run_token, on_event=on_event,
        )
        self.max_episode_steps = (settings or PageSettings()).max_episode_steps
        self.respawns = 0  # no worker processes to respawn (the subprocess transport's counter)
        super().__init__(
            transport, ports, sims, observation_space(), action_space(),
            straggler_s=straggler_s, count_episodes=True, on_outage=on_outage or transport.report,
        )

    @property
    def tab_failures(self) -> list[int]:
        assert isinstance(self.transport, InlineTransport)
        return self.transport.tab_failures


def inline_transport(
    ports: Sequence[int],
    settings: PageSettings | None = None,
    deadlines: LinkDeadlines | None = None,
    *,
    sims: int = 1,
    health_port: int | None = None,
    token: str | None = None,
    origins: list[str | None] | None = None,
    run_token: str = "",
    on_event: Report | None = None,
    first_env: int = 0,
    env_count: int | None = None,
) -> InlineTransport:
    """The tabs on `ports`, driven from this process; their pages listen once this returns.
    `first_env` and `env_count` place them among the run's envs when other machines hold the
    rest (a Ray host, orchestrator/ray_host.py)."""
    if sims < 1:
        raise ValueError(f"sims must be at least 1, got {sims}")
    health = HealthReporter(health_port, run_token)
    report = health if on_event is None else _both(health, on_event)
    base = settings or PageSettings()
    total = env_count or len(ports) * sims
    links = [
        TabLink(port, replace(base, env_id=first_env + i * sims, env_count=total, sims=sims), deadlines,
                token=token, origins=origins, on_event=report)
        for i, port in enumerate(ports)
    ]
    return InlineTransport(links, sims, report, health)


def _both(health: HealthReporter, on_event: Report) -> Report:
    """Health datagrams for the fleet, and the same events to the caller (the benchmark)."""

    def report(kind: str, fields: dict[str, Any]) -> None:
        health(kind, fields)
        on_event(kind, fields)

    return report


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
