"""The dashboard: one web page of a run, live (`train|smoke|tabs --dashboard`) or from its folder
(`lunarfleet dashboard RUN_DIR`).

The server is the standard library's threading HTTP server. The page (orchestrator/dashboard_page/)
gets what it shows over one push channel, server-sent events at /stream: everything at once when it
(re)connects, then what changed, as `RunFolderFeed` (orchestrator/dashboard_feed.py) reads it from
the run folder every POLL_S. Pictures of the tabs are files of the run folder (thumbnails/, written
by orchestrator/thumbnails.py), fetched by the page when their version changes.

Security, as for the env WebSocket ports: on 127.0.0.1 unless `--dashboard-host` says otherwise;
every request needs the token (`?token=`, printed at start like Jupyter's, or the cookie the page
is given with it): none is 401, a wrong one 403; the push channel and POSTs refuse a foreign Origin
(403); /files/ serves files of the run folder only.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import json
import mimetypes
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.config import DASHBOARD_HOST, DASHBOARD_PORT
from orchestrator.dashboard_feed import RunFolderFeed
from orchestrator.ports import free_block

if TYPE_CHECKING:
    from orchestrator.thumbnails import Thumbnailer

TOKEN_ENV = "LUNARFLEET_DASHBOARD_TOKEN"  # a supervised train run's attempts keep one token (and URL)
POLL_S = 0.5
KEEPALIVE_S = 15.0
LINGER_S = 0.5
CLIENT_BACKLOG = 200  # messages a slow page may fall behind before it is dropped (it reconnects)
PAGE_DIR = Path(__file__).resolve().parent / "dashboard_page"
PAGE_FILES = {"dashboard.js", "dashboard.css", "chart.js"}


def dashboard_token() -> str:
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(16)


class _Hub:
    """The pages connected to /stream: each has a queue of encoded messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[queue.Queue[bytes | None]] = []
        self.closed = False

    def join(self, first: bytes) -> queue.Queue[bytes | None]:
        q: queue.Queue[bytes | None] = queue.Queue(maxsize=CLIENT_BACKLOG)
        q.put(first)
        with self._lock:
            self._clients.append(q)
        return q

    def leave(self, q: queue.Queue[bytes | None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._clients.remove(q)

    def send(self, message: bytes | None) -> None:
        with self._lock:
            for q in list(self._clients):
                try:
                    q.put_nowait(message)
                except queue.Full:  # a page that stopped reading: dropped; it reconnects and gets everything
                    self._clients.remove(q)
                    with contextlib.suppress(queue.Full):
                        q.put_nowait(None)

    @property
    def viewers(self) -> int:
        with self._lock:
            return len(self._clients)


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


class Dashboard:
    """Serves the page of the run in `run_dir` until `close()`; with a `thumbnailer`, a tab can be enlarged live."""

    def __init__(
        self,
        run_dir: Path,
        port: int = DASHBOARD_PORT,
        host: str = DASHBOARD_HOST,
        token: str | None = None,
        thumbnailer: Thumbnailer | None = None,
        live: bool = True,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.token = token or dashboard_token()
        self.thumbnailer = thumbnailer
        self.live = live  # served by the run itself: it says "end" when it closes
        self.feed = RunFolderFeed(self.run_dir)
        self.hub = _Hub()
        self._feed_lock = threading.Lock()
        self._cpu_lock = threading.Lock()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self.feed.poll()  # what the folder holds already: the first page to connect gets it all at once
        self.host = host
        self._server = _Server((host, port), _handler(self))
        self.port = int(self._server.server_address[1])
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name="dashboard-server"),
            threading.Thread(target=self._watch, daemon=True, name="dashboard-feed"),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        shown = self.host
        if shown in ("0.0.0.0", "::", ""):
            shown = socket.gethostname()
        elif ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/?token={self.token}"

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.refresh()

    def refresh(self) -> None:
        """Read what changed in the run folder and push it to every page."""
        began = time.thread_time()
        with self._feed_lock:
            for kind, data in self.feed.poll():
                self.hub.send(_event(kind, data))
        self.note_cpu(time.thread_time() - began)

    def note_cpu(self, seconds: float) -> None:
        """The server's own CPU time (reading the folder, answering requests), for `lunarfleet bench`."""
        with self._cpu_lock:
            self.cpu_s += seconds

    def hello(self) -> bytes:
        with self._feed_lock:
            hello = {**self.feed.hello(), "live": self.live, "can_enlarge": self.thumbnailer is not None}
            return _event("hello", hello)

    def close(self) -> None:
        """The last of the run folder to every page, then "end" with the tabs' last pictures inline (a
        page fetches nothing more: the server is going), and stop. The page keeps showing it all."""
        if self.thumbnailer is not None:
            self.thumbnailer.stop()
        self._stop.set()
        with self._feed_lock:
            for kind, data in self.feed.poll():
                if kind != "thumbs":
                    self.hub.send(_event(kind, data))
        if self.live:
            self.hub.send(_event("end", {"final": self.feed.final, "pictures": self.feed.pictures()}))
        self.hub.send(None)
        self.hub.closed = True
        if self.hub.viewers:
            time.sleep(LINGER_S)  # pictures a page asked for just before are still served
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def _handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "lunarfleet-dashboard"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

        def handle(self) -> None:
            began = time.thread_time()  # a request's thread: its CPU is the request's (waiting costs none)
            try:
                super().handle()
            finally:
                dashboard.note_cpu(time.thread_time() - began)

        # ---- checks ------------------------------------------------------------------------
        def _cookie_name(self) -> str:
            return f"lunarfleet_dashboard_{dashboard.port}"

        def _given_token(self) -> str | None:
            query = parse_qs(urlsplit(self.path).query)
            if "token" in query:
                return query["token"][0]
            for part in (self.headers.get("Cookie") or "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == self._cookie_name():
                    return value
            return None

        def _allowed(self, check_origin: bool = False) -> bool:
            """The token (401 without, 403 wrong) and, for the push channel and POSTs, the Origin."""
            given = self._given_token()
            if given is None:
                self._refuse(HTTPStatus.UNAUTHORIZED, "This dashboard needs its token: open the URL the run printed "
                             "(…/?token=…), or run 'lunarfleet dashboard RUN_DIR' to get a new one.")
                return False
            if not hmac.compare_digest(given.encode(), dashboard.token.encode()):
                self._refuse(HTTPStatus.FORBIDDEN, "Wrong token: open the URL the run printed.")
                return False
            origin = self.headers.get("Origin")
            if check_origin and origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
                self._refuse(HTTPStatus.FORBIDDEN, f"Origin {origin} may not use this dashboard.")
                return False
            return True

        def _refuse(self, status: HTTPStatus, why: str) -> None:
            body = why.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        # ---- routes ------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            path = unquote(urlsplit(self.path).path)
            if path == "/stream":
                if self._allowed(check_origin=True):
                    self._stream()
                return
            if not self._allowed():
                return
            if path in ("/", "/index.html"):
                cookie = f"{self._cookie_name()}={dashboard.token}; HttpOnly; SameSite=Strict; Path=/"
                self._send((PAGE_DIR / "index.html").read_bytes(), "text/html; charset=utf-8", {"Set-Cookie": cookie})
            elif path.startswith("/page/") and path[len("/page/"):] in PAGE_FILES:
                name = path[len("/page/"):]
                kind = "text/javascript" if name.endswith(".js") else "text/css"
                self._send((PAGE_DIR / name).read_bytes(), f"{kind}; charset=utf-8")
            elif path.startswith("/files/"):
                self._run_file(path[len("/files/"):])
            else:
                self._refuse(HTTPStatus.NOT_FOUND, f"no {path} here")

        def do_POST(self) -> None:  # noqa: N802 - the base class's name
            path = urlsplit(self.path).path
            if not self._allowed(check_origin=True):
                return
            if path != "/focus":
                self._refuse(HTTPStatus.NOT_FOUND, f"no {path} here")
                return
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 1000)
                tab = json.loads(self.rfile.read(length) or b"{}").get("tab")
            except (ValueError, AttributeError):
                self._refuse(HTTPStatus.BAD_REQUEST, 'expected {"tab": N} or {"tab": null}')
                return
            if dashboard.thumbnailer is None:
                self._refuse(HTTPStatus.CONFLICT, "this dashboard serves a run folder: no live view of a tab")
                return
            dashboard.thumbnailer.focus(int(tab) - 1 if isinstance(tab, int) else None)
            self._send(b"{}", "application/json")

        def _run_file(self, relative: str) -> None:
            """A file of the run folder; nothing outside it (no .., no links out)."""
            target = (dashboard.run_dir / relative).resolve()
            if not target.is_relative_to(dashboard.run_dir) or relative.startswith("/"):
                self._refuse(HTTPStatus.FORBIDDEN, "only files inside the run folder are served")
                return
            if not target.is_file():
                self._refuse(HTTPStatus.NOT_FOUND, f"no {relative} in the run folder")
                return
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(target.read_bytes(), kind)

        def _stream(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            q = dashboard.hub.join(dashboard.hello())
            try:
                while True:
                    try:
                        message = q.get(timeout=KEEPALIVE_S)
                    except queue.Empty:
                        message = b": keep-alive\n\n"
                    if message is None:
                        return
                    self.wfile.write(message)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                return
            finally:
                dashboard.hub.leave(q)

    return Handler


def start_dashboard(
    run_dir: Path,
    preferred_port: int,
    host: str,
    say: Callable[[str], None],
    thumbnailer: Thumbnailer | None = None,
    live: bool = True,
) -> Dashboard:
    """The dashboard on `preferred_port`, or a free one (said) when that is taken; its URL said."""
    try:
        dashboard = Dashboard(run_dir, preferred_port, host, thumbnailer=thumbnailer, live=live)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        dashboard = Dashboard(run_dir, free_block(preferred_port + 1, 1), host, thumbnailer=thumbnailer, live=live)
        say(f"[Dashboard] ! Port {preferred_port} is taken; using {dashboard.port}")
    say(f"[Dashboard] {dashboard.url}")
    if host not in ("127.0.0.1", "::1", "localhost"):
        say(f"[Dashboard] ! listening on {host}: anyone who can reach this machine and has the URL's token can watch the run")
    return dashboard
