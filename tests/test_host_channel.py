"""The step channel between the trainer and its Ray hosts (training/host_channel.py), over real
sockets on loopback, without Ray: who gets in, how frames cross, what a host's failure looks like."""

from __future__ import annotations

import pickle
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import host_channel
from training.host_channel import (
    MAGIC,
    MAX_FRAME,
    ChannelClosed,
    ChannelListener,
    FrameReader,
    HostConnection,
    HostError,
    frame,
)
from training.host_reply import HostReply, pack, unpack
from training.step_round import Back, Failed, Stepped


def _admit(listener: ChannelListener, timeout: float = 10.0) -> tuple[int, HostConnection] | None:
    """Accept and hear hellos until one is admitted, or every connection is dropped (None)."""
    end = time.monotonic() + timeout
    seen = False
    while time.monotonic() < end:
        readable, _, _ = select.select([listener.sock, *listener.greeting], [], [], 0.1)
        for sock in readable:
            if sock is listener.sock:
                seen = seen or bool(listener.accept())
                continue
            admitted = listener.hello(sock)
            if admitted:
                return admitted
        if seen and not listener.greeting:
            return None
    raise AssertionError("nobody connected")


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_frames_cross_whole_however_the_bytes_are_cut() -> None:
    values = [{"actions": {0: [1.0, -1.0]}}, "x" * 100_000, None]
    data = b"".join(frame(v) for v in values)
    reader = FrameReader()
    got = [pickle.loads(p) for i in range(len(data)) for p in reader.feed(data[i : i + 1])]
    assert got == values


def test_a_frame_longer_than_allowed_ends_the_channel() -> None:
    with pytest.raises(ChannelClosed, match="more than"):
        FrameReader().feed(host_channel.LENGTH.pack(MAX_FRAME + 1))


def test_a_wrong_ticket_is_dropped_before_anything_is_unpickled(tmp_path: Path) -> None:
    listener = ChannelListener("127.0.0.1")
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    try:
        listener.ticket(0)
        with socket.create_connection(listener.address) as peer:
            peer.sendall(MAGIC + b"\0" * host_channel.TICKET_BYTES + frame(Evil()))
            assert _admit(listener) is None
            assert _closed_by_peer(peer)
        assert not marker.exists() and not listener.greeting
    finally:
        listener.close()


def test_a_ticket_admits_one_connection_and_a_new_one_revokes_the_old() -> None:
    listener = ChannelListener("127.0.0.1")
    try:
        old = listener.ticket(1)
        new = listener.ticket(1)
        with socket.create_connection(listener.address) as stale:
            stale.sendall(MAGIC + old)
            assert _admit(listener) is None  # revoked by the newer ticket
        with socket.create_connection(listener.address) as peer:
            peer.sendall(MAGIC + new)
            admitted = _admit(listener)
            assert admitted is not None and admitted[0] == 1
            admitted[1].close()
        with socket.create_connection(listener.address) as again:
            again.sendall(MAGIC + new)
            assert _admit(listener) is None  # used up
    finally:
        listener.close()


def test_a_host_answers_in_order_and_a_raise_reaches_the_trainer_as_host_error() -> None:
    listener = ChannelListener("127.0.0.1")
    ticket = listener.ticket(0)
    errors: list[BaseException] = []

    def answer(message: dict[str, Any]) -> Any:
        if message["n"] == 3:
            raise ValueError("a bug in the host")
        return message["n"] * 10

    def host() -> None:
        try:
            host_channel.serve(listener.address, ticket, answer)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)

    thread = threading.Thread(target=host, daemon=True)
    thread.start()
    try:
        admitted = _admit(listener)
        assert admitted is not None
        _, conn = admitted
        for n in (1, 2, 3):
            conn.send({"n": n})
        replies: list[Any] = []
        while len(replies) < 3:
            select.select([conn], [], [], 10)
            replies += conn.read()
        assert replies[:2] == [10, 20]
        assert isinstance(replies[2], HostError) and "ValueError: a bug in the host" in replies[2].text
        thread.join(10)
        assert isinstance(errors[0], ValueError)  # the host's call ends with it too (Ray reports it)
        with pytest.raises(ChannelClosed):
            select.select([conn], [], [], 10)
            conn.read()
    finally:
        listener.close()


def test_a_host_that_cannot_reach_the_trainer_says_where_it_tried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    with pytest.raises(ConnectionError, match=f"cannot reach the trainer's step channel at 127.0.0.1:{port}"):
        host_channel.serve(("127.0.0.1", port), b"\0" * host_channel.TICKET_BYTES, lambda m: None)


def test_a_host_reply_crosses_flattened_and_comes_back_equal_and_writable() -> None:
    obs = np.arange(60, dtype=np.float32).reshape(2, 30)
    reply = HostReply(
        answers=[
            (0, Stepped(obs, np.array([1.5, -2.0], np.float32), np.array([False, True]), [{"a": 1}, {"b": None}],
                        recycling=True, reset_infos=[{}, {"seed": 3}])),
            (1, Back(obs[:1] * 2, [{"x": "y"}])),
            (2, Failed("crash", {"tab_failure": "crash"})),
        ],
        events=[("failed", {"port": 8765})], steps=[4, 5, 6], restarts=[0, 1, 0], fatal="gave up",
    )
    back = unpack(pack(reply))
    assert isinstance(back, HostReply) and back.events == reply.events and back.fatal == "gave up"
    assert (back.steps, back.restarts) == (reply.steps, reply.restarts)
    (i, s), (j, b), (k, f) = back.answers
    assert (i, j, k) == (0, 1, 2) and f == Failed("crash", {"tab_failure": "crash"})
    sent = reply.answers[0][1]
    assert isinstance(s, Stepped) and isinstance(sent, Stepped)
    for got, want in ((s.obs, sent.obs), (s.rewards, sent.rewards), (s.dones, sent.dones)):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want) and got.flags.writeable
    assert (s.infos, s.recycling, s.reset_infos) == (sent.infos, True, sent.reset_infos)
    assert isinstance(b, Back) and np.array_equal(b.obs, obs[:1] * 2) and b.reset_infos == [{"x": "y"}]
    assert unpack(pack({"actions": {0: obs[:1]}}))["actions"][0].tolist() == obs[:1].tolist()  # frames to hosts: plain pickles


def test_silent_connections_do_not_pile_up_and_a_host_still_gets_in() -> None:
    listener = ChannelListener("127.0.0.1")
    silent = [socket.create_connection(listener.address) for _ in range(host_channel.MAX_GREETING + 4)]
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and select.select([listener.sock], [], [], 1.0)[0]:
            listener.accept()  # until nobody waits to be accepted
        assert len(listener.greeting) == host_channel.MAX_GREETING
        assert _closed_by_peer(silent[0])  # the oldest went first
        with socket.create_connection(listener.address) as peer:
            peer.sendall(MAGIC + listener.ticket(0))
            admitted = _admit(listener)
            assert admitted is not None and admitted[0] == 0
            admitted[1].close()
    finally:
        for sock in silent:
            sock.close()
        listener.close()
