"""The health channel, sending side: env workers tell the orchestrator about their tabs.

Fire-and-forget JSON datagrams on loopback, so a worker in any process can report without
blocking a step and without knowing anything of Playwright. The orchestrator listens and
asks the pool to replace a tab. One datagram per event:
`{"token": ..., "port": 8765, "event": "failed"|"connected"|"waiting"|"steps"|..., ...}`.

The orchestrator answers on the same socket with one request: `{"event": "recycle", "port": P}`,
replace that tab at its next episode boundary. The env then reports `recycle_ready` instead of
resetting the old page, and waits for the new one: no step is lost.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any


class HealthReporter:
    def __init__(self, health_port: int | None, token: str = "") -> None:
        self._address = ("127.0.0.1", health_port) if health_port else None
        self._token = token
        self._sock: socket.socket | None = None
        self._open()

    def _open(self) -> None:
        # At once, not at the first report: the vec env reports from two threads, and the fleet
        # sends recycle requests to the one address it hears from.
        if self._address is not None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if self._sock is None:
            return
        payload = {"token": self._token, "event": event, "time": time.time(), **fields}
        with contextlib.suppress(OSError):  # nobody listening (a bare env in a test): health is advisory
            self._sock.sendto(json.dumps(payload).encode(), self._address)

    def recycle_requests(self) -> set[int]:
        """Ports the orchestrator asked to recycle since the last call (never blocks)."""
        ports: set[int] = set()
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except OSError:  # nothing more (BlockingIOError) or no socket to read
                break
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(data)
                if message.get("token") == self._token and message.get("event") == "recycle":
                    ports.add(int(message["port"]))
        return ports

    def close(self) -> None:
        """No more reports (an env that outlives its run in a long process must not keep a socket)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"_address": self._address, "_token": self._token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._address, self._token = state["_address"], state["_token"]
        self._open()
