"""A fake rover page for tests: a real WebSocket client of one LunarFleet port, no browser.

It speaks the page side of docs/wire-protocol.md: `reset_complete` as it connects (after an
optional `lunarfleet_hello`), one `state` per `action`, `reset_complete` per `reset_request`,
and it honours `set_seed` (the next reset starts episode 0 of that seed) and `set_config`
(max_episode_steps, used as the episode length unless `done_after` is given). Everything it
sends is a pure function of (seed, episode, step, action), see `observation`, so tests can
predict it. Switches make it misbehave: hang, send a raw frame, close the socket, send a
restart_request, or flood the port.

Use it in an asyncio test with `await page.run()` (usually as a task), or from synchronous
code (a `TabEnv` runs its own loop on a thread) with `PageThread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

OBS_SIZE = 30
RESERVED_PORTS = set(range(8765, 8801)) | {4200}


def free_port() -> int:
    """A port free on both loopback addresses (a TabLink binds 127.0.0.1 and ::1)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            if port in RESERVED_PORTS:
                continue
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def observation(seed: int, episode: int, step: int, action: list[float] | None = None) -> list[float]:
    """The fake simulation: 27 values from (seed, episode, step), then the action last applied."""
    base = [round(math.sin(0.7 * i + 0.31 * seed + 1.37 * episode + 0.113 * step), 6) for i in range(OBS_SIZE - 3)]
    a = list(action) if action is not None else [0.0, 0.0, 0.0]
    tail = [min(max(float(a[0]), -1.0), 1.0), min(max(float(a[1]), -1.0), 1.0), min(max(float(a[2]), 0.0), 1.0)]
    return base + tail


def reward(seed: int, episode: int, step: int) -> float:
    return round(0.5 * math.sin(0.31 * seed + 1.37 * episode + 0.113 * step), 6)


@dataclass
class FakePage:
    port: int
    seed: int = 0
    hello: bool = False
    hello_fields: dict[str, Any] = field(default_factory=dict)  # e.g. {"observation_size": 29}
    done_after: int | None = None  # episode length; None: the max_episode_steps of set_config
    collision_at: int | None = None  # done with collision_occurred True at this step
    # misbehaviour, counted in actions answered over the connection (window.lunarfleet.steps)
    hang_after: int | None = None  # answer this many actions, then nothing at all
    raw_after: int | None = None  # answer this many actions, then send raw_frame instead of a state
    raw_frame: str | bytes = "{not json"
    raw_as_text: bool = False  # send a bytes raw_frame in a text frame, unchecked
    close_after: int | None = None  # answer this many actions, then close the socket
    restart_after: int | None = None  # answer this many, then send a restart_request before the next state
    slow_at: int | None = None  # answer this many actions, then wait slow_s before answering the next
    slow_s: float = 1.0
    fragments: int = 1  # send each message in this many frames (browsers may split a long one)
    # how to connect
    token: str | None = None
    origin: str | None = None
    host: str = "localhost"
    open_timeout: float = 5.0

    def __post_init__(self) -> None:
        self.episode = 0
        self.step_no = 0
        self.total_reward = 0.0
        self.steps_answered = 0
        self.max_episode_steps = 10_000
        self.pending_seed: int | None = None
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.hanging = False
        self.ws: ClientConnection | None = None
        self.connected = threading.Event()
        self.finished = threading.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._last_action: list[float] | None = None

    # ---- connecting -------------------------------------------------------------------
    @property
    def uri(self) -> str:
        query = f"?token={self.token}" if self.token is not None else ""
        return f"ws://{self.host}:{self.port}/{query}"

    def connect(self) -> connect:
        return connect(
            self.uri,
            origin=self.origin,  # type: ignore[arg-type]
            open_timeout=self.open_timeout,
            proxy=None,
            compression=None,
            ping_interval=None,
            close_timeout=1.0,
            max_size=None,
        )

    async def run(self) -> None:
        """Connect and play the page until the socket closes (connect errors propagate)."""
        try:
            async with self.connect() as ws:
                self.ws = ws
                self.connected.set()
                try:
                    await self._greet()
                    async for frame in ws:
                        await self._on_frame(frame)
                except ConnectionClosed:
                    pass
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.wait_closed(), 2.0)
                self.close_code, self.close_reason = ws.close_code, ws.close_reason
        finally:
            self.finished.set()

    async def wait_connected(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not self.connected.is_set():
            if self.finished.is_set() or time.monotonic() > end:
                raise TimeoutError(f"fake page on port {self.port} did not connect")
            await asyncio.sleep(0.01)

    async def wait_finished(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not self.finished.is_set():
            if time.monotonic() > end:
                raise TimeoutError(f"fake page on port {self.port} still connected")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    # ---- the simulation ---------------------------------------------------------------
    def _start_episode(self) -> None:
        if self.pending_seed is not None:
            self.seed, self.episode, self.pending_seed = self.pending_seed, 0, None
        else:
            self.episode += 1
        self.step_no = 0
        self.total_reward = 0.0
        self._last_action = None

    def _info(self, collided: bool = False) -> dict[str, Any]:
        return {
            "episode_length": self.step_no,
            "orbs_collected": 0,
            "orbs_deposited_construction": 0,
            "orbs_deposited_berm": 0,
            "collision_occurred": collided,
            "zone": "excavation",
            "total_reward": round(self.total_reward, 6),
        }

    def _reset_message(self) -> dict[str, Any]:
        return {
            "type": "reset_complete",
            "observation": observation(self.seed, self.episode, 0),
            "reward": 0,
            "done": False,
            "info": self._info(),
        }

    def _state_message(self, action: list[float]) -> dict[str, Any]:
        self.step_no += 1
        r = reward(self.seed, self.episode, self.step_no)
        self.total_reward += r
        length = self.done_after if self.done_after is not None else self.max_episode_steps
        collided = self.collision_at is not None and self.step_no >= self.collision_at
        done = collided or self.step_no >= length
        return {
            "type": "state",
            "observation": observation(self.seed, self.episode, self.step_no, action),
            "reward": r,
            "done": done,
            "info": self._info(collided),
        }

    async def send_json(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self.sent.append(message)
        text = json.dumps(message)
        if self.fragments == 1:
            await self.ws.send(text)
        else:
            size = -(-len(text) // self.fragments)
            await self.ws.send([text[i : i + size] for i in range(0, len(text), size)])

    async def _greet(self) -> None:
        if self.hello:
            hello = {
                "type": "lunarfleet_hello",
                "protocol": 1,
                "lockstep": True,
                "observation_size": OBS_SIZE,
                "action_size": 3,
                "sims": 1,
                **self.hello_fields,
            }
            await self.send_json(hello)
        await self.send_json(self._reset_message())

    async def _on_frame(self, frame: str | bytes) -> None:
        if self.hanging:
            return
        try:
            message = json.loads(frame)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        self.received.append(message)
        kind = message.get("type")
        if kind == "action":
            await self._on_action(message.get("action") or [0.0, 0.0, 0.0])
        elif kind == "reset_request":
            self._start_episode()
            await self.send_json(self._reset_message())
        elif kind == "set_seed":
            self.pending_seed = int(message["seed"])
        elif kind == "set_config":
            self.max_episode_steps = int(message.get("max_episode_steps", self.max_episode_steps))
        # set_timescale, parallel_training_info, checkpoint_info, set_stage...: ignored

    async def _on_action(self, action: list[float]) -> None:
        answered = self.steps_answered
        if self.hang_after is not None and answered >= self.hang_after:
            self.hanging = True
            return
        if self.close_after is not None and answered >= self.close_after:
            assert self.ws is not None
            await self.ws.close()
            return
        if self.raw_after is not None and answered == self.raw_after:
            assert self.ws is not None
            self.steps_answered += 1
            await self.ws.send(self.raw_frame, text=True if self.raw_as_text else None)
            return
        if self.slow_at is not None and answered == self.slow_at:
            await asyncio.sleep(self.slow_s)
        if self.restart_after is not None and answered == self.restart_after:
            await self.send_json({"type": "restart_request"})
        self.steps_answered += 1
        await self.send_json(self._state_message(action))

    async def flood(self, count: int) -> None:
        """Unsolicited `state` messages, as a broken page in a loop would send."""
        frame = json.dumps(
            {"type": "state", "observation": observation(self.seed, 999, 0), "reward": 0.0, "done": False, "info": {}}
        )
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            for _ in range(count):
                await self.ws.send(frame)


class PageThread:
    """Runs a FakePage on its own event loop thread, for synchronous tests (e.g. against TabEnv)."""

    def __init__(self, page: FakePage) -> None:
        self.page = page
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name=f"fake-page-{page.port}", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.page.run())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
        finally:
            self._loop.close()

    def start(self, wait_connected: float | None = 5.0) -> PageThread:
        self._thread.start()
        if wait_connected is not None:
            end = time.monotonic() + wait_connected
            while not self.page.connected.is_set():
                if self.page.finished.is_set() or time.monotonic() > end:
                    raise RuntimeError(f"fake page did not connect: {self.error!r}")
                time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._task is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread.ident is not None:  # never started: nothing to wait for
            self._thread.join(timeout=5)

    def __enter__(self) -> PageThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
