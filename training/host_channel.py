"""The step channel: one TCP connection between the trainer and each Ray host, for a vec step's
actions and answers. Ray still places, restarts, resets and controls the hosts, and says when
one died; only the hot path goes around it.

Why: a Ray actor call is too dear for every vec step. An empty call to each of 2 hosts, waited
for together, took 1.14 ms and 1.62 ms of CPU on this 2-core machine: 42% of a vec step through
the hosts, which kept collection through them near 0.3x inline. A message round trip on a socket
costs a small fraction of that (`lunarfleet bench`, line "Hosts' own round").

Who listens: the trainer, on the address its hosts reach it at (its Ray node's), at a port the
OS picks. A host connects out when the trainer calls its `serve` (a Ray call) with that address
and a ticket: 32 random bytes made for that call. The host's first bytes must be the magic and a
ticket the trainer gave out and has not taken back; any other connection is closed before one
frame is read from it, so nothing is unpickled from a peer that did not get a ticket through Ray.

Frames: a 4-byte big-endian length, then a pickle (`training/host_reply.py`). The trainer sends a
host one `dict` of `step` arguments a frame; the host answers each, in order, with one
`HostReply`, or with a `HostError` when its code raised.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import socket
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from training.host_reply import pack, unpack

MAGIC = b"LFS1"
TICKET_BYTES = 32
HELLO_BYTES = len(MAGIC) + TICKET_BYTES
LENGTH = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a reply of 64 tabs x 64 simulations is about 1 MB
CONNECT_TIMEOUT_S = 10.0
MAX_GREETING = 16  # connections accepted and still saying hello
READ_BYTES = 1 << 20


class ChannelClosed(ConnectionError):
    """The other end closed the connection, reset it, or sent what no end of this channel sends."""


@dataclass
class HostError:
    """A host's code raised while answering: a bug to show, not a host failure to heal."""

    text: str


def frame(value: object) -> bytes:
    payload = pack(value)
    return LENGTH.pack(len(payload)) + payload


class FrameReader:
    """The whole frames among the bytes read so far, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ChannelClosed(f"a frame of {size:,} bytes, more than the {MAX_FRAME:,} allowed")
            end = LENGTH.size + size
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[LENGTH.size : end]))
            del self._buf[:end]
        return frames


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a frame goes out at once, not after an ACK


# ---- the host's end ------------------------------------------------------------------------------
def serve(address: tuple[str, int], ticket: bytes, answer: Callable[[dict[str, Any]], Any]) -> None:
    """Connect to the trainer and answer its frames one at a time, in order, until it closes the
    connection. Runs on a Ray call's thread for as long as the trainer uses this host."""
    try:
        sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the trainer's step channel at {address[0]}:{address[1]} ({exc}); the machine "
            f"running the trainer must accept connections from its hosts' machines"
        ) from None
    with sock:
        sock.settimeout(None)
        _nodelay(sock)
        sock.sendall(MAGIC + ticket)
        reader = FrameReader()
        while True:
            try:
                data = sock.recv(READ_BYTES)
            except OSError:
                return  # the trainer went away: its side decides what that means
            if not data:
                return
            for payload in reader.feed(data):
                try:
                    reply = answer(unpack(payload))
                except Exception:
                    with contextlib.suppress(OSError):
                        sock.sendall(frame(HostError(traceback.format_exc(limit=8))))
                    raise
                try:
                    sock.sendall(frame(reply))
                except OSError:
                    return


# ---- the trainer's end ---------------------------------------------------------------------------
class HostConnection:
    """The trainer's end of one host's connection (blocking: it reads only what select said is there)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        _nodelay(sock)
        self.sock = sock
        self._reader = FrameReader()

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, value: object) -> None:
        try:
            self.sock.sendall(frame(value))
        except OSError as exc:
            raise ChannelClosed(f"the host's step channel failed ({exc})") from None

    def read(self) -> list[Any]:
        """What came in: after select said the socket is readable, this does not block."""
        try:
            data = self.sock.recv(READ_BYTES)
        except OSError as exc:
            raise ChannelClosed(f"the host's step channel failed ({exc})") from None
        if not data:
            raise ChannelClosed("the host's step channel closed")
        return [unpack(p) for p in self._reader.feed(data)]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class ChannelListener:
    """The trainer's listening socket, the tickets it gave out, and the connections still to say theirs."""

    def __init__(self, bind_host: str) -> None:
        self.sock = socket.create_server((bind_host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = (bind_host, self.sock.getsockname()[1])
        self._tickets: dict[bytes, int] = {}  # ticket -> host
        self.greeting: dict[socket.socket, bytearray] = {}  # accepted, still saying hello

    def ticket(self, host: int) -> bytes:
        """A new ticket for `host`; its earlier ones no longer admit anyone."""
        self._tickets = {t: h for t, h in self._tickets.items() if h != host}
        ticket = secrets.token_bytes(TICKET_BYTES)
        self._tickets[ticket] = host
        return ticket

    def accept(self) -> list[socket.socket]:
        """The connections waiting to be accepted, now saying hello (past `MAX_GREETING`, the
        oldest still saying it are dropped)."""
        new = []
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # e.g. a peer that reset before we accepted
            sock.setblocking(False)
            if len(self.greeting) >= MAX_GREETING:  # e.g. a port scanner's connections, silent: the oldest goes
                self.drop(next(iter(self.greeting)))
            self.greeting[sock] = bytearray()
            new.append(sock)
        return [sock for sock in new if sock in self.greeting]

    def hello(self, sock: socket.socket) -> tuple[int, HostConnection] | None:
        """Read what `sock` said so far: its host and connection once its ticket is in and right.
        A wrong ticket, more than a hello (a host speaks only when asked) or an early close drops
        the connection (`sock` is then no longer greeting)."""
        said = self.greeting[sock]
        try:
            data = sock.recv(READ_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        said += data
        if data and len(said) < HELLO_BYTES:
            return None
        ticket = bytes(said[len(MAGIC) : HELLO_BYTES])
        host = next((h for t, h in self._tickets.items() if hmac.compare_digest(t, ticket)), None)
        if not data or len(said) != HELLO_BYTES or not said.startswith(MAGIC) or host is None:
            self.drop(sock)
            return None
        del self.greeting[sock]
        del self._tickets[ticket]  # a ticket admits one connection
        return host, HostConnection(sock)

    def drop(self, sock: socket.socket) -> None:
        """Close a connection still saying hello."""
        del self.greeting[sock]
        with contextlib.suppress(OSError):
            sock.close()

    def close(self) -> None:
        for sock in [self.sock, *self.greeting]:
            with contextlib.suppress(OSError):
                sock.close()
        self.greeting.clear()
