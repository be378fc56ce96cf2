"""Sessions that install everything a run needs, then run it.

`nox -s tests` on a fresh machine: a virtualenv, the packages (torch pinned to the CPU build
this machine carries), a Chromium if none is found, then the JS and Python test suites.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
TORCH = "torch==2.13.0"  # a CPU build; other versions pull several GB of CUDA wheels


def install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH)
    session.install("-e", f".{extras}")
    ensure_chromium(session)


def ensure_chromium(session: nox.Session) -> None:
    """Debian's chromium when root (Playwright's download does not work everywhere), else Playwright's."""
    found = str(session.run("python", "-m", "orchestrator", "doctor", "--browser-only", silent=True, success_codes=[0, 1]))
    if found.startswith("browser: "):
        session.log(found.strip())
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.log("no Chromium found: installing Debian's chromium with apt-get")
        # silent: apt's output is shown only if it fails (nox prints it with the error)
        session.run("apt-get", "update", "-qq", external=True, silent=True)
        session.run("apt-get", "install", "-y", "-qq", "chromium", external=True, silent=True)
    else:
        session.log("no Chromium found: installing Playwright's Chromium")
        session.run("python", "-m", "playwright", "install", "chromium", silent=True)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite: JS simulation core tests, then the Python tests (real Chromium included)."""
    install(session, "[test,ray]")  # ray: the multi-machine tests run too
    session.run("node", "--test", "webapp/tests/", external=True)
    # Two test processes: the end-to-end tests spend much of their time waiting on deadlines,
    # graces and page loads, so two share 2 cores well (the tests never depend on speed).
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "worksteal",
                *session.posargs)


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """The main job: PPO on the embedded rover sim (pass options after --, e.g. -- --envs 8).

    `--envs auto` unless --envs is given: on a machine of at most 2 cores that is the original
    app's 4 PPO envs packed into one tab of 4 simulations, the fastest layout there (README: Throughput).
    """
    install(session)
    session.run("lunarfleet", "train", *auto_envs(session.posargs), *session.posargs)


def auto_envs(args: list[str]) -> list[str]:
    """`--envs auto`, unless the options size the run themselves (--envs, a --config file, --ray)."""
    sized = any(arg.split("=", 1)[0] in ("--envs", "--config", "--ray") for arg in args)
    return [] if sized else ["--envs", "auto"]


@nox.session(python=PYTHON)
def smoke(session: nox.Session) -> None:
    """A short real training run with a JSON verdict (as CI would run it)."""
    install(session)
    session.run("lunarfleet", "smoke", "--json", "runs/smoke.json", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "lunarfleet", "orchestrator", "browser_pool", "training", "tests", "noxfile.py")


@nox.session(python=PYTHON, name="learning-check")
def learning_check(session: nox.Session) -> None:
    """PPO on stage 1 for 100k steps, then scored against random actions on the same tabs by task
    metrics, never by reward: it passes only if the model collides in fewer episodes than random
    actions and its episodes are longer on average (`compare_with_random`, training/task_metrics.py)."""
    install(session)
    models = "runs/learning-check/models"
    verdict = Path("runs/learning-check/evaluation.json")
    session.run("lunarfleet", "train", "--stage", "1", "--timesteps", "100000", "--no-auto-load",
                "--models-dir", models, "--save-freq", "0", "--max-restarts", "0", *session.posargs)
    scoring = ["--episodes", "40", "--max-episode-steps", "1000", "--stage", "1", "--json", str(verdict)]
    session.run("lunarfleet", "evaluate", f"{models}/lunar_rover_ppo_100000_steps.zip", "--against-random", *scoring)
    comparison = json.loads(verdict.read_text())["evaluation"]["task_vs_random"]
    if not comparison["better"]:
        session.error(f"no learning of the stage-1 task: {comparison['message']}")
    session.log(comparison["message"])
