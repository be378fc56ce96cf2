"""One WebSocket port and the page at its far end, as `reset`/`step` with deadlines.

A step is a callback (`start_step_batch`: its reply is read as it arrives, no task a message),
awaitable as `step_batch`/`step`; resets and settings are coroutines.

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
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from training.batch_frames import encode_step_batch, parse_state_batch_fast
from training.page_connection import Message, PageConnection
from training.protocol import MAX_FRAME_BYTES, PageMessage, ProtocolError, encode, encode_action, parse_page_message

LOOPBACK_HOSTS = ("127.0.0.1", "::1")
# The original app's watchdog closes its socket about 2 s after its restart_request and reconnects
# about 1 s later: a drop this soon after a restart_request is that, not a fault of the tab.
WATCHDOG_WINDOW_S = 10.0
EventCallback = Callable[[str, dict[str, Any]], None]
_REPLY, _BATCH_REPLY = frozenset({"state"}), frozenset({"state_batch"})  # what answers a step
# One step of a page's K simulations: observations (K, 30), rewards (K,), dones (K,), infos, and
# per simulation None or the first observation of the episode the page started after this step.
StepReply = tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]], list[np.ndarray | None]]
# The methods a vec env's `env_method` reaches on every tab, and the `TabLink` coroutine that
# answers each. The first four are the calls of the original app's trainer after it created
# its envs; the checkpoint and stage ones are LunarFleet's own trainer's.
ENV_METHODS = {
    "connect": "wait_connected",
    "set_timescale": "send_timescale",
    "send_parallel_training_info": "send_parallel_training_info",
    "send_checkpoint_info": "send_checkpoint_info",
    "set_checkpoint_info": "send_checkpoint_info",
    "set_stage": "send_stage",
}


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
    obstacles: int | None = None  # the curriculum's obstacle count on the embedded page; None: the full field
    checkpoint_name: str | None = None
    checkpoint_steps: int = 0
    sims: int = 1  # simulations the page runs (URL parameter sims); > 1 means batched stepping


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
        self._conn: PageConnection | None = None
        self._closing: set[asyncio.Task[None]] = set()  # dropped connections, closing
        self._step: _Step | None = None  # the step in flight (start_step_batch)
        self._fresh = False  # the current connection has not been reset by us yet
        self._hello: PageMessage | None = None
        self._new_conn = asyncio.Event()
        self._pending_seed: int | None = None
        self._restart_requested_at = float("-inf")
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
                create_connection=PageConnection,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    errno.EADDRINUSE, f"port {self.port} is already in use by another program"
                ) from None
            raise

    async def close(self) -> None:
        self.cancel_step()
        self._drop()
        await asyncio.gather(*self._closing, return_exceptions=True)
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

    async def _handle(self, conn: PageConnection) -> None:  # type: ignore[override]
        if self._conn is not None and self._conn.state.name == "OPEN":
            self._on_event("refused", {"port": self.port, "reason": "a page is already connected"})
            await conn.close(1008, "LunarFleet: another page already drives this port")
            return
        if self._conn is not None:
            # The page came back by itself between two steps: a restart_request its old socket
            # still holds explains why (the original app's watchdog), and is counted.
            self._drain(self._conn)
        self._conn = conn
        self._fresh = True
        self._hello = None
        self._new_conn.set()
        self._on_event("connected", {"port": self.port})
        await conn.wait_closed()

    def _drop(self, conn: PageConnection | None = None) -> None:
        """Forget `conn` (default: the current one) and close it in the background; a newer
        connection that arrived meanwhile stays."""
        if conn is None or conn is self._conn:
            conn, self._conn = self._conn, None
            self._new_conn.clear()
        if conn is not None:
            task = asyncio.get_running_loop().create_task(_close_quietly(conn))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ---- the env-facing API ------------------------------------------------------------
    def request_seed(self, seed: int) -> None:
        """Seed the next episode (pages that announced LunarFleet's extensions only)."""
        self._pending_seed = seed

    async def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        """First observation of a new episode, waiting for a page to connect if none is."""
        conn = await self._connected_page()
        try:
            await self._request_reset(conn, {"reset_complete"})
            message = await self._receive(conn, {"reset_complete"}, self.deadlines.step_s)
        except TabFailure:
            self._drop(conn)
            raise
        assert message.observation is not None
        return message.observation, message.info

    async def _connected_page(self) -> PageConnection:
        """The current connection; when there is none, the next page to connect."""
        if self._conn is None:
            await self._wait_for_page()
        conn = self._conn
        assert conn is not None
        return conn

    async def _request_reset(self, conn: PageConnection, greeting: set[str], check_sims: bool = False) -> None:
        """Send `reset_request`; first, to a page that just connected, the settings (once its own
        first reset, one of `greeting`, came), else the next episode's seed if one is asked for."""
        if self._fresh:
            # A page resets on its own as it connects (after an optional hello).
            await self._receive(conn, greeting, self.deadlines.step_s)
            self._fresh = False
            if check_sims:
                self._check_announced_sims()
            await self._send(conn, *self._settings_messages())
        elif self._pending_seed is not None and self._hello is not None:
            await self._send(conn, encode("set_seed", seed=self._pending_seed))
        self._pending_seed = None
        await self._send(conn, encode("reset_request"))

    def _stepping_connection(self) -> PageConnection:
        """The connection a step goes over: the one its episode began on."""
        conn = self._conn
        if conn is None:
            raise TabFailure(self.port, "disconnected", "no page is connected")
        if self._fresh:
            # The page dropped its socket and came back by itself between two steps (the original
            # app does so after its watchdog): its episodes are gone, the new connection is kept.
            raise TabFailure(
                self.port, self._drop_cause("page_reconnected"), "the page reconnected by itself; its episodes start over"
            )
        return conn

    async def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """One step of a page's single simulation (the original `action` and `state` messages)."""
        obs, rewards, dones, infos, _ = await self.step_batch(np.asarray(action).reshape(1, -1))
        return obs[0], float(rewards[0]), bool(dones[0]), infos[0]

    # ---- settings sent on request (env_method); kept for replacement pages too ----------
    async def wait_connected(self) -> None:
        """Return once a page is connected (the original app's `connect`); TabLost past the deadline."""
        await self._connected_page()

    async def send_timescale(self, timescale: float) -> None:
        self.settings.timescale = float(timescale)
        await self._send_now(encode("set_timescale", timescale=self.settings.timescale))

    async def send_parallel_training_info(self, num_envs: int, env_id: int) -> None:
        self.settings.env_count, self.settings.env_id = int(num_envs), int(env_id)
        await self._send_now(encode("parallel_training_info", env_count=self.settings.env_count, env_id=self.settings.env_id))

    async def send_checkpoint_info(self, name: str, steps: int) -> None:
        self.settings.checkpoint_name, self.settings.checkpoint_steps = name, steps
        await self._send_now(encode("checkpoint_info", checkpoint_name=name, checkpoint_steps=steps))

    async def send_stage(self, stage: int, obstacles: int | None = None) -> None:
        self.settings.stage, self.settings.obstacles = stage, obstacles
        if self._hello is not None:  # a LunarFleet extension: only to a page that announced it
            await self._send_now(self._stage_message())

    def _stage_message(self) -> str:
        """`set_stage`, with the curriculum's obstacle count when there is one (none: the full field)."""
        s = self.settings
        return encode("set_stage", stage=s.stage) if s.obstacles is None else encode("set_stage", stage=s.stage, obstacles=s.obstacles)

    async def _send_now(self, text: str) -> None:
        """To the page connected now, if any; a page that connects later gets it with its settings."""
        if self._conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._conn.send(text)

    # ---- batched stepping: all K simulations of a page at once --------------------------
    @property
    def sims(self) -> int:
        """Simulations behind this port, as the trainer expects them (`PageSettings.sims`)."""
        return self.settings.sims

    async def reset_all(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """First observations of new episodes in all K simulations: ((K, 30) array, K infos).

        Works for any page: K = 1 uses the original protocol (`reset_complete`), K > 1 the
        `reset_batch` extension. A page announcing another K than expected is a failed tab.
        """
        conn = await self._connected_page()
        batched = self.settings.sims > 1
        try:
            await self._request_reset(conn, {"reset_complete", "reset_batch"}, check_sims=True)
            message = await self._receive(conn, {"reset_batch"} if batched else {"reset_complete"}, self.deadlines.step_s)
            if batched:
                assert message.observations is not None and message.infos is not None
                self._check_count(len(message.observations), "reset_batch")
                return message.observations, message.infos
        except TabFailure:
            self._drop(conn)
            raise
        assert message.observation is not None
        return message.observation[None, :], [message.info]

    async def step_batch(self, actions: np.ndarray) -> StepReply:
        """One step of all K simulations (`start_step_batch`, awaited); TabFailure when it failed."""
        reply: asyncio.Future[StepReply | TabFailure] = asyncio.get_running_loop().create_future()
        self.start_step_batch(actions, lambda result: reply.done() or reply.set_result(result))
        try:
            result = await reply
        except asyncio.CancelledError:
            self.cancel_step()
            raise
        if isinstance(result, TabFailure):
            raise result
        return result

    def start_step_batch(self, actions: np.ndarray, on_reply: Callable[[StepReply | TabFailure], None]) -> None:
        """Send one step of all K simulations and return at once. `on_reply` gets, on the loop and
        exactly once, the reply or the TabFailure (the link has then dropped the connection).

        The reply is per simulation: observations (K, 30), rewards (K,), dones (K,), infos, and
        None or the first observation of the episode the page started because this step ended
        one (K > 1 pages reset finished simulations themselves). K = 1 sends the original
        `action` message, so any page works; its episode is not reset here (None): the caller
        resets it.
        """
        if self._step is not None:
            raise RuntimeError(f"port {self.port}: a step is already in flight")
        batched = self.settings.sims > 1
        step = _Step(self, on_reply, _BATCH_REPLY if batched else _REPLY, parse_state_batch_fast if batched else parse_page_message)
        try:
            conn = step.conn = self._stepping_connection()
            text = encode_step_batch(actions) if batched else encode_action(np.asarray(actions).reshape(-1)[:3])
            try:
                conn.send_text_now(text)
            except ConnectionError as exc:
                raise self._closed(conn, exc) from None
        except TabFailure as failure:
            step.end(failure)
            return
        self._step = step
        conn.on_message, conn.on_lost = step.take, step.lost
        step.timer = conn.loop.call_later(self.deadlines.step_s, step.hang)
        while conn.inbox and self._step is step:  # messages that came unasked since the last step
            step.take(conn.take())

    async def step_settled(self) -> None:
        """Return once no step is in flight: its reply (or failure) has been delivered."""
        step = self._step
        if step is not None:
            step.settled = asyncio.get_running_loop().create_future()
            await step.settled

    def cancel_step(self) -> None:
        """Forget the step in flight, if any: its reply will not be delivered."""
        if self._step is not None:
            self._step.stop()

    def _step_reply(self, message: PageMessage) -> StepReply:
        """A step's reply message as `StepReply`; TabFailure for a batch that does not add up."""
        if self.settings.sims == 1:
            assert message.observation is not None
            return message.observation[None, :], np.array([message.reward]), np.array([message.done]), [message.info], [None]
        assert message.observations is not None and message.dones is not None
        assert message.rewards is not None and message.infos is not None and message.reset_observations is not None
        self._check_count(len(message.observations), "state_batch")
        for done, first in zip(message.dones, message.reset_observations, strict=True):
            if done and first is None:
                raise TabFailure(self.port, "garbage", "state_batch ends an episode without its reset observation")
        return message.observations, message.rewards, message.dones, message.infos, message.reset_observations

    def _check_announced_sims(self) -> None:
        announced = self._hello.sims if self._hello is not None else 1
        if announced != self.settings.sims:
            raise TabFailure(
                self.port,
                "garbage",
                f"the page runs {announced} simulation(s) but {self.settings.sims} were asked for "
                "(URL parameter sims; only the embedded page supports sims > 1)",
            )

    def _check_count(self, count: int, what: str) -> None:
        if count != self.settings.sims:
            raise TabFailure(
                self.port, "garbage", f"{what} holds {count} simulations, expected {self.settings.sims}"
            )

    async def _send(self, conn: PageConnection, *texts: str) -> None:
        try:
            for text in texts:
                await conn.send(text)
        except ConnectionClosed as exc:
            raise self._closed(conn, exc) from None

    def _hang(self, deadline_s: float) -> TabFailure:
        return TabFailure(self.port, "hang", f"no reply within {deadline_s:g} s")

    def _closed(self, conn: PageConnection, exc: BaseException) -> TabFailure:
        """The failure of a closed socket; a restart_request still unread explains the close."""
        self._drain(conn)
        return TabFailure(self.port, self._drop_cause(), f"socket closed ({exc})")

    def _drain(self, conn: PageConnection) -> None:
        """Read what a closed connection still holds, noting a restart_request among it."""
        while conn.inbox:
            with contextlib.suppress(ProtocolError, ValueError, TypeError, OverflowError, RecursionError):
                if parse_page_message(conn.take()).type == "restart_request":
                    self._note_restart_request()

    def _note_restart_request(self) -> None:
        # The original app's watchdog: it will drop and re-open its socket by itself.
        self._restart_requested_at = time.monotonic()
        self._on_event("restart_request", {"port": self.port})

    def _drop_cause(self, otherwise: str = "disconnected") -> str:
        """"watchdog" when the page asked for a restart just before, else `otherwise`."""
        recent = time.monotonic() - self._restart_requested_at < WATCHDOG_WINDOW_S
        return "watchdog" if recent else otherwise

    # ---- internals ---------------------------------------------------------------------
    async def next_page(self) -> None:
        """Wait for another page than the current one (the pool is swapping it for a recycle)."""
        old = self._conn
        end = time.monotonic() + self.deadlines.connect_s
        while self._conn is old:
            self._new_conn.clear()
            try:
                await asyncio.wait_for(self._new_conn.wait(), max(end - time.monotonic(), 0.0))
            except TimeoutError:
                raise TabLost(
                    f"no new page connected to port {self.port} within {self.deadlines.connect_s:.0f} s "
                    "after its tab was recycled"
                ) from None

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

    def _settings_messages(self) -> list[str]:
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
                messages.append(self._stage_message())
            if self._pending_seed is not None:
                messages.append(encode("set_seed", seed=self._pending_seed))
        return messages

    async def _receive(
        self,
        conn: PageConnection,
        wanted: Set[str],
        deadline_s: float,
        parse: Callable[[Message], PageMessage] = parse_page_message,
    ) -> PageMessage:
        """Next message of a wanted type; protocol chatter in between is handled on the way."""
        end = conn.loop.time() + deadline_s
        while True:
            try:
                frame = await conn.next_message(end)
            except TimeoutError:
                raise self._hang(deadline_s) from None
            except ConnectionClosed as exc:
                raise self._closed(conn, exc) from None
            message = self._read(frame, wanted, parse)
            if message is not None:
                return message

    def _read(self, frame: Message, wanted: Set[str], parse: Callable[[Message], PageMessage]) -> PageMessage | None:
        """The message in `frame` if its type is wanted; None for chatter, which is handled here
        (a hello kept, a restart_request noted, stale replies dropped); TabFailure for garbage
        or a page that reset its episode by itself."""
        try:
            message = parse(frame)
        except ProtocolError as exc:
            raise TabFailure(self.port, "garbage", str(exc)) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # e.g. an integer beyond float range, which math.isfinite refuses with OverflowError
            raise TabFailure(self.port, "garbage", f"unreadable message: {type(exc).__name__}: {exc}") from None
        if message.type in wanted:
            return message
        if message.type == "lunarfleet_hello":
            self._hello = message
        elif message.type == "restart_request":
            self._note_restart_request()
        elif (message.type == "reset_complete" and "state" in wanted) or (
            message.type == "reset_batch" and "state_batch" in wanted
        ):
            # A page that reset on its own mid-episode (e.g. after its watchdog): the
            # episode we were stepping is gone.
            raise TabFailure(self.port, self._drop_cause("page_reset"), "the page reset its episode by itself")
        return None  # stale replies of other kinds are dropped


class _Step:
    """One step in flight on a link: its reply is read in `data_received` (PageConnection)."""

    def __init__(self, link: TabLink, on_reply: Callable[[StepReply | TabFailure], None], wanted: Set[str],
                 parse: Callable[[Message], PageMessage]) -> None:
        self.link, self.on_reply, self.wanted, self.parse = link, on_reply, wanted, parse
        self.conn: PageConnection | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.settled: asyncio.Future[None] | None = None  # someone waits for the step to end

    def take(self, frame: Message) -> None:
        link = self.link
        try:
            message = link._read(frame, self.wanted, self.parse)
            if message is None:
                return
            reply: StepReply | TabFailure = link._step_reply(message)
        except TabFailure as failure:
            reply = failure
        self.end(reply)

    def hang(self) -> None:
        self.end(self.link._hang(self.link.deadlines.step_s))

    def lost(self) -> None:
        assert self.conn is not None
        self.end(self.link._closed(self.conn, self.conn.close_exc))

    def end(self, reply: StepReply | TabFailure) -> None:
        self.stop()
        if isinstance(reply, TabFailure) and self.conn is not None:
            self.link._drop(self.conn)
        self.on_reply(reply)

    def stop(self) -> None:
        if self.link._step is self:
            self.link._step = None
        if self.timer is not None:
            self.timer.cancel()
        if self.conn is not None and self.conn.on_message == self.take:
            self.conn.on_message = self.conn.on_lost = None
        if self.settled is not None and not self.settled.done():
            self.settled.set_result(None)


async def _close_quietly(conn: PageConnection) -> None:
    # Never wait long on a hung page: close() gives up after close_timeout and aborts.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(1011, "LunarFleet: tab failed"), 2.0)
