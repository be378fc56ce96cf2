"""The Ray transport: tabs on several machines, each machine's tabs behind one host actor.

A host actor (`orchestrator/ray_host.py`) drives its machine's tabs as the inline transport
does and heals them itself; this side only knows actor handles. One call per host per vec step
carries the actions of all the tabs of that host and comes back with their answers (and any
that were late, and the first observations of replaced pages). The step round decides what
each answer means, as for the other transports (`training/step_round.py`):

- a host that has not answered by the straggler deadline leaves its tabs busy: they get frozen
  steps, and its late reply counts like a slow tab's;
- a host whose actor died or is restarting (`RayActorError`, which `ActorUnavailableError` and
  `ActorDiedError` subclass) is a failure of all its tabs (`Failed`, cause "host"); it is asked
  to rejoin every `POLL_S` until an actor answers with its tabs' first observations (`Back`);
- a host that never comes back leaves its tabs in outage (frozen steps), said every
  `STILL_OUT_EVERY_S`; the other hosts train on. Nothing here raises for a host failure.

Ray itself is imported only when this module is (`--ray`); the handles are any objects with
`step.remote`, `reset.remote`, `env_method.remote` and `close.remote`, so tests may fake them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError
from stable_baselines3.common.monitor import Monitor

from training.host_reply import HostReply, pack, unpack
from training.outages import STRAGGLER_S
from training.step_round import TAB_FAILURE, TAB_FAILURE_DETAIL, Answer, Failed, Stepped
from training.tab_env import STEP_REPORT_INTERVAL_S, action_space, observation_space
from training.tab_vec_env import Report, TabVecEnv, Transport

HOST_FAILURE = "host"  # the cause of the Failed answers of a host's tabs
POLL_S = 0.5  # a host in outage is asked to rejoin this often; also the longest single wait
IDLE_WAIT_S = 0.25  # with every tab out or idle, a host holds an empty call this long for an answer
STILL_OUT_EVERY_S = 60.0  # a host out this long is said again, and again after as long
CLOSE_TIMEOUT_S = 30.0
RESET_TIMEOUT_S = 300.0  # a reset waits for pages that may still be reloading


@dataclass
class _Host:
    handle: Any
    tabs: list[int]  # the vec env's tab numbers of this host's tabs, in the host's order
    calls: list[Any] = field(default_factory=list)  # the ObjectRefs of its calls in flight, oldest first
    out_since: float | None = None  # monotonic time of the failure, while the host is out
    said_out_at: float = 0.0
    next_poll: float = 0.0
    restarts: int = 0  # how often it came back after a failure


class RayTransport(Transport):
    def __init__(self, hosts: Sequence[Any], tabs_per_host: int, sims: int, report: Report) -> None:
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
        self._owner: dict[Any, int] = {}  # each call in flight -> its host
        self._sticky: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}  # set_stage etc., for a host that rejoins

    # ---- Transport ---------------------------------------------------------------------
    def send(self, actions: dict[int, np.ndarray]) -> None:
        per_host: dict[int, dict[int, np.ndarray]] = {}
        for j, a in actions.items():
            per_host.setdefault(j // self.tabs_per_host, {})[j % self.tabs_per_host] = np.asarray(a)
        for h, host in enumerate(self.hosts):
            # Also without actions: the call brings late answers and replaced tabs' first observations.
            # A host runs its calls one at a time, in order (orchestrator/ray_host.py).
            if host.out_since is None and (h in per_host or not host.calls):
                self._call(h, host.handle.step.remote(pack(per_host.get(h, {}))))
        self._poll_out_hosts()

    def collect(self, timeout: float | None) -> list[tuple[int, Answer]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._poll_out_hosts()
            if timeout is None:
                self._poll_idle_hosts()
            calls = list(self._owner)
            left = POLL_S if deadline is None else min(max(deadline - time.monotonic(), 0.0), POLL_S)
            if calls:
                ready, _ = ray.wait(calls, num_returns=1, timeout=left)
                if ready:
                    ready, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
            else:
                ready = []
                time.sleep(left)
            answers = [a for ref in ready for a in self._take(ref)]
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

    # ---- hosts ---------------------------------------------------------------------------
    def _take(self, ref: Any) -> list[tuple[int, Answer]]:
        """The answers of the host whose call `ref` is, or the failure of all its tabs."""
        h = self._owner.pop(ref)
        host = self.hosts[h]
        host.calls = [c for c in host.calls if c != ref]
        try:
            reply: HostReply = unpack(ray.get(ref))
        except RayTaskError as exc:  # the host's code raised: a bug to see, not a host failure to heal
            raise RuntimeError(f"host {h + 1} failed a step: {exc}") from None
        except RayError as exc:  # the actor died, is restarting, or its machine is gone
            return self._host_failed(h, host, exc)
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

    def _host_failed(self, h: int, host: _Host, exc: BaseException) -> list[tuple[int, Answer]]:
        now = time.monotonic()
        host.next_poll = now + POLL_S
        if host.out_since is not None:
            return []  # still out: its tabs failed already
        host.out_since = host.said_out_at = now
        detail = _short(exc)
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
        now = time.monotonic()
        for host in self.hosts:
            if host.out_since is not None and not host.calls and now >= host.next_poll:
                self._call(self.hosts.index(host), host.handle.step.remote(pack({}), rejoin=True))

    def _poll_idle_hosts(self) -> None:
        """No answer is in and none may be in flight: ask the hosts in service for what they have."""
        for h, host in enumerate(self.hosts):
            if not host.calls and host.out_since is None:
                self._call(h, host.handle.step.remote(pack({}), wait_s=IDLE_WAIT_S))

    def _call(self, h: int, ref: Any) -> None:
        self.hosts[h].calls.append(ref)
        self._owner[ref] = h

    def _say_still_out(self) -> None:
        now = time.monotonic()
        for h, host in enumerate(self.hosts):
            if host.out_since is not None and now - host.said_out_at >= STILL_OUT_EVERY_S:
                host.said_out_at = now
                self._report("host_still_out", {"host": h, "seconds": round(now - host.out_since, 1),
                                                "tabs": [j for j in host.tabs]})

    def _settle(self) -> None:
        """Wait for the calls in flight and drop their answers (a reset starts everything anew)."""
        for ref in list(self._owner):
            with contextlib.suppress(RayError, GetTimeoutError):
                ray.get(ref, timeout=RESET_TIMEOUT_S)
        self._owner.clear()
        for host in self.hosts:
            host.calls = []

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
    outage reports (the port each tab had when its host first started)."""

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
    ) -> None:
        self.respawns = 0  # no env worker processes
        super().__init__(
            RayTransport(hosts, tabs_per_host, sims, report), labels, sims, observation_space(), action_space(),
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
