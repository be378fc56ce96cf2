"""The Ray transport's decisions, over a real local Ray with fake host actors (no Chromium).

A fake host (tests/fake_ray_host.py) answers like `orchestrator/ray_host.py`: a `HostReply` with
one `Stepped` per tab it was sent actions for. Ray's failures are real: `ray.kill`
with and without restart, an actor slower than the straggler grace.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil
import pytest

ray = pytest.importorskip("ray")

from orchestrator.ray_host import host_actor_class  # noqa: E402
from tests import fake_ray_host  # noqa: E402
from tests.fake_ray_host import TABS  # noqa: E402
from training import ray_transport  # noqa: E402 - needs Ray
from training.host_channel import MAGIC, MAX_GREETING, TICKET_BYTES  # noqa: E402
from training.ray_transport import HOST_FAILURE, RayVecEnv  # noqa: E402
from training.step_round import TAB_FAILURE, TAB_WAITING  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module; none of its processes may outlive it. (Only the processes Ray
    started: a pytest worker may already hold multiprocessing's forkserver, from a subproc vec env
    test, which lives as long as the worker.)"""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ours = {p.pid for p in psutil.Process().children(recursive=True)} - before
    try:
        yield
    finally:
        ray.shutdown()
        left = psutil.wait_procs([psutil.Process(p) for p in ours if psutil.pid_exists(p)], timeout=20)[1]
        for proc in left:
            proc.kill()
        assert not left, f"Ray left processes behind: {[p.pid for p in left]}"


FakeHost = host_actor_class(fake_ray_host.FakeHost)
# A grace no loaded machine's pause reaches, for tests that assert every tab in service answered
# a step (a host out is not waited for: its tabs get frozen steps at once).
GENEROUS_S = 30.0


def _venv(hosts: list[Any], straggler_s: float = 0.3) -> tuple[RayVecEnv, list[tuple[str, dict[str, Any]]]]:
    reports: list[tuple[str, dict[str, Any]]] = []
    venv = RayVecEnv(hosts, TABS, list(range(len(hosts) * TABS)), report=lambda k, f: reports.append((k, f)),
                     straggler_s=straggler_s)
    venv.reset()
    return venv, reports


def _step(venv: RayVecEnv) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    return venv.step(np.zeros((venv.num_envs, 3), dtype=np.float32))


def test_one_call_per_host_per_vec_step(local_ray) -> None:
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, _ = _venv(hosts)
    try:
        for _ in range(5):
            obs, rewards, dones, infos = _step(venv)
            assert rewards.tolist() == [1.0] * 4 and not dones.any()
        assert [ray.get(h.count.remote()) for h in hosts] == [(5, 10), (5, 10)]  # 5 calls, 2 tabs each
        assert obs[:, 0].tolist() == [9.0, 10.0, 9.0, 10.0]  # each host's answers land on its own tabs
        assert venv.ray_transport.host_steps() == [10, 10]
    finally:
        venv.close()


def test_a_host_past_the_grace_gets_frozen_steps_and_its_late_answer_counts(local_ray) -> None:
    hosts = [FakeHost.remote(), FakeHost.remote(delay_s=1.5)]
    venv, _ = _venv(hosts, straggler_s=0.2)
    try:
        obs, rewards, dones, infos = _step(venv)
        assert [i.get(TAB_WAITING) for i in infos] == [None, None, "slow", "slow"]
        assert rewards.tolist() == [1.0, 1.0, 0.0, 0.0]
        # The slow host's late reply is its tabs' next real step, whenever it comes in; the others
        # step on meanwhile.
        end = time.monotonic() + 60
        while time.monotonic() < end:
            obs, rewards, dones, infos = _step(venv)
            assert rewards[:2].tolist() == [1.0, 1.0]
            if infos[2].get(TAB_WAITING) is None:
                break
        assert rewards[2:].tolist() == [1.0, 1.0] and obs[2:, 0].tolist() == [1.0, 2.0]
    finally:
        venv.close()


def test_a_killed_host_is_an_outage_of_its_tabs_until_it_rejoins(local_ray) -> None:
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, reports = _venv(hosts)
    try:
        _step(venv)
        ray.kill(hosts[1], no_restart=False)
        steps_of_host_0 = []
        cut = None
        end = time.monotonic() + 120
        while time.monotonic() < end:
            obs, rewards, dones, infos = _step(venv)  # never raises for the host
            steps_of_host_0.append(venv.ray_transport.host_steps()[0])
            if any(i.get(TAB_FAILURE) == HOST_FAILURE for i in infos[2:]):
                cut = infos
                break
        assert cut is not None, reports
        kinds = [k for k, _ in reports]
        assert kinds.index("host_failed") < kinds.index("host_back")
        # Host 0's tabs stepped on throughout: its count grew with every vec step of the outage.
        assert all(b > a for a, b in zip(steps_of_host_0, steps_of_host_0[1:], strict=False)), steps_of_host_0
        # The rejoined tabs: one-step truncations from their last good observation, the new pages' next.
        assert dones[2:].all() and obs[2:, 0].tolist() == [-1.0, -1.0]
        assert venv.tab_failures == [0, 0, 1, 1]
        obs, rewards, dones, infos = _step(venv)
        assert rewards.tolist() == [1.0] * 4  # all four tabs step again
    finally:
        venv.close()


def test_a_host_gone_for_good_leaves_its_tabs_out_and_says_so(local_ray, monkeypatch) -> None:
    monkeypatch.setattr(ray_transport, "STILL_OUT_EVERY_S", 0.5)
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, reports = _venv(hosts)
    try:
        _step(venv)
        ray.kill(hosts[1], no_restart=True)
        end = time.monotonic() + 60
        while time.monotonic() < end and "host_still_out" not in [k for k, _ in reports]:
            obs, rewards, dones, infos = _step(venv)
        still_out = [f for k, f in reports if k == "host_still_out"]
        assert still_out and still_out[0]["host"] == 1 and still_out[0]["tabs"] == [2, 3]
        for _ in range(3):
            obs, rewards, dones, infos = _step(venv)
            assert rewards.tolist() == [1.0, 1.0, 0.0, 0.0]  # the others train on
            assert [i.get(TAB_WAITING) for i in infos[2:]] == [HOST_FAILURE, HOST_FAILURE]
        assert "host_back" not in [k for k, _ in reports]
    finally:
        venv.close()


def test_a_dropped_step_channel_is_an_outage_until_the_host_serves_again(local_ray) -> None:
    """The connection breaks while the actor lives (a network cut): its tabs fail once, the host
    is asked to serve again, and its rejoined tabs step on."""
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, reports = _venv(hosts, straggler_s=GENEROUS_S)
    try:
        _step(venv)
        conn = venv.ray_transport.hosts[1].conn
        assert conn is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        infos_seen = []
        end = time.monotonic() + 60
        while time.monotonic() < end and "host_back" not in [k for k, _ in reports]:
            obs, rewards, dones, infos = _step(venv)
            infos_seen.append(infos)
        failed = [f for k, f in reports if k == "host_failed"]
        assert [f["host"] for f in failed] == [1] and "step channel" in failed[0]["detail"]
        assert "host_back" in [k for k, _ in reports]
        assert any(i[2].get(TAB_FAILURE) == HOST_FAILURE for i in infos_seen)
        assert dones[2:].all() and obs[2:, 0].tolist() == [-1.0, -1.0]  # the rejoin's first observations
        obs, rewards, dones, infos = _step(venv)
        assert rewards.tolist() == [1.0] * 4
        assert venv.ray_transport.hosts[1].conn is not conn
    finally:
        venv.close()


def test_a_bug_in_a_host_is_raised_not_healed(local_ray) -> None:
    hosts = [FakeHost.remote(), FakeHost.remote(fail_after=2)]
    venv, reports = _venv(hosts)
    try:
        with pytest.raises(RuntimeError, match="host 2 failed a step:(.|\n)*ValueError: a bug in the host's step"):
            for _ in range(10):
                _step(venv)
        assert "host_failed" not in [k for k, _ in reports]
    finally:
        venv.close()


def test_a_wrong_sized_action_array_is_refused_with_its_shape_and_stepping_goes_on(local_ray) -> None:
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, _ = _venv(hosts, straggler_s=GENEROUS_S)
    try:
        with pytest.raises(ValueError, match=r"actions of shape \(4, 2\): this vec env takes \(4, 3\)"):
            venv.step(np.zeros((4, 2), dtype=np.float32))
        obs, rewards, dones, infos = _step(venv)
        assert rewards.tolist() == [1.0] * 4
    finally:
        venv.close()


def test_a_host_that_cannot_reach_the_trainer_ends_the_start_with_the_cause(local_ray, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there
    listener_init = ray_transport.ChannelListener.__init__

    def advertising_a_closed_port(self: Any, bind_host: str) -> None:
        listener_init(self, bind_host)
        self.address = (bind_host, closed)

    monkeypatch.setattr(ray_transport.ChannelListener, "__init__", advertising_a_closed_port)
    hosts = [FakeHost.remote(), FakeHost.remote()]
    try:
        with pytest.raises(RuntimeError, match=rf"host \d cannot serve its step channel: ConnectionError: cannot reach "
                                               rf"the trainer's step channel at 127.0.0.1:{closed}"):
            RayVecEnv(hosts, TABS, list(range(2 * TABS)), report=lambda k, f: None)
    finally:
        for host in hosts:
            ray.kill(host, no_restart=True)


def test_after_the_start_a_host_that_cannot_reach_the_trainer_stays_out_until_it_can(local_ray, monkeypatch) -> None:
    monkeypatch.setattr(ray_transport, "STILL_OUT_EVERY_S", 0.5)
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, reports = _venv(hosts, straggler_s=GENEROUS_S)
    transport = venv.ray_transport
    address = transport.channel.address
    try:
        _step(venv)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            transport.channel.address = ("127.0.0.1", s.getsockname()[1])  # what the hosts are told: nothing there
        conn = transport.hosts[1].conn
        assert conn is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + 60

        def still_out_why() -> list[str]:
            return [f["last_error"] for k, f in reports if k == "host_still_out"]

        while time.monotonic() < end and not any("cannot reach" in why for why in still_out_why()):
            obs, rewards, dones, infos = _step(venv)  # never raises
        assert any("cannot reach the trainer's step channel at 127.0.0.1" in why for why in still_out_why())
        obs, rewards, dones, infos = _step(venv)
        assert rewards[:2].tolist() == [1.0, 1.0] and transport.hosts_out() == [1]
        transport.channel.address = address  # reachable again: the next ask brings it back
        end = time.monotonic() + 60
        while time.monotonic() < end and "host_back" not in [k for k, _ in reports]:
            _step(venv)
        assert "host_back" in [k for k, _ in reports] and transport.hosts_out() == []
    finally:
        venv.close()


def test_strangers_on_the_channel_port_cost_nothing(local_ray) -> None:
    """Silent connections (a port scanner's) beyond what may wait, and one with a wrong ticket,
    while the vec env steps: it steps on, and a host whose connection drops still rejoins."""
    hosts = [FakeHost.remote(), FakeHost.remote()]
    venv, reports = _venv(hosts, straggler_s=GENEROUS_S)
    transport = venv.ray_transport
    strangers = [socket.create_connection(transport.channel.address) for _ in range(MAX_GREETING + 3)]
    try:
        strangers[-1].sendall(MAGIC + b"\0" * TICKET_BYTES)
        for _ in range(20):
            obs, rewards, dones, infos = _step(venv)
            assert rewards.tolist() == [1.0] * 4
        conn = transport.hosts[1].conn
        assert conn is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + 60
        while time.monotonic() < end and "host_back" not in [k for k, _ in reports]:
            _step(venv)
        assert "host_back" in [k for k, _ in reports]
        assert len(transport.channel.greeting) <= MAX_GREETING
    finally:
        for sock in strangers:
            sock.close()
        venv.close()
