"""TabLink against real sockets: a fake page (websockets client) on a free loopback port.

Every test is a plain function running its own event loop (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from tests.fake_page import FakePage, free_port, observation, reward
from training.protocol import OBS_SIZE
from training.tab_link import LinkDeadlines, PageSettings, PortInUse, TabFailure, TabLink, TabLost

STEP_S = 30.0  # the step deadline: no busy machine's slow fake page is taken for a hang
HANG_S = 2.0  # ... but for the test of a hang
ACTION = np.array([0.5, -0.25, 1.0], dtype=np.float32)


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Events:
    """The link's on_event callback, recording (kind, fields)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.items.append((kind, fields))

    def __contains__(self, item: object) -> bool:
        return item in self.items

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.items]


@contextlib.asynccontextmanager
async def serving(
    step_s: float = STEP_S, connect_s: float = 30.0, settings: PageSettings | None = None, **kwargs: Any
) -> AsyncIterator[TabLink]:
    link = TabLink(
        free_port(),
        settings or PageSettings(),
        LinkDeadlines(step_s=step_s, connect_s=connect_s),
        on_event=Events(),
        **kwargs,
    )
    await link.start()
    try:
        yield link
    finally:
        await link.close()


def events_of(link: TabLink) -> Events:
    return link._on_event  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def page_running(page: FakePage) -> AsyncIterator[FakePage]:
    task = asyncio.create_task(page.run())
    try:
        try:
            await page.wait_connected()
        except TimeoutError:
            if task.done() and task.exception() is not None:
                raise task.exception() from None  # type: ignore[misc]
            raise
        yield page
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def expected_obs(page: FakePage) -> np.ndarray:
    """The observation the page sent last, as the link should return it."""
    return np.asarray(page.sent[-1]["observation"], dtype=np.float32)


async def reset_and_step(link: TabLink, page: FakePage, steps: int = 3) -> None:
    """The link drives this page: reset and a few steps return exactly what the page sent."""
    obs, _ = await link.reset()
    np.testing.assert_array_equal(obs, expected_obs(page))
    for _ in range(steps):
        obs, _, _, _ = await link.step(ACTION)
        np.testing.assert_array_equal(obs, expected_obs(page))


# ---- the normal path ---------------------------------------------------------------------
def test_reset_then_steps_return_the_pages_observations() -> None:
    async def main() -> None:
        settings = PageSettings(env_id=2, env_count=4, timescale=3.0, max_episode_steps=777)
        async with serving(settings=settings) as link, page_running(FakePage(link.port, seed=5)) as page:
            obs, info = await link.reset()
            assert obs.dtype == np.float32 and obs.shape == (OBS_SIZE,)
            # connect = episode 0 (reset_complete sent unasked), our reset_request = episode 1
            np.testing.assert_array_equal(obs, np.asarray(observation(5, 1, 0), dtype=np.float32))
            assert info["episode_length"] == 0
            for step in range(1, 4):
                obs, rew, done, info = await link.step(ACTION)
                assert obs.dtype == np.float32 and obs.shape == (OBS_SIZE,)
                np.testing.assert_allclose(obs, np.asarray(observation(5, 1, step, ACTION.tolist()), dtype=np.float32))
                assert rew == pytest.approx(reward(5, 1, step))
                assert done is False
                assert info["episode_length"] == step and info["zone"] == "excavation"
            kinds = [m["type"] for m in page.received]
            assert kinds[:3] == ["set_timescale", "set_config", "parallel_training_info"]
            assert page.received[0]["timescale"] == 3.0
            assert page.received[1]["max_episode_steps"] == 777
            assert page.received[2] == {"type": "parallel_training_info", "env_count": 4, "env_id": 2}
            assert kinds.count("reset_request") == 1 and kinds.count("action") == 3
            assert "set_seed" not in kinds, "set_seed is an extension: only for pages that said hello"

    run(main())


def test_done_comes_through_and_a_new_episode_follows() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, done_after=2)) as page:
            await link.reset()
            assert (await link.step(ACTION))[2] is False
            obs, _, done, info = await link.step(ACTION)
            assert done is True and info["episode_length"] == 2
            obs, info = await link.reset()
            np.testing.assert_array_equal(obs, expected_obs(page))
            assert info["episode_length"] == 0
            assert (await link.step(ACTION))[2] is False

    run(main())


def test_seed_extension_gives_the_same_first_observation() -> None:
    async def main() -> None:
        async with serving(settings=PageSettings(stage=3)) as link, page_running(FakePage(link.port, hello=True)) as page:
            link.request_seed(42)
            first, _ = await link.reset()
            np.testing.assert_array_equal(first, np.asarray(observation(42, 0, 0), dtype=np.float32))
            await link.step(ACTION)
            link.request_seed(42)
            again, _ = await link.reset()
            np.testing.assert_array_equal(first, again)
            other, _ = await link.reset()  # unseeded: the next episode
            assert not np.array_equal(first, other)
            kinds = [m["type"] for m in page.received]
            assert kinds.count("set_seed") == 2
            assert {"type": "set_stage", "stage": 3} in page.received
            await link.send_stage(2, 4)  # the curriculum's thinner field, to a page that announced itself
            await link.step(ACTION)  # a round trip behind it: the page has read it
            assert {"type": "set_stage", "stage": 2, "obstacles": 4} in page.received

    run(main())


# ---- the page fails ----------------------------------------------------------------------
def test_hanging_page_is_a_hang_after_the_deadline_and_a_new_page_is_accepted() -> None:
    async def main() -> None:
        async with serving(step_s=HANG_S) as link:
            async with page_running(FakePage(link.port, hang_after=2)) as hung:
                await reset_and_step(link, hung, steps=2)
                began = time.monotonic()
                with pytest.raises(TabFailure) as caught:
                    await link.step(ACTION)
                elapsed = time.monotonic() - began
                assert caught.value.cause == "hang"
                assert caught.value.port == link.port
                assert str(link.port) in str(caught.value) and f"within {HANG_S:g} s" in caught.value.detail
                assert HANG_S * 0.9 <= elapsed < HANG_S + 3.0
                await hung.wait_finished(5.0)  # the link closed the hung page's socket
                assert hung.close_code == 1011
            async with page_running(FakePage(link.port, seed=9)) as fresh:
                await reset_and_step(link, fresh)
                assert fresh.close_code is None

    run(main())


GARBAGE = [
    ("{not json", "not valid JSON"),
    (b"\x00\x01binary", "binary"),
    (json.dumps({"type": "state", "observation": [0.0] * 29, "reward": 0, "done": False, "info": {}}), "29 values"),
    ('{"type": "state", "observation": [' + ", ".join(["NaN"] * OBS_SIZE) + "]}", "non-finite"),
    (json.dumps({"type": "state", "observation": ["a"] * OBS_SIZE}), "non-number"),
    (json.dumps({"type": "state", "observation": [0.0] * OBS_SIZE, "done": 1}), "done"),
    (json.dumps({"type": "state", "observation": [0.0] * OBS_SIZE, "info": {"a": {"b": 1}}}), "nested"),
    (json.dumps({"type": "evaluate_me", "code": "import os"}), "unknown message type"),
    (json.dumps([1, 2, 3]), "expected an object"),
    ("[" * 10_000, "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "named"), GARBAGE, ids=[named for _, named in GARBAGE])
def test_garbage_frame_is_a_garbage_failure_naming_what_was_wrong(raw: str | bytes, named: str) -> None:
    async def main() -> None:
        async with serving() as link:
            async with page_running(FakePage(link.port, raw_after=1, raw_frame=raw)) as bad:
                await reset_and_step(link, bad, steps=1)
                with pytest.raises(TabFailure) as caught:
                    await link.step(ACTION)
                assert caught.value.cause == "garbage"
                assert named in caught.value.detail
                assert f"port {link.port}" in str(caught.value)
                await bad.wait_finished(5.0)
            async with page_running(FakePage(link.port)) as good:  # the trainer goes on
                await reset_and_step(link, good, steps=1)

    run(main())


def test_text_frame_that_is_not_utf8_fails_the_connection() -> None:
    async def main() -> None:
        raw = b'{"type": "state", "x": "\xff\xfe"}'
        async with serving() as link, page_running(FakePage(link.port, raw_after=1, raw_frame=raw, raw_as_text=True)) as bad:
            await reset_and_step(link, bad, steps=1)
            with pytest.raises(TabFailure, match="invalid UTF-8") as caught:
                await link.step(ACTION)
            assert caught.value.cause == "disconnected"
            await bad.wait_finished(5.0)
            assert bad.close_code == 1007

    run(main())


def test_messages_split_into_fragments_are_read_whole() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, fragments=3)) as page:
            await reset_and_step(link, page, steps=3)

    run(main())


def obs_frame_with(value_text: str) -> str:
    values = ["0.1"] * OBS_SIZE
    values[5] = value_text
    return '{"type": "state", "observation": [' + ", ".join(values) + '], "reward": 0, "done": false, "info": {}}'


def test_integer_beyond_float_range_is_a_garbage_failure() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, raw_after=0, raw_frame=obs_frame_with("9" * 400))):
            await link.reset()
            with pytest.raises(TabFailure) as caught:
                await link.step(ACTION)
            assert caught.value.cause == "garbage"

    run(main())


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_observation_beyond_float32_range_is_a_garbage_failure() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, raw_after=0, raw_frame=obs_frame_with("1e300"))):
            await link.reset()
            try:
                obs, _, _, _ = await link.step(ACTION)
            except TabFailure as failure:
                assert failure.cause == "garbage"
                return
            assert np.isfinite(obs).all(), f"the trainer got observation {obs[5]}"

    run(main())


def test_oversized_frame_fails_the_tab_naming_the_size() -> None:
    async def main() -> None:
        async with serving() as link:
            big = json.dumps({"type": "state", "observation": [0.0] * OBS_SIZE, "info": {"pad": "x" * 300_000}})
            async with page_running(FakePage(link.port, raw_after=0, raw_frame=big)) as bad:
                await link.reset()
                with pytest.raises(TabFailure) as caught:
                    await link.step(ACTION)
                assert caught.value.cause in {"garbage", "disconnected"}
                assert "too big" in caught.value.detail or "exceeds" in caught.value.detail
                await bad.wait_finished(5.0)
                assert bad.close_code == 1009
            async with page_running(FakePage(link.port)) as good:
                await reset_and_step(link, good, steps=1)

    run(main())


def test_hello_with_the_wrong_observation_size_fails_the_reset() -> None:
    async def main() -> None:
        async with serving() as link:
            async with page_running(FakePage(link.port, hello=True, hello_fields={"observation_size": 29})):
                with pytest.raises(TabFailure) as caught:
                    await link.reset()
                assert caught.value.cause == "garbage" and "observation_size" in caught.value.detail
            async with page_running(FakePage(link.port, hello=True)) as good:
                await reset_and_step(link, good, steps=1)

    run(main())


def test_page_closing_its_socket_is_disconnected() -> None:
    async def main() -> None:
        async with serving() as link:
            async with page_running(FakePage(link.port, close_after=2)) as page:
                await reset_and_step(link, page, steps=2)
                with pytest.raises(TabFailure) as caught:
                    await link.step(ACTION)
                assert caught.value.cause == "disconnected"
            with pytest.raises(TabFailure) as caught:  # nobody there any more
                await link.step(ACTION)
            assert caught.value.cause == "disconnected"
            async with page_running(FakePage(link.port)) as page:
                await reset_and_step(link, page, steps=1)

    run(main())


def test_reset_with_no_page_raises_tab_lost_after_the_connect_deadline() -> None:
    async def main() -> None:
        async with serving(connect_s=0.3) as link:
            began = time.monotonic()
            with pytest.raises(TabLost, match=str(link.port)):
                await link.reset()
            assert time.monotonic() - began < 3.0
            assert "waiting" in events_of(link).kinds()

    run(main())


def test_restart_request_mid_episode_does_not_fail_the_step() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, restart_after=2)) as page:
            await reset_and_step(link, page, steps=2)
            obs, _, done, info = await link.step(ACTION)  # preceded by a restart_request
            np.testing.assert_array_equal(obs, expected_obs(page))
            assert info["episode_length"] == 3 and done is False
            assert "restart_request" in events_of(link).kinds()
            assert any(m["type"] == "restart_request" for m in page.sent)
            await link.step(ACTION)

    run(main())


def test_page_flood_is_survived() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port)) as page:
            await reset_and_step(link, page, steps=1)
            flood = asyncio.create_task(page.flood(1000))
            returned = failures = 0
            for _ in range(50):
                try:
                    obs, rew, done, info = await link.step(ACTION)
                except TabFailure:
                    failures += 1
                    break
                assert obs.shape == (OBS_SIZE,) and np.isfinite(obs).all()
                assert isinstance(done, bool) and np.isfinite(rew)
                returned += 1
            assert returned > 0 or failures == 1
            flood.cancel()
            with contextlib.suppress(BaseException):
                await flood

    run(main())


# ---- who may connect -------------------------------------------------------------------------
def test_second_client_is_refused_and_the_first_keeps_working() -> None:
    async def main() -> None:
        async with serving() as link, page_running(FakePage(link.port, seed=1)) as first:
            await reset_and_step(link, first, steps=2)
            intruder = FakePage(link.port, seed=666)
            await asyncio.wait_for(intruder.run(), 5.0)  # accepted at the HTTP level, then closed
            assert intruder.close_code == 1008
            assert "already" in (intruder.close_reason or "")
            assert ("refused", {"port": link.port, "reason": "a page is already connected"}) in events_of(link)
            for _ in range(3):
                obs, _, _, _ = await link.step(ACTION)
                np.testing.assert_array_equal(obs, expected_obs(first))
            assert first.close_code is None and not first.finished.is_set()

    run(main())


def test_reconnect_after_the_first_page_is_gone_is_accepted() -> None:
    async def main() -> None:
        async with serving() as link:
            async with page_running(FakePage(link.port, seed=1)) as first:
                await reset_and_step(link, first, steps=2)
                await first.close()
                await first.wait_finished()
            # the original app reconnects after its own watchdog fired
            async with page_running(FakePage(link.port, seed=2)) as second:
                obs, _ = await link.reset()
                np.testing.assert_array_equal(obs, np.asarray(observation(2, 1, 0), dtype=np.float32))
                await link.step(ACTION)
                assert second.close_code is None

    run(main())


def test_page_vanishing_without_a_close_handshake_is_disconnected_and_a_new_page_is_accepted() -> None:
    async def main() -> None:
        async with serving() as link:
            async with page_running(FakePage(link.port, seed=1)) as first:
                await reset_and_step(link, first, steps=1)
                assert first.ws is not None
                first.ws.transport.abort()  # a killed renderer: the TCP connection just drops
                await first.wait_finished()
                with pytest.raises(TabFailure) as caught:
                    await link.step(ACTION)
                assert caught.value.cause == "disconnected"
            async with page_running(FakePage(link.port, seed=3)) as second:
                await reset_and_step(link, second, steps=1)

    run(main())


def test_step_after_a_replacement_connected_keeps_the_replacement() -> None:
    async def main() -> None:
        async with serving(connect_s=1.0) as link:
            async with page_running(FakePage(link.port, seed=1)) as first:
                await reset_and_step(link, first, steps=1)
                await first.close()  # e.g. the tab crashed during a PPO update, between two steps
                await first.wait_finished()
            async with page_running(FakePage(link.port, seed=2)) as replacement:
                with pytest.raises(TabFailure):  # the old episode is lost: fine
                    await link.step(ACTION)
                await asyncio.sleep(0.2)
                assert not replacement.finished.is_set(), f"replacement closed with {replacement.close_code}"
                obs, _ = await link.reset()
                np.testing.assert_array_equal(obs, expected_obs(replacement))

    run(main())


TOKEN = "s3cret-run-token"


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"], ids=["no token", "empty", "wrong", "longer"])
def test_client_without_the_right_token_is_refused_with_403(token: str | None) -> None:
    async def main() -> None:
        async with serving(token=TOKEN) as link:
            with pytest.raises(InvalidStatus) as caught:
                await FakePage(link.port, token=token).run()
            assert caught.value.response.status_code == 403
            assert ("refused", {"port": link.port, "reason": "missing or wrong token"}) in events_of(link)
            async with page_running(FakePage(link.port, token=TOKEN)) as good:
                await reset_and_step(link, good)

    run(main())


APP_ORIGIN = "http://localhost:4200"


@pytest.mark.parametrize("origin", ["http://evil.example", None, "http://localhost:4201", "https://localhost:4200"])
def test_foreign_origin_is_refused_and_the_app_origin_works(origin: str | None) -> None:
    async def main() -> None:
        async with serving(origins=[APP_ORIGIN]) as link:
            with pytest.raises(InvalidStatus) as caught:
                await FakePage(link.port, origin=origin).run()
            assert caught.value.response.status_code == 403
            async with page_running(FakePage(link.port, origin=APP_ORIGIN)) as good:
                await reset_and_step(link, good)

    run(main())


def test_token_and_origin_together() -> None:
    async def main() -> None:
        async with serving(origins=[APP_ORIGIN], token=TOKEN) as link:
            with pytest.raises(InvalidStatus):
                await FakePage(link.port, origin="http://evil.example", token=TOKEN).run()
            with pytest.raises(InvalidStatus):
                await FakePage(link.port, origin=APP_ORIGIN).run()
            async with page_running(FakePage(link.port, origin=APP_ORIGIN, token=TOKEN)) as good:
                await reset_and_step(link, good)

    run(main())


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_port_in_use_raises_port_in_use(family: socket.AddressFamily, host: str) -> None:
    port = free_port()
    with socket.socket(family, socket.SOCK_STREAM) as blocker:
        blocker.bind((host, port))
        blocker.listen()

        async def main() -> None:
            link = TabLink(port, PageSettings(), LinkDeadlines(step_s=STEP_S))
            with pytest.raises(PortInUse) as caught:
                await link.start()
            assert isinstance(caught.value, OSError)
            assert caught.value.errno == errno.EADDRINUSE
            assert str(port) in str(caught.value)
            await link.close()

        run(main())


def test_second_link_on_the_same_port_raises_port_in_use() -> None:
    async def main() -> None:
        async with serving() as link:
            with pytest.raises(PortInUse):
                await TabLink(link.port, PageSettings()).start()
            async with page_running(FakePage(link.port)) as page:  # the first one is unharmed
                await reset_and_step(link, page)

    run(main())


def test_link_listens_on_loopback_only() -> None:
    async def main() -> None:
        async with serving() as link:
            assert link._server is not None
            hosts = {sock.getsockname()[0] for sock in link._server.sockets}
            assert hosts == {"127.0.0.1", "::1"}
            async with page_running(FakePage(link.port, host="127.0.0.1")) as page:
                await reset_and_step(link, page, steps=1)
            async with page_running(FakePage(link.port, host="[::1]")) as page:
                await reset_and_step(link, page, steps=1)

    run(main())


def test_slowloris_client_does_not_block_the_real_page() -> None:
    async def main() -> None:
        async with serving() as link:
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
            request = f"GET / HTTP/1.1\r\nHost: localhost:{link.port}\r\nUpgrade: websocket\r\n".encode()

            async def dribble() -> None:
                for byte in request:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.2)

            slow = asyncio.create_task(dribble())
            try:
                await asyncio.sleep(0.3)  # the slow client is mid-request
                began = time.monotonic()
                async with page_running(FakePage(link.port)) as page:
                    await reset_and_step(link, page, steps=20)
                    assert page.close_code is None, "the real page must not be refused"
                # far under the ~10 s a handshake queued behind the slow client's would take
                assert time.monotonic() - began < 5.0
                assert not slow.done(), "the slow client was still dribbling while the page stepped"
            finally:
                slow.cancel()
                with contextlib.suppress(BaseException):
                    await slow
                writer.close()

    run(main())


def test_half_open_raw_connections_do_not_count_as_a_page() -> None:
    async def main() -> None:
        async with serving() as link:
            idle = [await asyncio.open_connection("127.0.0.1", link.port) for _ in range(5)]
            try:
                async with page_running(FakePage(link.port)) as page:
                    await reset_and_step(link, page, steps=5)
            finally:
                for _, writer in idle:
                    writer.close()

    run(main())
