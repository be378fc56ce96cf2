"""Supervision for unattended runs: the run lives in a child process, restarted when it dies.

A trainer that raises, or is killed by the out-of-memory killer, is started again from the
newest checkpoint, with backoff, up to a limit; every restart and its cause goes into the run's
event log. Ctrl+C and SIGTERM reach the child, which saves its checkpoint and exits; the
supervisor then stops too. The child dies with the supervisor (PR_SET_PDEATHSIG), so even a
SIGKILL of the supervisor leaves no run behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.events import say

# Exit codes of a run, as the supervisor reads them.
EXIT_OK = 0
EXIT_FAILED = 1  # a failure restarting will not fix (set-up, circuit breaker, bad options)
EXIT_USAGE = 2
EXIT_TRAINER_CRASHED = 75  # the trainer raised: restart from the newest checkpoint
EXIT_INTERRUPTED = 130
BACKOFF_S = (2.0, 10.0, 30.0, 60.0)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when the supervisor's thread dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(argv: list[str], run_dir: Path, max_restarts: int) -> int:
    """Run `lunarfleet <argv> --run-id ... --attempt N` until it ends for a reason restarts cannot fix."""
    run_dir.mkdir(parents=True, exist_ok=True)
    events = run_dir / "events.jsonl"
    child: subprocess.Popen[bytes] | None = None

    # The child runs in its own session, so a terminal's Ctrl+C reaches it once, through here.
    def forward(signum: int, frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    restarts = 0
    try:
        while True:
            child = _start_attempt(argv, run_dir.name, restarts)
            code = child.wait()
            if code in (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED) or code == -signal.SIGINT:
                return EXIT_INTERRUPTED if code == -signal.SIGINT else code
            cause = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"trainer crashed (exit code {code})"
            if restarts >= max_restarts:
                _log(events, "supervisor_gave_up", {"cause": cause, "restarts": restarts})
                say(f"[Supervisor] ✗ the run died ({cause}) and was already restarted {restarts} times; giving up. See {events}")
                return EXIT_FAILED
            restarts += 1
            _wait_before_restart(events, cause, restarts, max_restarts)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(child)


def _start_attempt(argv: list[str], run_id: str, attempt: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "orchestrator", *argv, "--run-id", run_id, "--attempt", str(attempt)]
    return subprocess.Popen(
        command,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads here
    )


def _wait_before_restart(events: Path, cause: str, restart: int, max_restarts: int) -> None:
    """Back off before restart number `restart` (1, 2, ...), saying so."""
    delay = BACKOFF_S[min(restart - 1, len(BACKOFF_S) - 1)]
    _log(events, "trainer_restarted", {"cause": cause, "attempt": restart, "delay_s": delay})
    say(f"[Supervisor] ↻ the run died ({cause}); restarting from the newest checkpoint in {delay:g} s (restart {restart}/{max_restarts})")
    time.sleep(delay)


def _stop(child: subprocess.Popen[bytes] | None) -> None:
    """End a child still running when the supervisor stops: SIGTERM (it saves a checkpoint), then SIGKILL."""
    if child is not None and child.poll() is None:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


def _log(path: Path, kind: str, fields: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": round(time.time(), 3), "event": kind, "pid": os.getpid(), **fields}) + "\n")
