"""Serving the embedded simulation page (`webapp/`) on localhost, plain static files."""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import threading
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from orchestrator.ports import free_block


def _webapp_dir() -> Path:
    """The embedded simulation page: inside the `lunarfleet` package in an installed wheel
    (pyproject.toml puts it there), else webapp/ beside the packages in a checkout."""
    packages = Path(__file__).resolve().parent.parent
    installed, checkout = packages / "lunarfleet" / "webapp", packages / "webapp"
    return installed if (installed / "index.html").exists() else checkout


WEBAPP_DIR = _webapp_dir()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class AppServer:
    """The page on 127.0.0.1 and ::1 at one port (Chromium may resolve `localhost` to either)."""

    def __init__(self, port: int, directory: Path = WEBAPP_DIR) -> None:
        if not (directory / "index.html").exists():
            raise FileNotFoundError(f"the embedded simulation is missing: no {directory / 'index.html'}")
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.port = port
        self._servers: list[ThreadingHTTPServer] = [_Server(("127.0.0.1", port), handler)]
        with contextlib.suppress(OSError):
            self._servers.append(_Server6(("::1", port), handler))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True, name="app-server") for s in self._servers]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def start_app_server(preferred: int, say: Callable[[str], None] = print) -> AppServer:
    """Serve on the preferred port, or on a free one (said clearly) when it is taken."""
    try:
        return AppServer(preferred)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
    server = AppServer(free_block(preferred + 100, 1))
    say(
        f"[Setup] ! Port {preferred} is taken by another program, so the embedded simulation is served on "
        f"http://localhost:{server.port}/ instead. (If that program is your own rover app, pass --url to train on it.)"
    )
    return server
