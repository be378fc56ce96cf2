"""One machine's tabs as a Ray actor: its browser, its tabs, their ports on its own loopback, and
the embedded page server, opened with the same set-up steps as a local run (`run_setup.py`).

The host heals its own tabs exactly as a local run does (its own `Fleet`: pool, health channel,
replacements, recycling). The trainer's side (`training/ray_transport.py`) calls `serve` once:
the host connects to the trainer's step channel (`training/host_channel.py`) and answers each
frame with `step`, once per vec step with the actions of this host's tabs; the reply carries
their answers, what the pool said meanwhile (events, forwarded to the run's event log with the
host named) and the step counts. Nothing here listens beyond 127.0.0.1: the host connects out.

If the actor dies (the machine, the process, `ray.kill`), Ray runs `__init__` again
(`max_restarts=-1`), which opens a fresh browser and tabs; the trainer then asks it to `serve`
and to `rejoin`, and its tabs' first observations end the outage. A host whose tabs cannot go on
(a port left empty past its connect deadline) ends its own process so that Ray restarts it the
same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import numpy as np
import psutil

from browser_pool import faults
from orchestrator.config import RunConfig
from orchestrator.events import say
from orchestrator.run_setup import RunPieces, find_browser, fleet_env_settings, free_ports, open_fleet, tab_urls
from training import host_channel
from training.host_reply import HostReply
from training.inline_vec_env import InlineTransport, inline_transport
from training.step_round import Answer, Back, Failed, Stepped
from training.tab_link import PortInUse, TabLost

# Ray runs each concurrency group's calls on their own thread: `serve` for as long as the step
# channel is open, fault injection and a checkpoint's name while it is, and the rest (`describe`,
# `reset`, `close`) on the default thread.
CHANNEL = "channel"
CONTROL = "control"
METHOD_GROUPS = {"serve": CHANNEL, "inject": CONTROL, "env_method": CONTROL}
ACTOR_OPTIONS: dict[str, Any] = {
    "max_restarts": -1,  # a dead host comes back, as often as it dies
    "max_task_retries": 0,  # at-most-once: a call in flight when it dies is a failure, never run twice
    "num_cpus": 0,  # the tabs' CPU is Chromium's; Ray's CPU count must not limit hosts
    "concurrency_groups": {CHANNEL: 1, CONTROL: 1},
}
INJECT_TIMEOUT_S = 15.0
PORT_TRIES = 3
# Ray's call threads share the GIL with the thread stepping the tabs; with Python's default 5 ms
# switch interval one often waited that long for it. Measured here when a step's answer still went
# from the tabs' loop thread to Ray's call thread (the call thread now runs the loop itself,
# training/event_loop.py): a host's 2-tab step round trip 8.4 ms at the default, 3.5 ms at 0.5 ms.
SWITCH_INTERVAL_S = 0.0005


class _Forwarded:
    """The host's event log: events wait here until the next reply carries them to the driver."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, dict[str, Any]]] = []
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, fields: dict[str, Any] | None = None, echo: bool = True) -> None:
        with self._lock:
            self._events.append((kind, dict(fields or {}, time=round(time.time(), 3))))
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        pass


class TabHost:
    """The Ray actor class of a host (`ray.remote(**ACTOR_OPTIONS)(TabHost)`, orchestrator/ray_fleet.py)."""

    def __init__(self, cfg: RunConfig, index: int, tabs: int, hosts: int, environ: dict[str, str]) -> None:
        os.environ.update(environ)  # e.g. LUNARFLEET_TAG, so a test finds this host's Chromium
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.index, self.tabs, self.sims = index, tabs, cfg.sims_per_tab
        self.grace_s = cfg.straggler_grace / 2  # within the trainer's grace, so the reply is in time
        self.events = _Forwarded()
        self.run = RunPieces()
        self.transport: InlineTransport | None = None
        base = cfg.base_port + self.index * self.tabs
        for attempt in range(PORT_TRIES):
            try:
                self._open(cfg, hosts, base)
                break
            except PortInUse as exc:  # another program took a port between the check and the bind
                self.close()
                self.run = RunPieces()
                if attempt == PORT_TRIES - 1:
                    raise
                self._say(f"! {exc}; trying the next free ports")
                base += self.tabs  # free_ports skips what is taken from there on
            except BaseException:
                self.close()
                raise

    def _open(self, cfg: RunConfig, hosts: int, base: int) -> None:
        tell = self._say
        browser = find_browser(cfg.browser, tell)
        ports = free_ports(base, self.tabs, tell)
        urls = tab_urls(self.run, cfg, ports, first_env=self.index * self.tabs, app_port=cfg.app_port + self.index)
        fleet = open_fleet(self.run, cfg, browser, ports, urls, self.events)  # type: ignore[arg-type]
        settings = fleet_env_settings(cfg, ports, urls, fleet.health_port)
        k = self.sims
        self.transport = inline_transport(
            ports, settings.page, settings.deadlines, sims=k, health_port=fleet.health_port,
            token=settings.page_token, origins=settings.origins, run_token=cfg.token,
            first_env=self.index * self.tabs * k, env_count=hosts * self.tabs * k,
        )
        fleet.start()  # every port listens already: the pages may connect at once
        fleet.wait_connected(cfg.connect_timeout)
        self.ports = ports

    def _say(self, text: str) -> None:
        say(f"[Host {self.index + 1}] {text}")

    # ---- what the trainer calls --------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Where this host runs: it answers once every tab is connected."""
        assert self.run.fleet is not None
        return {"host": self.index, "machine": socket.gethostname(), "pid": os.getpid(), "ports": self.ports,
                "browser_pid": self.run.fleet.pool.browser_pid}

    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        assert self.transport is not None
        return self.transport.reset(seeds, options)

    def serve(self, address: tuple[str, int], ticket: bytes) -> None:
        """Connect to the trainer's step channel at `address` and answer its frames with `step`
        until it closes the channel."""
        host_channel.serve(address, ticket, lambda message: self.step(**message))

    def step(self, actions: dict[int, np.ndarray], rejoin: bool = False, wait_s: float = 0.0) -> HostReply:
        """Step the tabs in the actions (tab -> array); the reply holds their answers as far as
        they are in within the grace after the first, and every other answer waiting (late
        steps, new pages). `rejoin`: new episodes in every tab, answered as `Back` (after this
        host failed)."""
        assert self.transport is not None
        try:
            if rejoin:
                obs, infos = self.transport.reset([None] * self.tabs * self.sims, [{} for _ in range(self.tabs * self.sims)])
                k = self.sims
                answers: list[tuple[int, Answer]] = [(i, Back(obs[i * k : (i + 1) * k], infos[i * k : (i + 1) * k]))
                                                     for i in range(self.tabs)]
            else:
                if actions:
                    self.transport.send(actions)
                answers = self._collect(set(actions), wait_s)
        except TabLost as exc:  # this host cannot go on; Ray restarts it afresh
            self._say(f"! cannot go on ({type(exc).__name__}: {exc}); ending this host so that Ray restarts it")
            os._exit(70)
        return self._reply(answers)

    def _collect(self, sent: set[int], wait_s: float) -> list[tuple[int, Answer]]:
        assert self.transport is not None
        answers: list[tuple[int, Answer]] = []
        pending, grace_end = set(sent), None
        idle_end = time.monotonic() + wait_s
        while True:
            now = time.monotonic()
            if pending:
                timeout = None if grace_end is None else max(grace_end - now, 0.0)
            elif answers:
                return answers  # anything else in by now comes with the next reply: no second run of the loop
            else:
                timeout = max(idle_end - now, 0.0)
            got = self.transport.collect(timeout)
            if not got:
                return answers
            for i, answer in got:
                answers.append((i, answer))
                if i in pending and isinstance(answer, (Stepped, Failed)):
                    pending.discard(i)
                    grace_end = grace_end or time.monotonic() + self.grace_s

    def _reply(self, answers: list[tuple[int, Answer]]) -> HostReply:
        fleet = self.run.fleet
        assert fleet is not None
        records = fleet.pool.tabs
        return HostReply(answers, self.events.take(), [fleet.health[t.port].steps for t in records],
                         [t.restarts for t in records], fleet.fatal)

    def env_method(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.env_method(method_name, args, kwargs, list(range(self.tabs * self.sims)))

    def inject(self, kind: str, tab: int) -> None:
        """A chaos fault into one of this host's tabs (or its browser or driver); `host_tree` kills
        this host's process and everything under it (Chromium, the Playwright driver) with SIGKILL."""
        if kind == "host_tree":
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            os.kill(os.getpid(), signal.SIGKILL)
        fleet = self.run.fleet
        assert fleet is not None
        fleet.note_fault(fleet.ports[tab], kind)
        fleet.run(faults.inject(fleet.pool, kind, tab), timeout=INJECT_TIMEOUT_S)

    def close(self) -> list[tuple[str, dict[str, Any]]]:
        """Close the tabs' sockets, the browser and the page server (also after a failed start);
        the events no reply has carried yet."""
        transport, self.transport = self.transport, None
        try:
            if transport is not None:
                transport.close()
        finally:
            self.run.close()
        return self.events.take()


class TabsHost:
    """`lunarfleet tabs --ray`: one machine's tab pool for the trainer the user runs on that machine
    (its pages connect to ws://localhost:PORT there), kept alive as `lunarfleet tabs` keeps it."""

    def __init__(self, cfg: RunConfig, index: int, environ: dict[str, str]) -> None:
        from orchestrator.tabs_command import TabsCommand

        os.environ.update(environ)
        self.index = index
        self.events = _Forwarded()
        self.run = RunPieces()
        self.command = TabsCommand(cfg)
        try:
            self.fleet = self.command.open_pool(self.run, self.events)  # type: ignore[arg-type]
        except BaseException:
            self.run.close()
            raise

    def tick(self) -> dict[str, Any]:
        """Reload idle tabs; the status of this host's tabs, and what its pool said since the last tick."""
        status = self.command.tick(self.fleet)
        status.update(machine=socket.gethostname(), events=self.events.take())
        return status

    def close(self) -> list[tuple[str, dict[str, Any]]]:
        self.run.close()
        return self.events.take()


def tabs_host_actor_class() -> Any:
    import ray

    return ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)(TabsHost)


def host_actor_class(cls: type = TabHost) -> Any:
    """`TabHost` (or a stand-in with its methods, in tests) as a Ray actor class (Ray is imported
    only here, when a run asks for it)."""
    import ray

    for name, group in METHOD_GROUPS.items():
        if hasattr(cls, name):
            ray.method(concurrency_group=group)(getattr(cls, name))  # marks the function, as the decorator would
    return ray.remote(**ACTOR_OPTIONS)(cls)
