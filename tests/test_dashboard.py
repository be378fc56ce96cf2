"""The dashboard server without a browser: its token, Origin and run-folder checks, and what its push
channel sends from a run folder (orchestrator/dashboard.py, orchestrator/dashboard_feed.py)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import dashboard_port
from orchestrator.cli_parser import apply_config_file, build_parser
from orchestrator.config import DASHBOARD_PORT
from orchestrator.dashboard import Dashboard
from orchestrator.dashboard_command import serve_run_folder
from orchestrator.ports import free_block
from orchestrator.status_file import write_status


def _run_folder(root: Path) -> Path:
    run_dir = root / "runs" / "20260101-000000-smoke"
    (run_dir / "thumbnails").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"stage": 2}))
    write_status(run_dir / "status.json", {
        "run_id": run_dir.name, "state": "running", "updated": time.time(), "timesteps": 100, "target_timesteps": 400,
        "tabs": [{"tab": 1, "port": 9000, "state": "stepping", "restarts": 0}],
    })
    events = [
        {"time": 1.0, "event": "tab_failed", "tab": 0, "port": 9000, "cause": "crash", "detail": ""},
        {"time": 2.0, "event": "progress", "steps": 100, "fps": 50.0, "mean_reward": -3.5},
        {"time": 3.0, "event": "env_saw_failure", "tab": 0, "port": 9000, "cause": "crash"},  # no words: not shown
    ]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / "thumbnails" / "tab-1.jpg").write_bytes(b"\xff\xd8 a picture")
    (root / "secret.txt").write_text("outside the run folder")
    return run_dir


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Dashboard, Path]]:
    run_dir = _run_folder(tmp_path)
    dashboard = Dashboard(run_dir, free_block(20900, 1), token="the-token", live=False)
    try:
        yield dashboard, run_dir
    finally:
        dashboard.close()


def _get(dashboard: Dashboard, path: str, headers: dict[str, str] | None = None, method: str = "GET",
         body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read() if response.status != 200 or "stream" not in path else b""
    finally:
        connection.close()


def _stream(dashboard: Dashboard, wanted: int, headers: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """The first `wanted` messages of the push channel."""
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    connection.request("GET", "/stream?token=the-token", headers=headers or {})
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    messages: list[tuple[str, dict]] = []
    kind = None
    try:
        while len(messages) < wanted:
            line = response.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                messages.append((kind, json.loads(line[len("data: "):])))
    finally:
        connection.close()
    return messages


@pytest.mark.parametrize("path", ["/", "/stream", "/page/dashboard.js", "/files/status.json"])
def test_without_the_token_nothing_is_served(served, path: str) -> None:
    dashboard, _ = served
    status, body = _get(dashboard, path)
    assert status == 401 and b"token" in body
    status, _ = _get(dashboard, path + "?token=not-the-token")
    assert status == 403
    status, _ = _get(dashboard, path, {"Cookie": f"lunarfleet_dashboard_{dashboard.port}=not-the-token"})
    assert status == 403


def test_the_token_opens_the_page_and_leaves_a_cookie_for_its_other_requests(served) -> None:
    dashboard, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    connection.request("GET", "/?token=the-token")
    response = connection.getresponse()
    assert response.status == 200 and b"LunarFleet dashboard" in response.read()
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"lunarfleet_dashboard_{dashboard.port}=the-token;") and "HttpOnly" in cookie
    connection.close()
    status, body = _get(dashboard, "/page/dashboard.js", {"Cookie": cookie.split(";")[0]})
    assert status == 200 and b"EventSource" in body


def test_the_push_channel_refuses_a_page_of_another_origin(served) -> None:
    dashboard, _ = served
    status, body = _get(dashboard, "/stream?token=the-token", {"Origin": "http://evil.example"})
    assert status == 403 and b"Origin" in body
    status, _ = _get(dashboard, "/focus?token=the-token", {"Origin": "http://evil.example"}, "POST", b'{"tab": 1}')
    assert status == 403
    own = f"http://127.0.0.1:{dashboard.port}"
    assert _stream(dashboard, 1, {"Origin": own})[0][0] == "hello"


@pytest.mark.parametrize("path", ["/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/thumbnails/../../secret.txt",
                                  "/files//etc/passwd", "/files/%2Fetc%2Fpasswd"])
def test_no_file_outside_the_run_folder_is_served(served, path: str) -> None:
    dashboard, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    connection.putrequest("GET", path + "?token=the-token", skip_host=False)  # sent as written, not normalised
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status == 403, (path, response.status, body)
    assert b"outside the run folder" not in body and b"root:" not in body


def test_a_link_out_of_the_run_folder_is_refused(served, tmp_path: Path) -> None:
    dashboard, run_dir = served
    (run_dir / "escape.txt").symlink_to(tmp_path / "secret.txt")
    assert _get(dashboard, "/files/escape.txt?token=the-token")[0] == 403
    status, body = _get(dashboard, "/files/thumbnails/tab-1.jpg?token=the-token")
    assert status == 200 and body == b"\xff\xd8 a picture"


def test_a_page_that_connects_gets_the_run_then_what_changes(served) -> None:
    dashboard, run_dir = served
    received: list[tuple[str, dict]] = []
    reader = threading.Thread(target=lambda: received.extend(_stream(dashboard, 3)))
    reader.start()
    time.sleep(1)
    with open(run_dir / "events.jsonl", "a") as handle:
        handle.write(json.dumps({"time": 4.0, "event": "checkpoint", "path": "m.zip", "steps": 200}) + "\n")
    (run_dir / "thumbnails" / "tab-1.jpg").write_bytes(b"\xff\xd8 a later picture")
    reader.join(15)
    (kind, hello), *changes = received
    assert kind == "hello" and hello["status"]["timesteps"] == 100 and hello["stage"] == 2 and not hello["live"]
    assert [e["text"] for e in hello["events"]] == ["[Pool] ✗ tab 1 (port 9000) failed: crash"]
    assert hello["events"][0]["tab"] == 1
    assert hello["curve"] == [{"time": 2.0, "steps": 100, "fps": 50.0, "reward": -3.5}]
    assert set(hello["thumbs"]) == {"1"}
    by_kind = dict(changes)
    assert by_kind["events"][0]["text"] == "[Train] Saved checkpoint m.zip (200 steps)"
    assert by_kind["thumbs"]["1"] != hello["thumbs"]["1"]


def test_a_run_that_closes_its_dashboard_tells_the_page_it_ended(tmp_path: Path) -> None:
    run_dir = _run_folder(tmp_path)
    dashboard = Dashboard(run_dir, free_block(20900, 1), token="the-token", live=True)
    received: list[tuple[str, dict]] = []
    reader = threading.Thread(target=lambda: received.extend(_stream(dashboard, 3)))
    reader.start()
    time.sleep(1)
    status = json.loads((run_dir / "status.json").read_text())
    write_status(run_dir / "status.json", {**status, "state": "completed", "timesteps": 400})
    dashboard.close()  # the run's final status.json was written just before
    reader.join(15)
    assert [kind for kind, _ in received] == ["hello", "status", "end"]
    assert received[1][1]["state"] == "completed" and received[1][1]["timesteps"] == 400
    assert received[2][1] == {"final": True, "pictures": {"1": "data:image/jpeg;base64,/9ggYSBwaWN0dXJl"}}


def test_lunarfleet_dashboard_serves_the_newest_run_folder_until_stopped(tmp_path: Path) -> None:
    _run_folder(tmp_path)
    said: list[str] = []
    stop = threading.Event()
    port = free_block(20900, 1)
    server = threading.Thread(target=serve_run_folder, args=(None, tmp_path / "runs", port, "127.0.0.1", said.append, stop))
    server.start()
    try:
        deadline = time.monotonic() + 10
        while not any("token=" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = next(line for line in said if "token=" in line).split("[Dashboard] ", 1)[1]
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/?" + url.split("?", 1)[1])
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        stop.set()
        server.join(10)
    assert not server.is_alive()
    assert serve_run_folder(None, tmp_path / "nothing", port, "127.0.0.1", said.append) == 1
    assert "no runs under" in said[-1]


def test_the_config_file_turns_the_dashboard_on(tmp_path: Path) -> None:
    parser = build_parser()
    for text, port in (("dashboard = true", DASHBOARD_PORT), ("dashboard = 20123", 20123), ("dashboard = false", None)):
        (tmp_path / "run.toml").write_text(text + "\n")
        argv = ["smoke", "--config", str(tmp_path / "run.toml")]
        parser = build_parser()
        apply_config_file(parser, argv)
        assert dashboard_port(parser.parse_args(argv).dashboard) == port
    assert dashboard_port(parser.parse_args(["smoke", "--dashboard"]).dashboard) == DASHBOARD_PORT
    assert parser.parse_args(["smoke"]).dashboard_host == "127.0.0.1"
