"""The Ray transport: tabs on several machines, each machine's tabs behind one host actor.

A host actor (`orchestrator/ray_host.py`) drives its machine's tabs as the inline transport
does and heals them itself; this side only knows actor handles. Ray places the hosts, restarts
them, resets their tabs and says when one died; a vec step goes around Ray, on each host's step
channel (`training/host_channel.py`): one frame per host per vec step carries the actions of all
the tabs of that host, and one frame comes back with their answers (and any that were late, and
the first observations of replaced pages). The step round decides what each answer means, as for
the other transports (`training/step_round.py`):

- a host that has not answered by the straggler deadline leaves its tabs busy: they get frozen
  steps, and its late reply counts like a slow tab's;
- a host whose step channel closed, or whose `serve` call ended in `RayActorError` (the actor
  died or is restarting, or its machine is gone), is a failure of all its tabs (`Failed`, cause
  "host"); it is asked to serve again every `POLL_S` until an actor connects and answers its
  rejoin frame with its tabs' first observations (`Back`);
- a host that never comes back leaves its tabs in outage (frozen steps), said every
  `STILL_OUT_EVERY_S`; the other hosts train on. Nothing here raises for a host failure.

Ray itself is imported only when this module is (`--ray`); the handles are any objects with
`serve.remote`, `reset.remote`, `env_method.remote` and `close.remote`, so tests may fake them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from stable_baselines3.common.monitor import Monitor

from training.host_channel import ChannelClosed, ChannelListener, HostConnection, HostError
from training.host_reply import HostReply, ray_error_cause
from training.outages import STRAGGLER_S
from training.step_round import TAB_FAILURE, TAB_FAILURE_DETAIL, Answer, Failed, Stepped
from training.tab_env import STEP_REPORT_INTERVAL_S, action_space, observation_space
from training.tab_vec_env import Report, TabVecEnv, Transport

HOST_FAILURE = "host"  # the cause of the Failed answers of a host's tabs
POLL_S = 0.5  # a host in outage is asked to rejoin this often; also the longest single wait
IDLE_WAIT_S = 0.25  # with every tab out or idle, a host holds an empty call this long for an answer
STILL_OUT_EVERY_S = 60.0  # a host out this long is said again, and again after as long
CLOSE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 60.0  # for every host's step channel at the start (each has its tabs connected by then)
RESET_TIMEOUT_S = 300.0  # a reset waits for pages that may still be reloading


@dataclass
class _Host:
    handle: Any
    tabs: list[int]  # the vec env's tab numbers of this host's tabs, in the host's order
    conn: HostConnection | None = None  # its step channel, while connected
    in_flight: int = 0  # frames sent on `conn` and not answered yet (it answers them in order)
    serving: Any = None  # the ObjectRef of its `serve` call (ends with the channel, or errs if the actor died)
    out_since: float | None = None  # monotonic time of the failure, while the host is out
    said_out_at: float = 0.0
    next_poll: float = 0.0
    restarts: int = 0  # how often it came back after a failure
    last_error: str = ""  # why it failed, or why its last ask to serve again did


class RayTransport(Transport):
    def __init__(self, hosts: Sequence[Any], tabs_per_host: int, sims: int, report: Report,
                 bind_host: str = "127.0.0.1") -> None:
        self.sims = sims
        self.tabs_per_host = tabs_per_host
        self._report = report
        self.hosts = [_Host(h, list(range(i * tabs_per_host, (i + 1) * tabs_per_host))) for i, h in enumerate(hosts)]
        tabs = len(hosts) * tabs_per_host
        self.tab_failures = [0] * tabs
        self.tab_steps = [0] * tabs  # steps each tab handed to the trainer
        self.tab_restarts = [0] * tabs  # as the hosts' pools count them
        self.fatal: str | None = None
        self._last_steps_report = time.monotonic()
        self._sticky: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}  # set_stage etc., for a host that rejoins
        self._failed: list[tuple[int, Answer]] = []  # failures found while sending, for the next collect
        self._next_check = 0.0
        self._started = False  # every host connected once (before, a host that cannot is an error)
        self.channel = ChannelListener(bind_host)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.channel.sock, selectors.EVENT_READ)
        try:
            self._connect_all()
        except BaseException:
            self._close_channel()
            raise

    # ---- Transport ---------------------------------------------------------------------
    def send(self, actions: dict[int, np.ndarray]) -> None:
        per_host: dict[int, dict[int, np.ndarray]] = {}
        for j, a in actions.items():
            per_host.setdefault(j // self.tabs_per_host, {})[j % self.tabs_per_host] = np.asarray(a)
        for h, host in enumerate(self.hosts):
            # Also without actions: the answer brings late steps and replaced tabs' first observations.
            if host.out_since is None and host.conn is not None and (h in per_host or not host.in_flight):
                self._send(h, {"actions": per_host.get(h, {})})
        self._poll_out_hosts()

    def collect(self, timeout: float | None) -> list[tuple[int, Answer]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._poll_out_hosts()
            if timeout is None:
                self._poll_idle_hosts()
            answers, self._failed = self._failed, []
            if not answers:
                left = POLL_S if deadline is None else min(max(deadline - time.monotonic(), 0.0), POLL_S)
                answers = self._wait(left)
            answers += self._check_serving()
            self._say_still_out()
            if answers or (deadline is not None and time.monotonic() >= deadline):
                return answers

    def reset(self, seeds: list[int | None], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        self._settle()
        per_tab = self.tabs_per_host * self.sims
        calls = [
            host.handle.reset.remote(seeds[h * per_tab : (h + 1) * per_tab], options[h * per_tab : (h + 1) * per_tab])
            for h, host in enumerate(self.hosts)
        ]
        results = []
        for h, call in enumerate(calls):
            try:
                results.append(ray.get(call, timeout=RESET_TIMEOUT_S))
            except (RayError, GetTimeoutError) as exc:
                raise RuntimeError(f"host {h + 1} could not start new episodes: {_short(exc)}") from None
        obs = np.concatenate([o for o, _ in results]).astype(np.float32, copy=False)
        return obs, [info for _, infos in results for info in infos]

    def get_attr(self, attr_name: str, envs: list[int]) -> list[Any]:
        per_env = {
            "render_mode": lambda i: None,
            "tab_failures": lambda i: self.tab_failures[i // self.sims],
            "host": lambda i: i // self.sims // self.tabs_per_host,
            "observation_space": lambda i: observation_space(),
            "action_space": lambda i: action_space(),
        }
        if attr_name not in per_env:
            raise AttributeError(f"Ray vec env envs have no attribute {attr_name!r}")
        return [per_env[attr_name](i) for i in envs]

    def set_attr(self, attr_name: str, value: Any, envs: list[int]) -> None:
        raise AttributeError(f"Ray vec env envs have no settable attribute {attr_name!r}")

    def env_method(self, method_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], envs: list[int]) -> list[Any]:
        """Every tab of every host in service (a checkpoint's name, the reward stage); a host out
        now gets it when it rejoins."""
        if method_name not in ("set_checkpoint_info", "set_stage"):
            raise AttributeError(f"Ray vec env envs have no method {method_name!r}")
        self._sticky[method_name] = (args, kwargs)
        calls = [host.handle.env_method.remote(method_name, args, kwargs) for host in self.hosts if host.out_since is None]
        with contextlib.suppress(RayError, GetTimeoutError):  # a host that failed meanwhile gets it when it rejoins
            ray.get(calls, timeout=10)
        return [None for _ in envs]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], envs: list[int]) -> list[bool]:
        return [wrapper_class is Monitor for _ in envs]  # the step round reports Monitor's `episode`

    def close(self) -> None:
        """Each host closes its tabs, browser and page server; then its actor goes for good."""
        self._close_channel()  # each host's `serve` returns
        calls = {h: host.handle.close.remote() for h, host in enumerate(self.hosts)}
        end = time.monotonic() + CLOSE_TIMEOUT_S
        for h, call in calls.items():
            try:
                events = ray.get(call, timeout=max(end - time.monotonic(), 0.1))
            except (RayError, GetTimeoutError):
                continue  # a dead host has nothing open; a wedged one goes with its actor
            for kind, fields in events or []:
                self._report("host_event", {"host": h, "kind": kind, "fields": fields})
        for host in self.hosts:
            with contextlib.suppress(Exception):  # an actor already gone
                ray.kill(host.handle, no_restart=True)

    def round_trip(self) -> None:
        """One empty step frame to every host in service, waited for together: the part of a vec
        step no tab work is in (`lunarfleet bench`). Only while no step is in flight."""
        self._settle()
        for h, host in enumerate(self.hosts):
            if host.conn is not None and host.out_since is None:
                self._send(h, {"actions": {}})
        self._settle()

    # ---- the step channel ----------------------------------------------------------------
    def _connect_all(self) -> None:
        """Ask every host to connect its step channel; raise if one cannot."""
        for h in range(len(self.hosts)):
            self._serve(h)
        end = time.monotonic() + CONNECT_TIMEOUT_S
        while not all(host.conn for host in self.hosts):
            if time.monotonic() > end:
                late = [h + 1 for h, host in enumerate(self.hosts) if host.conn is None]
                raise RuntimeError(f"host(s) {late} did not connect to the trainer's step channel at "
                                   f"{self.channel.address[0]}:{self.channel.address[1]} within {CONNECT_TIMEOUT_S:.0f} s")
            self._wait(POLL_S)
            self._next_check = 0.0
            if self._check_serving():
                failed = next(h for h, host in enumerate(self.hosts) if host.out_since is not None)
                raise RuntimeError(f"host {failed + 1} failed before its step channel connected")
        self._started = True

    def _serve(self, h: int) -> None:
        """Ask host `h` (a Ray call) to connect to this side's step channel and serve it."""
        host = self.hosts[h]
        host.serving = host.handle.serve.remote(self.channel.address, self.channel.ticket(h))

    def _send(self, h: int, message: dict[str, Any]) -> None:
        host = self.hosts[h]
        assert host.conn is not None
        try:
            host.conn.send(message)
        except ChannelClosed as exc:
            self._failed += self._host_failed(h, exc)
            return
        host.in_flight += 1

    def _wait(self, timeout: float) -> list[tuple[int, Answer]]:
        """What came in on the step channels within `timeout` (also hosts connecting, which gives none)."""
        answers: list[tuple[int, Answer]] = []
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self.channel.sock:
                greeting = set(self.channel.greeting)
                for sock in self.channel.accept():
                    self._selector.register(sock, selectors.EVENT_READ, "hello")
                for sock in greeting - set(self.channel.greeting):  # dropped to make room
                    self._selector.unregister(sock)
            elif key.data == "hello":
                self._hello(key.fileobj)  # type: ignore[arg-type]
            else:
                answers += self._read(key.data)
        return answers

    def _hello(self, sock: socket.socket) -> None:
        said = self.channel.hello(sock)
        if sock not in self.channel.greeting:
            self._selector.unregister(sock)
        if said is None:
            return
        h, conn = said
        host = self.hosts[h]
        if host.conn is not None:  # a new actor while the old one's connection still looks open
            self._failed += self._host_failed(h, ChannelClosed("the host connected anew"))
        host.conn, host.in_flight = conn, 0
        self._selector.register(conn.sock, selectors.EVENT_READ, h)
        if host.out_since is not None:
            self._send(h, {"actions": {}, "rejoin": True})

    def _read(self, h: int) -> list[tuple[int, Answer]]:
        host = self.hosts[h]
        assert host.conn is not None
        try:
            replies = host.conn.read()
        except ChannelClosed as exc:
            return self._host_failed(h, exc)
        answers = []
        for reply in replies:
            host.in_flight -= 1
            if isinstance(reply, HostError):  # the host's code raised: a bug to see, not a host failure to heal
                raise RuntimeError(f"host {h + 1} failed a step:\n{reply.text}")
            answers += self._take(h, reply)
        return answers

    def _check_serving(self) -> list[tuple[int, Answer]]:
        """Every `POLL_S`: the hosts whose `serve` call ended. An actor that died (`RayActorError`)
        is a host failure, also where its machine vanished and no connection saw it close."""
        now = time.monotonic()
        if now < self._next_check:
            return []
        self._next_check = now + POLL_S
        calls = {host.serving: h for h, host in enumerate(self.hosts) if host.serving is not None}
        if not calls:
            return []
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
        answers = []
        for ref in ready:
            h = calls[ref]
            self.hosts[h].serving = None
            try:
                ray.get(ref)
            except RayTaskError as exc:  # e.g. it cannot reach this machine
                cause = f"host {h + 1} cannot serve its step channel: {ray_error_cause(exc)}"
                if not self._started:
                    raise RuntimeError(cause) from None  # a run cannot start without it
                answers += self._host_failed(h, ChannelClosed(cause))  # it is asked again, as a dead host is
            except RayError as exc:  # the actor died, is restarting, or its machine is gone
                answers += self._host_failed(h, exc)
        return answers

    def _settle(self) -> None:
        """Wait for the answers in flight and drop them (a reset starts everything anew)."""
        end = time.monotonic() + RESET_TIMEOUT_S
        while any(host.in_flight for host in self.hosts) and time.monotonic() < end:
            self._wait(POLL_S)
            self._check_serving()
        self._failed = []

    def _close_channel(self) -> None:
        for host in self.hosts:
            if host.conn is not None:
                host.conn.close()
                host.conn = None
        self._selector.close()
        self.channel.close()

    # ---- hosts ---------------------------------------------------------------------------
    def _take(self, h: int, reply: HostReply) -> list[tuple[int, Answer]]:
        """The answers of host `h`'s reply, on its tabs' numbers."""
        host = self.hosts[h]
        if host.out_since is not None:
            self._host_back(h, host)
        for kind, fields in reply.events:
            self._report("host_event", {"host": h, "kind": kind, "fields": fields})
        if reply.fatal and self.fatal is None:
            self.fatal = f"host {h + 1}: {reply.fatal}"
        for i, restarts in enumerate(reply.restarts):
            self.tab_restarts[host.tabs[i]] = restarts
        answers = [(host.tabs[i], answer) for i, answer in reply.answers]
        for j, answer in answers:
            self._note(j, answer)
        self._report_steps()
        return answers

    def _host_failed(self, h: int, exc: BaseException) -> list[tuple[int, Answer]]:
        """All of host `h`'s tabs failed (once per outage); its connection, if any, is dropped."""
        host = self.hosts[h]
        if host.conn is not None:
            self._selector.unregister(host.conn.sock)
            host.conn.close()
            host.conn, host.in_flight = None, 0
        now = time.monotonic()
        host.next_poll = now + POLL_S
        detail = host.last_error = _short(exc)
        if host.out_since is not None:
            return []  # still out: its tabs failed already
        host.out_since = host.said_out_at = now
        self._report("host_failed", {"host": h, "cause": type(exc).__name__, "detail": detail, "host_steps": self.host_steps()})
        failed = Failed(HOST_FAILURE, {TAB_FAILURE: HOST_FAILURE, TAB_FAILURE_DETAIL: f"host {h + 1}: {detail}"})
        answers: list[tuple[int, Answer]] = [(j, failed) for j in host.tabs]
        for j, answer in answers:
            self._note(j, answer)
        return answers

    def _host_back(self, h: int, host: _Host) -> None:
        assert host.out_since is not None
        seconds = time.monotonic() - host.out_since
        host.out_since, host.restarts = None, host.restarts + 1
        self._report("host_back", {"host": h, "seconds": round(seconds, 3), "host_steps": self.host_steps()})
        for name, (args, kwargs) in self._sticky.items():
            host.handle.env_method.remote(name, args, kwargs)  # the restarted pages' stage and checkpoint name

    def _poll_out_hosts(self) -> None:
        """A host out, with no connection and no `serve` call left, is asked to serve again every `POLL_S`."""
        now = time.monotonic()
        for h, host in enumerate(self.hosts):
            if host.out_since is not None and host.conn is None and host.serving is None and now >= host.next_poll:
                host.next_poll = now + POLL_S
                self._serve(h)

    def _poll_idle_hosts(self) -> None:
        """No answer is in and none may be in flight: ask the hosts in service for what they have."""
        for h, host in enumerate(self.hosts):
            if not host.in_flight and host.out_since is None and host.conn is not None:
                self._send(h, {"actions": {}, "wait_s": IDLE_WAIT_S})

    def _say_still_out(self) -> None:
        now = time.monotonic()
        for h, host in enumerate(self.hosts):
            if host.out_since is not None and now - host.said_out_at >= STILL_OUT_EVERY_S:
                host.said_out_at = now
                self._report("host_still_out", {"host": h, "seconds": round(now - host.out_since, 1),
                                                "tabs": [j for j in host.tabs], "last_error": host.last_error})

    # ---- accounting -------------------------------------------------------------------------
    def _note(self, j: int, answer: Answer) -> None:
        if isinstance(answer, Stepped):
            self.tab_steps[j] += self.sims
        elif isinstance(answer, Failed):
            self.tab_failures[j] += 1
            self._report("failed", {"tab": j, "cause": answer.cause, "detail": answer.info.get(TAB_FAILURE_DETAIL, "")})
        else:
            self._report("stepping", {"tab": j})

    def _report_steps(self) -> None:
        now = time.monotonic()
        if now - self._last_steps_report >= STEP_REPORT_INTERVAL_S:
            self._last_steps_report = now
            self._report("steps", {"steps": list(self.tab_steps)})

    def hosts_out(self) -> list[int]:
        """The hosts in outage now."""
        return [h for h, host in enumerate(self.hosts) if host.out_since is not None]

    def host_steps(self) -> list[int]:
        return [sum(self.tab_steps[j] for j in host.tabs) for host in self.hosts]


class RayVecEnv(TabVecEnv):
    """Hosts x tabs x K simulations as SB3 envs, over `RayTransport`. `labels` name the tabs in
    outage reports (the port each tab had when its host first started). `bind_host`: where the
    hosts reach this machine (the step channel listens there)."""

    def __init__(
        self,
        hosts: Sequence[Any],
        tabs_per_host: int,
        labels: Sequence[int],
        *,
        sims: int = 1,
        report: Report,
        straggler_s: float = STRAGGLER_S,
        on_outage: Report | None = None,
        bind_host: str = "127.0.0.1",
    ) -> None:
        self.respawns = 0  # no env worker processes
        super().__init__(
            RayTransport(hosts, tabs_per_host, sims, report, bind_host), labels, sims, observation_space(), action_space(),
            straggler_s=straggler_s, count_episodes=True, on_outage=on_outage,
        )

    @property
    def ray_transport(self) -> RayTransport:
        assert isinstance(self.transport, RayTransport)
        return self.transport

    @property
    def tab_failures(self) -> list[int]:
        return self.ray_transport.tab_failures


def _short(exc: BaseException) -> str:
    """The first line of a Ray error (they run to many lines)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
