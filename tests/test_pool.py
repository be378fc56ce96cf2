"""The tab pool's pure rules (the pool itself runs real Chromium in the e2e tests)."""

from __future__ import annotations

from browser_pool.pool import PoolSettings, backoff_delay


def test_a_tab_failing_now_and_then_is_replaced_at_once() -> None:
    settings = PoolSettings()
    # six failures over ten minutes, two minutes apart: each the only one in its minute
    failures = [0.0, 120.0, 240.0, 360.0, 480.0, 600.0]
    assert backoff_delay(failures, 600.0, settings) == 0.0


def test_a_tab_failing_in_quick_succession_backs_off_step_by_step() -> None:
    settings = PoolSettings()
    failures: list[float] = []
    delays = []
    for t in range(8):  # a failure every 5 s
        failures.append(5.0 * t)
        delays.append(backoff_delay(failures, 5.0 * t, settings))
    assert delays == [0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 10.0, 10.0]
    # a minute of calm and the next failure is replaced at once again
    assert backoff_delay([*failures, 100.0], 100.0, settings) == 0.0
