"""websockets' server connection, keeping the page's messages itself as they arrive.

A step waiting for its reply (`TabLink.start_step_batch`) takes it straight from
`data_received`: no receive future, no task and no timeout context a message. Those were most
of what a round trip cost the trainer's Python (README, "Throughput"). Messages nobody waits
for go to `inbox`, read in order by `next_message`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, CloseCode, Frame, Opcode
from websockets.protocol import State

# Past this many unread messages the page is not read from until some are (as websockets does).
INBOX_HIGH, INBOX_LOW = 64, 16

Message = str | bytes


class PageConnection(ServerConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: deque[Message] = deque()
        self.on_message: Callable[[Message], None] | None = None  # a waiting step: it takes every message
        self.on_lost: Callable[[], None] | None = None  # the same step, told the socket closed
        self._arrived: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        self._reading_paused = False

    def process_event(self, event: Any) -> None:
        if self.request is None or not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)  # the handshake, and control frames
            return
        if event.fin and event.opcode is Opcode.TEXT:
            message = self._text(event.data)
        else:
            if event.opcode is not Opcode.CONT:
                self._fragments, self._fragmented_text = [], event.opcode is Opcode.TEXT
            self._fragments.append(event.data)
            if not event.fin:
                return
            data, self._fragments = b"".join(self._fragments), []
            message = self._text(data) if self._fragmented_text else data
        if message is None:
            return
        if self.on_message is not None:
            self.on_message(message)
            return
        self.inbox.append(message)
        if len(self.inbox) >= INBOX_HIGH and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def take(self) -> Message:
        """The oldest unread message (inbox must not be empty)."""
        message = self.inbox.popleft()
        if self._reading_paused and len(self.inbox) <= INBOX_LOW:
            self._reading_paused = False
            self.transport.resume_reading()
        return message

    async def next_message(self, deadline: float) -> Message:
        """The oldest unread message, waiting until `deadline` (loop time) for one.

        Raises TimeoutError past it, and `ConnectionClosed` once the socket closed and nothing
        is left to read."""
        while not self.inbox:
            if self.protocol.state is State.CLOSED:
                raise self.close_exc
            self._arrived = self.loop.create_future()
            async with asyncio.timeout_at(deadline):
                await self._arrived
        return self.take()

    def send_text_now(self, text: str) -> None:
        """Send one text frame without yielding to the loop; raises ConnectionError when the
        socket is no longer open. (Frames this small never wait for the write buffer.)"""
        if self.protocol.state is not State.OPEN:
            raise ConnectionError("the socket is closed")
        self.protocol.send_text(text.encode())
        self.send_data()

    def _text(self, data: bytes) -> str | None:
        """A text frame's message; one that is not UTF-8 fails the connection (RFC 6455 8.1: a
        browser never sends one), and the step waiting on it gets the closed socket."""
        try:
            return data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            self.send_data()
            return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

