"""The private event loop: run by the thread that waits for it, by its own thread otherwise."""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from collections.abc import Iterator

import pytest

from training.event_loop import LoopThread, interrupt

WAIT_S = 30.0  # generous: how long the loop's own thread may take to pick the loop up


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread("test-loop")
    try:
        yield lt
    finally:
        lt.stop()
        assert not lt._thread.is_alive()


async def _thread_id() -> int:
    return threading.get_ident()


def _runs_on(lt: LoopThread) -> int:
    """The thread that runs a callback handed to the loop from outside."""
    ran: queue.SimpleQueue[int] = queue.SimpleQueue()
    lt.loop.call_soon_threadsafe(lambda: ran.put(threading.get_ident()))
    return ran.get(timeout=WAIT_S)


def test_the_waiting_thread_runs_the_loop_and_its_own_thread_runs_it_otherwise(loop_thread: LoopThread) -> None:
    assert loop_thread.run(_thread_id()) == threading.get_ident()
    assert _runs_on(loop_thread) == loop_thread._thread.ident  # nobody holds it: its own thread runs it
    assert loop_thread.run(_thread_id()) == threading.get_ident()  # and hands it back to a waiting caller
    assert _runs_on(loop_thread) == loop_thread._thread.ident


def test_a_thread_that_runs_another_loop_has_its_calls_run_on_the_loop_thread(loop_thread: LoopThread) -> None:
    async def notebook_cell() -> tuple[int, int]:  # a notebook's code runs inside the notebook's loop
        return loop_thread.run(_thread_id()), threading.get_ident()

    ran_on, caller = asyncio.run(notebook_cell())
    assert ran_on == loop_thread._thread.ident != caller


def test_past_its_timeout_a_coroutine_is_cancelled(loop_thread: LoopThread) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        loop_thread.run(forever(), timeout=0.05)
    assert cancelled.is_set()


def test_ctrl_c_comes_between_two_callbacks_not_inside_one(loop_thread: LoopThread) -> None:
    finished: list[str] = []

    async def step() -> None:
        signal.raise_signal(signal.SIGINT)  # the handler runs here, in the middle of this callback
        finished.append("the rest of the callback")
        await asyncio.sleep(3600)  # the next callback never comes: the interrupt comes first
        finished.append("a later callback")

    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupt())
    try:
        with pytest.raises(KeyboardInterrupt):
            loop_thread.run(step())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished == ["the rest of the callback"]
    assert loop_thread.run(_thread_id()) == threading.get_ident()  # the loop is whole and can run on


def test_ctrl_c_while_holding_the_loop_outside_it_comes_as_the_hold_ends(loop_thread: LoopThread) -> None:
    with pytest.raises(KeyboardInterrupt), loop_thread.held():
        interrupt()  # as a signal handler would
        after = True
    assert after
    assert _runs_on(loop_thread) == loop_thread._thread.ident  # the hold was let go
    with pytest.raises(KeyboardInterrupt):
        interrupt()  # outside a hold: at once


def test_stop_ends_the_loop_thread_whoever_ran_the_loop_last() -> None:
    for let_its_thread_run_it in (False, True):
        lt = LoopThread("test-loop")
        lt.run(_thread_id())
        if let_its_thread_run_it:
            _runs_on(lt)
        lt.stop()
        assert not lt._thread.is_alive() and lt.loop.is_closed()
