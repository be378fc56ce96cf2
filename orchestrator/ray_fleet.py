"""`--ray ADDRESS`: a run's tabs on the machines of a Ray cluster, one host actor each.

`HostFleet` is the driver's side of those hosts, standing where a local run's `Fleet` stands:
it starts or joins Ray, places one host actor (`orchestrator/ray_host.py`) per machine that
offers the `lunarfleet_host` resource (with `--ray local`, `--hosts` of them on this machine),
waits until each has its tabs connected, and then keeps the run's view of every tab from what
the Ray transport (`training/ray_transport.py`) reports: steps, failures, recoveries, and the
hosts' own pool events, written to this run's event log with the host named. Chaos faults go
to the host that holds the tab; `host` kills a host actor so that Ray restarts it.

Ray is imported only here and only with `--ray`; without the `ray` extra, `require_ray` says
what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from browser_pool.tab_record import EnvReport, TabRecord
from orchestrator.config import RunConfig
from orchestrator.events import EventLog, say
from orchestrator.fleet import outage_summary, record_outage
from training.host_reply import ray_error_cause

if TYPE_CHECKING:
    from orchestrator.chaos import Fault

HOST_RESOURCE = "lunarfleet_host"  # one unit per machine that may hold tabs (`ray start --resources`)
START_HOSTS_S = 180.0  # on top of --connect-timeout: a host opens its browser and tabs first
INJECT_TIMEOUT_S = 20.0
MISSING = 'lunarfleet: --ray needs Ray, which is not installed here: pip install "lunarfleet[ray]"'


class RayMissing(RuntimeError):
    pass


class HostSetupError(RuntimeError):
    pass


def require_ray() -> None:
    """Raise `RayMissing` (one line that says what to install) when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RayMissing(MISSING) from None


def start_ray(address: str, hosts: int | None) -> tuple[int, float]:
    """Start (`local`) or join (`auto`, HOST:PORT) Ray; the number of hosts and the seconds it took."""
    import ray

    began = time.monotonic()
    if address == "local":
        hosts = hosts or 2
        # address="local": a new cluster even where `ray start` runs one (plain ray.init() would join it).
        # Hosts take no CPU, one unit of HOST_RESOURCE each.
        ray.init(address="local", include_dashboard=False, resources={HOST_RESOURCE: hosts},
                 num_cpus=os.cpu_count() or 2, configure_logging=False)
        return hosts, time.monotonic() - began
    ray.init(address=address, configure_logging=False)
    offered = int(ray.cluster_resources().get(HOST_RESOURCE, 0))
    if offered == 0 or (hosts or 0) > offered:
        ray.shutdown()
        want = f"--hosts {hosts} needs {hosts}" if hosts else "a run needs at least one"
        raise HostSetupError(
            f"{want} machine(s) offering the {HOST_RESOURCE} resource; this cluster offers {offered}. On each machine "
            f"that should hold tabs run: ray start --address=HEAD:PORT --resources='{{\"{HOST_RESOURCE}\": 1}}'"
        )
    return hosts or offered, time.monotonic() - began


class HostFleet:
    """The hosts of a run, seen from the driver (module docstring)."""

    def __init__(self, cfg: RunConfig, events: EventLog, hosts: int) -> None:
        self.events = events
        self.tabs_per_host = cfg.envs
        self.hosts = hosts
        self.actors: list[Any] = []
        self.outages: list[dict[str, Any]] = []
        self.host_tabs = [list(range(h * cfg.envs, (h + 1) * cfg.envs)) for h in range(hosts)]
        self.host_restarts = [0] * hosts
        self.ports: list[int] = []  # each tab's label: its port when its host first started
        self.machines: list[str] = []
        self.tabs: list[TabRecord] = []  # one record per tab, as a pool keeps them (the monitor reads them)
        self._steps_at_failure: dict[int, list[int]] = {}  # host -> every host's steps when it failed
        self.venv: Any = None  # the RayVecEnv, once made
        self.ray_startup_s = 0.0

    # ---- life ----------------------------------------------------------------------------
    def start(self, cfg: RunConfig) -> float:
        """Place one host actor per machine and wait until each has its tabs connected."""
        import ray

        from orchestrator.ray_host import host_actor_class

        began = time.monotonic()
        host_cls = host_actor_class()
        environ = {k: v for k, v in os.environ.items() if k.startswith("LUNARFLEET_")}
        self.actors = [
            host_cls.options(resources={HOST_RESOURCE: 1}).remote(cfg, h, cfg.envs, self.hosts, environ)
            for h in range(self.hosts)
        ]
        calls = [a.describe.remote() for a in self.actors]
        limit = cfg.connect_timeout + START_HOSTS_S
        for h, call in enumerate(calls):
            try:
                info = ray.get(call, timeout=max(limit - (time.monotonic() - began), 1.0))
            except ray.exceptions.GetTimeoutError:
                raise HostSetupError(f"host {h + 1} did not have its tabs connected within {limit:.0f} s (is a "
                                     f"machine offering {HOST_RESOURCE} missing, or Chromium slow there?)") from None
            except ray.exceptions.RayError as exc:
                raise HostSetupError(f"host {h + 1} could not start: {ray_error_cause(exc)}") from None
            self.ports += info["ports"]
            self.machines.append(info["machine"])
            say(f"[Setup] Host {h + 1} on {info['machine']} (pid {info['pid']}): {cfg.envs} tabs connected on its "
                f"ports {info['ports'][0]}-{info['ports'][-1]}")
        if len(set(self.ports)) != len(self.ports):
            self.ports = list(range(len(self.ports)))  # two machines chose the same ports: name tabs by number
        now = time.time()
        self.tabs = [
            TabRecord(j, "", port, state="connected", opened_at=now, host=j // self.tabs_per_host,
                      env=EnvReport(connected=True, ever_connected=True, stepping_at=now))
            for j, port in enumerate(self.ports)
        ]
        return time.monotonic() - began

    @property
    def health(self) -> dict[int, EnvReport]:
        """What the trainer's side saw of each tab, by port (as `Fleet.health`)."""
        return {t.port: t.env for t in self.tabs if t.env is not None}

    @property
    def pool(self) -> HostFleet:
        """The monitor reads a pool's `tabs`, `browser_pid` and `driver_pid` (`tab_table.pool_sources`):
        the tabs are this fleet's records; the browsers are on the hosts' machines."""
        return self

    browser_pid = driver_pid = None

    def request_recycle(self, index: int, reason: str) -> None:
        """The memory guard's ask; it never comes with --ray (no renderer of a host is sampled here)."""

    def stop(self) -> None:
        """End the host actors still there (the vec env closes them first; without one, after a
        failed start, they close their tabs here) and leave Ray."""
        import ray

        if self.venv is None and self.actors:
            closing = [a.close.remote() for a in self.actors]
            with contextlib.suppress(Exception):
                ray.wait(closing, num_returns=len(closing), timeout=30)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(actor, no_restart=True)
        ray.shutdown()

    @property
    def fatal(self) -> str | None:
        """A host's pool gave up (its circuit breaker): the trainer stops, as for a local pool."""
        return self.venv.ray_transport.fatal if self.venv is not None else None

    # ---- what the Ray transport reports ----------------------------------------------------
    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        now = time.time()
        if kind == "host_event":
            self._host_event(fields["host"], fields["kind"], dict(fields["fields"]))
        elif kind == "steps":
            for tab, steps in zip(self.tabs, fields["steps"], strict=True):
                self._env(tab.index).steps, self._env(tab.index).steps_at = steps, now
        elif kind == "failed":
            h = self._env(fields["tab"])
            h.connected, h.failures = False, h.failures + 1
            if h.failed_at is None:
                h.failed_at, h.failed_cause = now, str(fields.get("cause"))
        elif kind == "stepping":
            h = self._env(fields["tab"])
            h.connected, h.stepping_at = True, now
            if h.failed_at is not None:
                h.recoveries.append(now - h.failed_at)
                h.failed_at = None
        elif kind == "host_failed":
            host = fields.pop("host")
            self._steps_at_failure[host] = fields.pop("host_steps")
            self.events("host_failed", {"host": host, **fields, "machine": self.machines[host], "tabs": self.host_tabs[host]})
        elif kind == "host_back":
            self._host_back(fields["host"], fields["seconds"], fields["host_steps"])
        elif kind == "host_still_out":
            host = fields["host"]
            self.events("warning", {"host": host, "message": (
                f"host {host + 1} ({self.machines[host]}) has been out for {fields['seconds']:.0f} s; its tabs "
                f"{', '.join(str(j + 1) for j in self.host_tabs[host])} get frozen steps until Ray starts it again "
                f"(on a machine offering {HOST_RESOURCE}); the other hosts train on (last error: "
                f"{fields.get('last_error') or 'none'})")})

    def _host_event(self, host: int, kind: str, fields: dict[str, Any]) -> None:
        log_host_event(self.events, host, self.tabs_per_host, kind, fields)
        if kind == "tab_replaced" and isinstance(fields.get("tab"), int):
            self.tabs[fields["tab"]].restarts += 1

    def _host_back(self, host: int, seconds: float, now: list[int]) -> None:
        """Its return, with the steps the other hosts' tabs made meanwhile (they train on)."""
        self.host_restarts[host] += 1
        before = self._steps_at_failure.pop(host, None)
        during = {str(h + 1): now[h] - before[h] for h in range(self.hosts) if h != host} if before else {}
        self.events("host_back", {"host": host, "machine": self.machines[host], "seconds": seconds,
                                  "other_hosts_steps_during": during})

    # ---- what the run and the chaos driver ask ------------------------------------------------
    def _env(self, tab: int) -> EnvReport:
        env = self.tabs[tab].env
        assert env is not None, "every tab record of a HostFleet has an EnvReport"
        return env

    def host_steps(self) -> list[int]:
        if self.venv is not None:
            return self.venv.ray_transport.host_steps()
        return [0] * self.hosts

    def note_fault(self, port: int, cause: str) -> None:
        h = self.health[port]
        h.failed_at, h.failed_cause = time.time(), cause

    def record_outage(self, kind: str, message: dict[str, Any]) -> None:
        """The vec env's view of a tab's outage as it began and ended (as `Fleet.record_outage`)."""
        tab = self.ports.index(int(message["port"]))
        record_outage(kind, message, self._env(tab), {"tab": tab, "host": tab // self.tabs_per_host}, self.outages,
                      self.events)

    def outage_summary(self) -> dict[str, Any]:
        return outage_summary(self.outages)

    def recoveries(self) -> list[float]:
        return [s for h in self.health.values() for s in h.recoveries]

    def tab_restarts(self) -> int:
        return sum(t.restarts for t in self.tabs)

    def inject(self, fault: Fault) -> None:
        """A chaos fault: `host` kills the host's actor (Ray restarts it); others go to the host's pool."""
        import ray

        if fault.kind == "host":
            assert fault.host is not None
            ray.kill(self.actors[fault.host], no_restart=False)
            return
        if fault.kind == "host_tree":
            assert fault.host is not None
            with contextlib.suppress(ray.exceptions.RayActorError):  # the host dies answering
                ray.get(self.actors[fault.host].inject.remote("host_tree", 0), timeout=INJECT_TIMEOUT_S)
            return
        host, tab = (fault.host, 0) if fault.host is not None else divmod(fault.tab, self.tabs_per_host)
        ray.get(self.actors[host].inject.remote(fault.kind, tab), timeout=INJECT_TIMEOUT_S)

    def summary(self) -> dict[str, Any]:
        """The verdict's host fields."""
        out = self.venv.ray_transport.hosts_out() if self.venv is not None else []
        return {"hosts": self.hosts, "host_restarts": sum(self.host_restarts), "host_steps": self.host_steps(),
                "host_machines": list(self.machines), "hosts_out_at_end": [h + 1 for h in out]}


def log_host_event(events: EventLog, host: int, tabs_per_host: int, kind: str, fields: dict[str, Any]) -> None:
    """A host's own pool event, in this run's log: the host named, its tabs numbered as the run's."""
    fields["host"] = host
    if isinstance(fields.get("tab"), int):
        fields["tab"] += host * tabs_per_host
    events(kind, fields)


def set_up_on_ray(run: Any, cfg: RunConfig, events: EventLog) -> None:
    """`set_up_training` for `--ray`: Ray, the hosts with their tabs connected, and the vec env."""
    from training.ray_transport import RayVecEnv

    assert cfg.ray is not None
    hosts, ray_s = start_ray(cfg.ray, cfg.hosts)
    where = "a local Ray cluster started" if cfg.ray == "local" else f"joined the Ray cluster at {cfg.ray}"
    say(f"[Setup] Ray: {where} in {ray_s:.1f} s; {hosts} hosts x {cfg.envs} tabs")
    fleet = run.fleet = HostFleet(cfg, events, hosts)
    fleet.ray_startup_s = ray_s
    fleet.start(cfg)
    run.venv = fleet.venv = RayVecEnv(
        fleet.actors, cfg.envs, fleet.ports, sims=cfg.sims_per_tab, report=fleet,
        straggler_s=cfg.straggler_grace, on_outage=fleet.record_outage, bind_host=trainer_address(cfg.ray),
    )


def trainer_address(address: str) -> str:
    """Where the hosts reach the trainer's step channel: this machine's address in the Ray cluster
    (loopback when the cluster is this machine's own)."""
    import ray

    return "127.0.0.1" if address == "local" else ray.util.get_node_ip_address()


# ---- lunarfleet tabs --ray ----------------------------------------------------------------------
TABS_TICK_S = 2.0


def run_tabs_on_ray(cfg: RunConfig) -> int:
    """`lunarfleet tabs --ray`: each host keeps its machine's tabs alive for the trainer the user runs
    there (ports --base-port.. on that machine; with --ray local, host h's tabs take the h-th block
    of ports); this process gathers their status into status.json and the console, until Ctrl+C."""
    import signal

    import ray

    from orchestrator.ray_host import tabs_host_actor_class
    from orchestrator.run_setup import open_run_folder, stop_signals
    from orchestrator.tabs_command import status_line, write_tabs_status

    events = open_run_folder(cfg)
    stop = {"now": False}
    actors: list[Any] = []
    hosts = 0
    code = 0
    try:
        hosts, ray_s = start_ray(cfg.ray or "local", cfg.hosts)
        say(f"[Tabs] Ray: {hosts} hosts x {cfg.envs} tabs ({ray_s:.1f} s to start Ray)")
        local = cfg.ray == "local"
        environ = {k: v for k, v in os.environ.items() if k.startswith("LUNARFLEET_")}
        host_cls = tabs_host_actor_class()
        for h in range(hosts):
            host_cfg = dataclasses.replace(cfg, base_port=cfg.base_port + h * cfg.envs, app_port=cfg.app_port + h) if local else cfg
            actors.append(host_cls.options(resources={HOST_RESOURCE: 1}).remote(host_cfg, h, environ))
        with stop_signals(lambda signum, frame: stop.update(now=True)):
            code = _keep_tabs(cfg, actors, events, stop, write_tabs_status, status_line)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        events("error", {"message": f"{type(exc).__name__}: {exc}"})
        say(f"[Tabs] ✗ {type(exc).__name__}: {exc}")
        code = 1
    finally:
        with stop_signals(signal.SIG_IGN):
            _close_tabs_hosts(actors, cfg.envs, events)
            with contextlib.suppress(Exception):
                ray.shutdown()
            events.close()
            say("[Tabs] Stopped; every host's tabs and browser are closed.")
    return code


def _keep_tabs(cfg: RunConfig, actors: list[Any], events: EventLog, stop: dict[str, bool], write: Any, line_of: Any) -> int:
    import ray

    first = time.monotonic()
    out: set[int] = set()
    last_line = ""
    while not stop["now"]:
        calls = [a.tick.remote() for a in actors]
        rows: list[dict[str, Any]] = []
        machines: list[str] = []
        for h, call in enumerate(calls):
            # the first tick waits for the host to have opened its browser and tabs
            limit = cfg.connect_timeout + START_HOSTS_S if h not in out and time.monotonic() - first < START_HOSTS_S else 60.0
            try:
                status = ray.get(call, timeout=limit)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
                if h not in out:
                    out.add(h)
                    events("host_failed", {"host": h, "detail": ray_error_cause(exc)})
                machines.append("?")
                continue
            if h in out:
                out.discard(h)
                events("host_back", {"host": h, "machine": status["machine"], "seconds": 0})
            machines.append(status["machine"])
            for kind, fields in status.pop("events"):
                log_host_event(events, h, cfg.envs, kind, fields)
            for row in status["tabs"]:
                rows.append({**row, "tab": row["tab"] + h * cfg.envs, "host": h + 1})
        data = {"time": round(time.time(), 3), "command": "tabs", "ray": cfg.ray, "pid": os.getpid(), "machines": machines,
                "hosts_out": [h + 1 for h in sorted(out)], "tabs": rows}
        write(cfg, data)
        line = line_of(data) + (f" · hosts out: {', '.join(str(h + 1) for h in sorted(out))}" if out else "")
        if line != last_line:
            say(line)
            last_line = line
        end = time.monotonic() + TABS_TICK_S
        while not stop["now"] and time.monotonic() < end:
            time.sleep(0.1)
    return 0


def _close_tabs_hosts(actors: list[Any], tabs_per_host: int, events: EventLog) -> None:
    import ray

    calls = [a.close.remote() for a in actors]
    for h, call in enumerate(calls):
        with contextlib.suppress(Exception):
            for kind, fields in ray.get(call, timeout=30):
                log_host_event(events, h, tabs_per_host, kind, fields)
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
