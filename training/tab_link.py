"""One WebSocket port and the page at its far end, as `reset`/`step` coroutines with deadlines.

The link owns the server socket for the whole run, so a replacement tab (or the original
app reconnecting after its own watchdog fired) simply connects again on the same port.
Any way the page can fail (silence past the deadline, a closed socket, a malformed message)
surfaces as one exception, `TabFailure`, after which the link has dropped that connection
and waits for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from training.protocol import (
    MAX_FRAME_BYTES,
    PageMessage,
    ProtocolError,
    encode,
    encode_action,
    parse_page_message,
)

LOOPBACK_HOSTS = ("127.0.0.1", "::1")
EventCallback = Callable[[str, dict[str, Any]], None]


class TabFailure(Exception):
    """The tab on this port stopped being usable; its current episode is lost, nothing more."""

    def __init__(self, port: int, cause: str, detail: str) -> None:
        super().__init__(f"tab on port {port}: {cause}: {detail}")
        self.port = port
        self.cause = cause
        self.detail = detail


class TabLost(Exception):
    """No page connected to this port within the reconnect deadline: the run cannot go on."""


class PortInUse(OSError):
    """Another program already listens on this port."""


@dataclass
class PageSettings:
    """What the trainer tells every page after it connects (the original trainer sends the same)."""

    env_id: int = 0
    env_count: int = 1
    timescale: float = 2.0
    max_episode_steps: int = 10_000
    stage: int | None = None
    checkpoint_name: str | None = None
    checkpoint_steps: int = 0


@dataclass
class LinkDeadlines:
    step_s: float = 10.0
    connect_s: float = 120.0


class TabLink:
    """Serves one port; at most one page at a time may drive it."""

    def __init__(
        self,
        port: int,
        settings: PageSettings,
        deadlines: LinkDeadlines | None = None,
        *,
        hosts: Sequence[str] = LOOPBACK_HOSTS,
        origins: Sequence[str | None] | None = None,
        token: str | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.port = port
        self.settings = settings
        self.deadlines = deadlines or LinkDeadlines()
        self._hosts = list(hosts)
        self._origins = list(origins) if origins is not None else None
        self._token = token
        self._on_event = on_event or (lambda kind, fields: None)
        self._server: Server | None = None
        self._conn: ServerConnection | None = None
        self._fresh = False  # the current connection has not been reset by us yet
        self._hello: PageMessage | None = None
        self._new_conn = asyncio.Event()
        self._pending_seed: int | None = None
        self.log = logging.getLogger(f"lunarfleet.port{port}")

    # ---- server life -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            self._server = await serve(
                self._handle,
                self._hosts,
                self.port,
                origins=self._origins,
                process_request=self._check_request,
                max_size=MAX_FRAME_BYTES,
                ping_interval=None,  # a page busy in a long step must not be dropped for a pong
                close_timeout=1.0,
                compression=None,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    errno.EADDRINUSE, f"port {self.port} is already in use by another program"
                ) from None
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._drop_connection()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3.0)
            self._server = None

    def _check_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if self._token is None:
            return None
        query = parse_qs(urlsplit(request.path).query)
        if query.get("token", [None])[0] != self._token:
            self._on_event("refused", {"port": self.port, "reason": "missing or wrong token"})
            return conn.respond(403, "LunarFleet: wrong or missing run token\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        if self._conn is not None and self._conn.state.name == "OPEN":
            self._on_event("refused", {"port": self.port, "reason": "a page is already connected"})
            await conn.close(1008, "LunarFleet: another page already drives this port")
            return
        self._conn = conn
        self._fresh = True
        self._hello = None
        self._new_conn.set()
        self._on_event("connected", {"port": self.port})
        await conn.wait_closed()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._new_conn.clear()
        if conn is not None:
            # Never wait long on a hung page: close() gives up after close_timeout and aborts.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(1011, "LunarFleet: tab failed"), 2.0)

    # ---- the env-facing API ------------------------------------------------------------
    def request_seed(self, seed: int) -> None:
        """Seed the next episode (pages that announced LunarFleet's extensions only)."""
        self._pending_seed = seed

    @property
    def lockstep(self) -> bool:
        return bool(self._hello and self._hello.lockstep)

    async def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        """First observation of a new episode, waiting for a page to connect if none is."""
        if self._conn is None:
            await self._wait_for_page()
        conn = self._conn
        assert conn is not None
        try:
            if self._fresh:
                # A page sends reset_complete on its own as it connects (after an optional hello).
                await self._receive(conn, {"reset_complete"}, self.deadlines.step_s)
                self._fresh = False
                await self._send_settings(conn)
            elif self._pending_seed is not None and self._hello is not None:
                await conn.send(encode("set_seed", seed=self._pending_seed))
            self._pending_seed = None
            await conn.send(encode("reset_request"))
            message = await self._receive(conn, {"reset_complete"}, self.deadlines.step_s)
        except TabFailure:
            await self._drop_connection()
            raise
        assert message.observation is not None
        return message.observation, message.info

    async def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        conn = self._conn
        if conn is None:
            raise TabFailure(self.port, "disconnected", "no page is connected")
        try:
            try:
                await conn.send(encode_action(action))
            except ConnectionClosed as exc:
                raise TabFailure(self.port, "disconnected", f"socket closed ({exc})") from None
            message = await self._receive(conn, {"state"}, self.deadlines.step_s)
        except TabFailure:
            await self._drop_connection()
            raise
        assert message.observation is not None
        return message.observation, message.reward, message.done, message.info

    async def send_checkpoint_info(self, name: str, steps: int) -> None:
        self.settings.checkpoint_name, self.settings.checkpoint_steps = name, steps
        if self._conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._conn.send(encode("checkpoint_info", checkpoint_name=name, checkpoint_steps=steps))

    # ---- internals ---------------------------------------------------------------------
    async def _wait_for_page(self) -> None:
        started = time.monotonic()
        self._on_event("waiting", {"port": self.port, "since": time.time()})
        try:
            await asyncio.wait_for(self._new_conn.wait(), self.deadlines.connect_s)
        except TimeoutError:
            raise TabLost(
                f"no page connected to port {self.port} within {self.deadlines.connect_s:.0f} s; "
                "is the tab pool running and the page URL right?"
            ) from None
        self.log.debug("page connected after %.2f s", time.monotonic() - started)

    async def _send_settings(self, conn: ServerConnection) -> None:
        s = self.settings
        messages = [
            encode("set_timescale", timescale=s.timescale),
            encode("set_config", max_episode_steps=s.max_episode_steps),
            encode("parallel_training_info", env_count=s.env_count, env_id=s.env_id),
        ]
        if s.checkpoint_name:
            messages.append(
                encode("checkpoint_info", checkpoint_name=s.checkpoint_name, checkpoint_steps=s.checkpoint_steps)
            )
        if self._hello is not None:
            if s.stage is not None:
                messages.append(encode("set_stage", stage=s.stage))
            if self._pending_seed is not None:
                messages.append(encode("set_seed", seed=self._pending_seed))
        for text in messages:
            await conn.send(text)

    async def _receive(self, conn: ServerConnection, wanted: set[str], deadline_s: float) -> PageMessage:
        """Next message of a wanted type; protocol chatter in between is handled on the way."""
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            try:
                frame = await asyncio.wait_for(conn.recv(), max(left, 0.0))
            except TimeoutError:
                raise TabFailure(self.port, "hang", f"no reply within {deadline_s:g} s") from None
            except ConnectionClosed as exc:
                raise TabFailure(self.port, "disconnected", f"socket closed ({exc})") from None
            try:
                message = parse_page_message(frame)
            except ProtocolError as exc:
                raise TabFailure(self.port, "garbage", str(exc)) from None
            if message.type in wanted:
                return message
            if message.type == "lunarfleet_hello":
                self._hello = message
            elif message.type == "restart_request":
                # The original app's watchdog: it will drop and re-open its socket by itself.
                self._on_event("restart_request", {"port": self.port})
            elif message.type == "reset_complete" and "state" in wanted:
                # A page that reset on its own mid-episode (e.g. after its watchdog): the
                # episode we were stepping is gone.
                raise TabFailure(self.port, "page_reset", "the page reset its episode by itself")
            # stale replies of other kinds are dropped

