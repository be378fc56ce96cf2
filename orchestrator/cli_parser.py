"""The `lunarfleet` command line: its subcommands, their options and help, and `--config FILE`."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from orchestrator.config import CHAOS_OVERTIME_S, DASHBOARD_HOST, DASHBOARD_PORT
from training.outages import STRAGGLER_S
from training.vec_env import DEFAULT_VEC_ENV, VEC_ENV_KINDS

EPILOG = """\
examples:
  lunarfleet train                          4 tabs of the embedded rover sim, 1M steps
  lunarfleet train --envs 8 --timesteps 200000 --stage 1
  lunarfleet train --url 'http://localhost:4200/?wsPort={port}&maxSteps={max_steps}'
                                            your own rover app, unmodified
  lunarfleet train --curriculum --eval-freq 100000
                                            the four stages, evaluated on a tab of its own every
                                            100k steps; the best model kept by task score
  lunarfleet evaluate models/lunar_rover_ppo_best.zip --against-random --video rover.mp4
                                            score it against random actions by task metrics,
                                            and film tab 1 at the real frame rate
  lunarfleet smoke --json out.json          a 2-tab, 4096-step real run for CI
  lunarfleet train --dashboard              also a live web page of the run: every tab's picture,
                                            state and speed, progress, curves, events (its URL,
                                            with a token, is printed at start)
  lunarfleet tabs --envs 4 --url 'http://localhost:4200/?wsPort={port}'
                                            only the tabs, for your own trainer script

In your own SB3 script: env = lunarfleet.make_vec_env(4) in place of SubprocVecEnv([...]);
one env: gymnasium.make("LunarFleet/Rover-v0") after import lunarfleet (README: Use it as a library).

Checkpoints go to models/lunar_rover_ppo_<steps>_steps.zip; the newest is loaded
automatically. Each run writes runs/<run-id>/ (config, events, summary, TensorBoard).
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive whole number, got {text}")
    return value


def _envs(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0 separated by commas, got {text!r}")
    return values


def _kind_list(text: str) -> list[str]:
    kinds = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [k for k in kinds if k not in VEC_ENV_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"vec env kinds are {', '.join(VEC_ENV_KINDS)}, got {text!r}")
    return kinds


def _add_page_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        metavar="TEMPLATE",
        help="page URL template for your own app, with placeholders {port} (the tab's WebSocket port), "
        "{env_id} (0..N-1), {max_steps}; for example 'http://localhost:4200/?wsPort={port}&maxSteps={max_steps}'. "
        "Default: the embedded rover simulation, served by LunarFleet on http://localhost:4200",
    )
    p.add_argument("--base-port", type=_positive_int, default=8765, help="first WebSocket port; tab i uses base+i (default 8765; the next free block if taken)")
    p.add_argument("--app-port", type=_positive_int, default=4200, help="port that serves the embedded simulation (default 4200; a free one if taken)")
    p.add_argument("--browser", metavar="PATH", help="Chromium executable (default: Playwright's own if installed, else /usr/bin/chromium)")
    p.add_argument("--headed", action="store_true", help="show the browser windows (needs a display)")
    p.add_argument("--step-timeout", type=_positive_float, default=10.0, metavar="S", help="a tab that does not answer a step within S seconds is hung and replaced (default 10)")
    p.add_argument("--straggler-grace", type=_positive_float, default=STRAGGLER_S, metavar="S", help=f"the other tabs wait at most S seconds for a slow, hung or failed tab, then step on while it gets frozen steps (its last observation, reward 0) until it answers or its replacement is ready (default {STRAGGLER_S:g})")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN", help="also accept env connections from pages of this origin (e.g. http://127.0.0.1:4200); by default only the page URL's own origin may connect")
    p.add_argument("--connect-timeout", type=_positive_float, default=60.0, metavar="S", help="how long to wait for all tabs to connect at start (default 60)")
    _add_tab_options(p)


def _add_tab_options(p: argparse.ArgumentParser) -> None:
    """How a page learns its port and how to see tab 1: shared by train, smoke and tabs."""
    p.add_argument("--connect-click", metavar="SELECTOR", help="click this once each page has loaded, for pages that connect only on a click; a Playwright selector such as 'text=Connect to Python' or '#connect'")
    p.add_argument("--init-script", metavar="JS", help="JavaScript run in each page before its own scripts, with {port} and {env_id} filled in, for pages that read their port from a global, e.g. 'window.WS_PORT = {port}'")
    p.add_argument("--watch", action="store_true", help="open tab 1 in a visible browser window (needs a display: DISPLAY or WAYLAND_DISPLAY); without one, says so and carries on headless")
    p.add_argument("--record-video", nargs="?", type=_positive_float, const=60.0, default=0.0, metavar="S", help="record tab 1's page for S seconds (default 60) as .webm into the run folder's videos/; tab 1 then reloads unrecorded, losing that episode")
    _add_dashboard_options(p)


def _add_dashboard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dashboard", nargs="?", type=_positive_int, const=DASHBOARD_PORT, default=None, metavar="PORT", help=f"serve a live web page of the run on PORT (default {DASHBOARD_PORT}; the next free one if taken): every tab as a card with a picture of its canvas every few seconds (click one for a live view), its state, steps/s, restarts, last failure, PSS and CPU; progress, speed, ETA, stage, mean reward and task metrics; the reward and speed curves; the event stream. Its URL, with a token like Jupyter's, is printed at start. In a --config file: dashboard = true or dashboard = PORT")
    p.add_argument("--dashboard-host", default=DASHBOARD_HOST, metavar="HOST", help=f"where --dashboard listens (default {DASHBOARD_HOST}, this machine only: watch from elsewhere through an ssh tunnel, ssh -L {DASHBOARD_PORT}:localhost:{DASHBOARD_PORT} HOST); 0.0.0.0 opens it to the network, still behind its token")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", metavar="ADDRESS", help="put the tabs on the machines of a Ray cluster, one host (browser, tabs, page server) per machine that offers the lunarfleet_host resource; --envs is then tabs per host. 'local' starts a Ray cluster on this machine with --hosts hosts, 'auto' joins the cluster this machine is part of (ray start), HOST:PORT joins that one. A host that dies is restarted by Ray and its tabs rejoin; the others train on meanwhile. Needs pip install \"lunarfleet[ray]\" (README: More than one machine)")
    p.add_argument("--hosts", type=_positive_int, metavar="N", help="with --ray: the number of hosts (default: every machine offering lunarfleet_host; with --ray local, 2)")


def _add_training_options(p: argparse.ArgumentParser, *, envs: int, timesteps: int, smoke: bool) -> None:
    p.add_argument("--envs", type=_envs, default=envs, metavar="N", help=f"number of parallel tabs/environments (with --ray: tabs per host), or 'auto' to pick N from the cores and free memory and say why; on at most 2 cores with the embedded page, auto packs those envs into one tab as simulations, the fastest layout there (README: Throughput) (default {envs})")
    p.add_argument("--timesteps", type=_positive_int, default=timesteps, metavar="T", help=f"train until the model has T steps in total; a resumed model continues its count (default {timesteps:,})")
    p.add_argument("--timescale", type=_positive_float, default=2.0, metavar="X", help="simulated time per step = X/60 s (default 2.0, as the original app)")
    p.add_argument("--max-episode-steps", type=_positive_int, default=1000 if smoke else 10_000, metavar="M", help=f"maximum episode length (default {1000 if smoke else 10_000:,})")
    p.add_argument("--stage", type=int, choices=(1, 2, 3, 4), default=1, help="reward stage of the embedded sim: 1 driving, 2 navigation, 3 orbs, 4 full task (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of PPO and of the simulations (tab i gets seed+i) (default 0); a resumed model is seeded with it again")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help="checkpoint folder (default " + ("a fresh folder inside the run folder" if smoke else "models/") + ")")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run folders go (default runs/)")
    p.add_argument("--save-freq", type=int, default=0 if smoke else 10_000, metavar="S", help="save a checkpoint every S total steps, 0 for only at the end (default " + ("0" if smoke else "10,000") + ")")
    p.add_argument("--config", type=Path, metavar="FILE", help="read options from a TOML file: keys are option names (envs = 8, timesteps = 2000000, url = '...'); flags given on the command line win")
    p.add_argument("--recycle-steps", type=int, default=0, metavar="K", help="replace each tab with a fresh one after K of its steps, at an episode boundary (long-lived pages leak memory; default 0: never)")
    p.add_argument("--recycle-hours", type=float, default=0.0, metavar="H", help="replace each tab after H hours open, at an episode boundary (default 0: never)")
    p.add_argument("--n-steps", type=_positive_int, default=2048, metavar="K", help="PPO rollout length per environment (default 2048, as the original app)")
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="B", help="PPO minibatch size (default 64)")
    p.add_argument("--ent-coef", type=float, default=0.01, metavar="C", help="PPO entropy bonus (default 0.01, as the original app; a resumed model trains on with it too; docs/rover-sim.md has what 0.01 and 0 did to the rover's action noise)")
    p.add_argument("--vec-env", choices=VEC_ENV_KINDS, default=None, help="how the trainer talks to the tabs: inline (all tabs from the trainer process over one asyncio loop, no pickling through pipes, no worker processes) or subproc (one worker process per tab, like SB3's SubprocVecEnv); --sims-per-tab above 1 needs inline (default " + DEFAULT_VEC_ENV + ", the faster in 'lunarfleet bench')")
    p.add_argument("--sims-per-tab", type=_positive_int, default=1, metavar="K", help="run K simulations in each tab of the embedded page, all stepped with one message; each is its own env to PPO, so PPO sees envs x K environments (mind --n-steps: a rollout is n_steps x envs x K steps). Collects many times faster (see lunarfleet bench); needs --vec-env inline, at most 64 (default 1)")
    p.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto", help="progress display: a bar on a terminal, plain lines otherwise (default auto)")
    p.add_argument("--monitor-interval", type=_positive_float, default=5.0, metavar="S", help="sample CPU and memory of the machine, trainer, env workers, browser and each tab every S seconds, into runs/<id>/resources.jsonl, status.json and TensorBoard (resources/); on a terminal a per-tab table is shown (default 5)")
    p.add_argument("--no-monitor", action="store_true", help="no resource sampler, status file or live table")
    p.add_argument("--tab-memory-limit-mb", type=_non_negative_float, default=0.0, metavar="MB", help="replace a tab whose renderer uses more than MB megabytes (PSS) at its next episode boundary (default 0: no limit)")
    _add_ray_options(p)
    p.add_argument("--memory-floor-mb", type=_non_negative_float, default=1000.0, metavar="MB", help="keep this much memory free: refuse to start more tabs than fit above it, and warn when a run drops below it (default 1000; 0 turns the check off)")
    _add_page_options(p)


def _add_chaos_overtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chaos-overtime", type=_non_negative_float, default=CHAOS_OVERTIME_S, metavar="S", help=f"with --chaos: if --timesteps is reached before every planned fault was injected and recovered, train on past it for at most S seconds so they can happen, and say so (default {CHAOS_OVERTIME_S:g}; 0: stop at --timesteps)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunarfleet",
        description="Train a PPO agent on a browser simulation in N headless Chromium tabs. LunarFleet opens "
        "the tabs, connects each to its own WebSocket port, replaces crashed or hung tabs, and trains "
        "Stable-Baselines3 PPO alongside.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_smoke, _add_evaluate, _add_report, _add_doctor, _add_tabs, _add_status, _add_dashboard, _add_bench):
        add(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser("train", help="train PPO (resumes the newest checkpoint)", description="Train PPO in N headless tabs. Resumes the newest checkpoint in --models-dir unless --no-auto-load; Ctrl+C saves lunar_rover_ppo_interrupted.zip and exits cleanly. Progress shows the mean reward beside the task metrics of the last 100 episodes (orbs collected and deposited, collisions, episode length; TensorBoard task/...), and warns when the policy games the reward by ending episodes early.")
    _add_training_options(train, envs=4, timesteps=1_000_000, smoke=False)
    train.add_argument("--load", type=Path, metavar="PATH", help="start from this checkpoint instead of the newest one")
    train.add_argument("--no-auto-load", action="store_true", help="start a fresh model even if checkpoints exist")
    train.add_argument("--adapt-spaces", action="store_true", help="load a checkpoint whose observation or action bounds differ from the simulation's (e.g. one of the original app's, trained with its turn rate limited to 0..1): keep its weights and step count and train on with the simulation's spaces. Different shapes cannot be adapted")
    train.add_argument("--max-restarts", type=int, default=3, metavar="R", help="restart a run whose trainer crashed (an exception, an out-of-memory kill) from the newest checkpoint, up to R times, with backoff (default 3; 0 runs without a supervisor)")
    train.add_argument("--chaos", metavar="SPEC", help="inject faults, as for smoke; also 'trainer' (kill the trainer process, to check supervision). Faults are injected in the first attempt only")
    _add_chaos_overtime(train)
    train.add_argument("--run-id", help=argparse.SUPPRESS)
    train.add_argument("--attempt", type=int, default=None, help=argparse.SUPPRESS)
    train.add_argument("--hours", type=_positive_float, metavar="H", help="time budget: stop cleanly with a checkpoint after H hours")
    train.add_argument("--keep-checkpoints", type=int, default=0, metavar="K", help="keep only the K newest periodic checkpoints (default 0: keep all); lunar_rover_ppo_best.zip keeps the best by task score (with --eval-freq, of the evaluations; else of the last 100 training episodes at each checkpoint), its score in lunar_rover_ppo_best.json")
    train.add_argument("--eval-freq", type=_non_negative_int, default=0, metavar="STEPS", help="every STEPS total steps, run --eval-episodes episodes of the current policy (deterministic; sampled with --eval-stochastic) on an extra tab of its own (at the current curriculum stage, the same episodes every time), log their task metrics (TensorBoard eval/..., an 'evaluation' event, an [Eval] line) and keep lunar_rover_ppo_best.zip by their task score; e.g. 100000 (default 0: no evaluation, one tab fewer)")
    train.add_argument("--eval-stochastic", action="store_true", help="evaluate with actions sampled from the policy, as training acts, instead of its mean action (as evaluate --stochastic); a policy whose mean action stalls or circles may do its task only this way, so lunar_rover_ppo_best.zip is then kept by what the sampled policy achieves")
    train.add_argument("--eval-episodes", type=_positive_int, default=10, metavar="N", help="episodes per evaluation (default 10)")
    train.add_argument("--eval-max-episode-steps", type=_positive_int, default=None, metavar="M", help="the evaluation episodes' limit, which bounds an evaluation's cost (default: --eval-freq / (10 x --eval-episodes), at most --max-episode-steps, so an evaluation runs at most a tenth of the steps trained between two; e.g. 1,000 for --eval-freq 100000)")
    train.add_argument("--curriculum", nargs="?", const="200000,300000,500000", metavar="S1,S2,S3", help="train through the four reward stages: stage 1 for S1 steps, stage 2 for S2, stage 3 for S3, stage 4 for the rest (default the original app's 200000,300000,500000); a resumed run continues in its stage. On the embedded page stages 1-2 also thin the obstacle field and raise it in steps (none, then 4; then 4, 8, all 11), stages 3-4 have all 11 (docs/rover-sim.md, change 8), and stage 4 trains with PPO's discount at 0.995 and learning rate 1e-4 (changes 11-12)")


def _add_smoke(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    smoke = sub.add_parser("smoke", help="a short real training run for CI, with a JSON verdict", description="A short, real training run (real tabs, real PPO) in a fresh models folder. Exit code 0 only when training completed, every tab connected, and the final checkpoint loads back.")
    _add_training_options(smoke, envs=2, timesteps=4096, smoke=True)
    smoke.add_argument("--json", type=Path, metavar="PATH", help="write the verdict as one JSON object: ok, envs, timesteps, episodes, fps, tab_restarts, checkpoint, elapsed_s, error, ...")
    smoke.add_argument("--chaos", metavar="SPEC", help="inject faults one at a time, each after the previous one recovered and the tabs stepped on, SPEC a comma list of kind=count among crash (kill a renderer), hang (endless loop in the page), disconnect (the page closes its socket), garbage (the page sends a malformed message), browser (kill the browser), driver (kill the Playwright driver), host (with --ray: kill a host's Ray actor, which Ray restarts with a new browser and tabs), host_tree (with --ray: SIGKILL the host's process, its browser and driver, as a machine's processes die); hosts take turns, as do browser and driver faults with --ray; e.g. crash=2,hang=1. The run is ok only if every planned fault was injected and recovered; the console and the JSON verdict name each one that was not, and why. The verdict adds faults_planned, faults_injected, faults_recovered, trainer_exceptions and per-kind counts")
    _add_chaos_overtime(smoke)
    smoke.add_argument("--keep", action="store_true", help="keep the smoke run's models folder (default: deleted unless --models-dir is given)")


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = sub.add_parser("evaluate", help="score a checkpoint (or random actions) on real tabs: reward and task metrics (orbs, collisions, episode length)", description="Run a trained policy (deterministic actions, or sampled with --stochastic) or random actions for N episodes on real tabs, without training, and print the mean episode reward beside what the episodes achieved: the share that collected an orb, deposited one (construction zone, berm), collided or ended early, and the mean episode length. A reward that rises only because episodes end early is no learning: compare with --against-random. Episodes cut short by a tab failure are not counted.")
    evaluate.add_argument("model", nargs="?", type=Path, help="checkpoint to score (default: uniformly random actions)")
    evaluate.add_argument("--episodes", type=_positive_int, default=20, metavar="N", help="episodes to score (default 20)")
    evaluate.add_argument("--json", type=Path, metavar="PATH", help="write the result as JSON; the 'evaluation' field holds policy, actions (deterministic or sampled), episodes, mean_reward, std_reward, mean_length, steps; task: episodes, mean_reward, mean_length, the fractions of episodes ended_early, collided, orb_collected, orb_deposited, deposited_construction, deposited_berm, and the means mean_orbs_collected, mean_orbs_deposited; against_random: the same for random actions (with --against-random, else null); reward_gaming: the verdict (gaming, ends_early_and_short, reward_rising) with its figures and message; task_vs_random (with --against-random, embedded simulation): better (stages 1-2: the model collides in fewer episodes and its episodes are longer than random actions'; stages 3-4: it collects an orb in more episodes and deposits at least as many orbs), figures, message; video (with --video): path, frames, seconds, fps, episodes")
    evaluate.add_argument("--stochastic", action="store_true", help="sample the policy's actions from its distribution, as training does, instead of taking its mean action (rl-zoo3's enjoy --stochastic); a policy that stalls or circles when deterministic may do its task this way. JSON: evaluation.actions says which")
    evaluate.add_argument("--against-random", action="store_true", help="then score random actions on the same tabs for as many episodes, print both side by side (model vs random), and say whether the model does the stage's task better than random actions, by task metrics only (stages 1-2: fewer collisions and longer episodes; stages 3-4: an orb collected in more episodes and at least as many deposits); a model that beats random by reward but ends its episodes early in a collision is reward gaming, and is said so")
    evaluate.add_argument("--video", type=Path, metavar="OUT.mp4", help="also record the first --video-episodes episodes of tab 1 (embedded simulation only) as a video: the canvas drawn after every step, at 60/timescale frames a second (30 by default), so one simulated second is one second of video; needs imageio-ffmpeg (installed with LunarFleet)")
    evaluate.add_argument("--video-episodes", type=_positive_int, default=2, metavar="N", help="episodes of tab 1 to record with --video (default 2; tab 1 plays about --episodes / --envs of them, so raise --episodes for more)")
    _add_training_options(evaluate, envs=4, timesteps=1, smoke=True)
    evaluate.set_defaults(chaos=None, keep=True)


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser("report", help="the morning report of a run: summary JSON and a PNG of reward, task outcomes, speed, restarts, memory", description="Write report.json and report.png into a run folder (the newest under runs/ by default) and print the summary: reward beside the task metrics of the last episodes (orbs collected and deposited, collisions, episode length), and whether the run was reward gaming (most episodes ending early in a collision while the reward rises). Works for finished, running and killed runs.")
    report.add_argument("run_dir", nargs="?", type=Path, help="run folder (default: the newest in runs/)")
    report.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run folders are (default runs/)")


def _add_doctor(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser("doctor", help="check Chromium, ports, memory and more; print the fix for each problem", description="Check what a run needs (Chromium and that it starts headless, Playwright, free WebSocket ports, /dev/shm, memory, cores, torch) and print the fix for each problem found. Exit code 1 when something is wrong.")
    doctor.add_argument("--browser", metavar="PATH", help="check this Chromium instead of the one LunarFleet would pick")
    doctor.add_argument("--envs", type=_positive_int, default=4, metavar="N", help="number of tabs to check ports and memory for (default 4)")
    doctor.add_argument("--base-port", type=_positive_int, default=8765, help="first WebSocket port to check (default 8765)")
    doctor.add_argument("--browser-only", action="store_true", help="only say which Chromium would be used (one line; exit 1 if none)")


def _add_tabs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tabs = sub.add_parser("tabs", help="only the self-healing tab pool, for your own trainer script (e.g. the original app's train_ppo_parallel.py)", description="Open N headless tabs whose pages connect to ws://localhost:BASE .. BASE+N-1, the ports your own trainer serves (the original app's train_ppo_parallel.py uses 8765 and up), and keep them alive: crashed, hung or disconnected tabs are reloaded, a dead browser or driver is relaunched. Never trains. Runs until Ctrl+C or SIGTERM, then closes every tab; status in runs/<id>/status.json.")
    tabs.add_argument("--envs", type=_positive_int, default=4, metavar="N", help="number of tabs (default 4)")
    tabs.add_argument("--url", metavar="TEMPLATE", help="page URL template with {port}, {env_id}, {max_steps}, e.g. 'http://localhost:4200/?wsPort={port}&maxSteps={max_steps}' for the original rover app. Default: the embedded rover simulation, served by this command")
    tabs.add_argument("--base-port", type=_positive_int, default=8765, help="WebSocket port of tab 1; tab i connects to base+i-1 (default 8765, as the original app's trainer)")
    tabs.add_argument("--max-episode-steps", type=_positive_int, default=10_000, metavar="M", help="the {max_steps} of the URL (default 10,000)")
    tabs.add_argument("--app-port", type=_positive_int, default=4200, help="port that serves the embedded simulation when there is no --url (default 4200; a free one if taken)")
    tabs.add_argument("--browser", metavar="PATH", help="Chromium executable (default as for train)")
    tabs.add_argument("--headed", action="store_true", help="show all browser windows (needs a display)")
    tabs.add_argument("--hang-timeout", type=_positive_float, default=10.0, metavar="S", help="a page that does not answer the pool's heartbeat within S seconds is hung and reloaded (default 10)")
    tabs.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where the run folder goes (events.jsonl, status.json, videos/) (default runs/)")
    tabs.add_argument("--ray", metavar="ADDRESS", help="open the tabs on the machines of a Ray cluster, N on each machine offering lunarfleet_host, for the trainer you run on each of them (its ports --base-port.. there); 'local' starts Ray here with --hosts hosts (host h's tabs on the h-th block of ports), 'auto' or HOST:PORT joins a cluster. Needs pip install \"lunarfleet[ray]\"")
    tabs.add_argument("--hosts", type=_positive_int, metavar="N", help="with --ray: the number of hosts (default: every machine offering lunarfleet_host; with --ray local, 2)")
    _add_tab_options(tabs)


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="print the per-tab table of a running or finished run", description="Print the per-tab table (state, steps/s, restarts, CPU, memory) of a run from its status.json, which a running run rewrites every few seconds, under a header with the task metrics of its last episodes (mean reward, orb collected, deposited, collided, mean length) and the reward-gaming warning while it holds. Default: the newest run under --runs-dir.")
    status.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-120000-train (default: the newest)")
    status.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run folders are (default runs/)")
    status.add_argument("--json", action="store_true", help="print status.json itself")


def _add_dashboard(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = sub.add_parser("dashboard", help="serve the web page of a running or finished run from its folder", description="Serve the dashboard page (as train/smoke/tabs --dashboard do) for a run from its folder: status.json, events.jsonl and the thumbnails the run took (runs started with --dashboard have them). A running run is followed live; a finished one shows its final state. Runs until Ctrl+C. Default: the newest run under --runs-dir.")
    dashboard.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run folder, e.g. runs/20250101-120000-train (default: the newest)")
    dashboard.add_argument("--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run folders are (default runs/)")
    dashboard.add_argument("--port", type=_positive_int, default=DASHBOARD_PORT, help=f"port of the page (default {DASHBOARD_PORT}; the next free one if taken)")
    dashboard.add_argument("--host", default=DASHBOARD_HOST, help=f"where it listens (default {DASHBOARD_HOST}, this machine only); 0.0.0.0 opens it to the network, still behind its token")


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="measure throughput: collection steps/s per vec env kind, PPO fps, start-up, memory", description="Measure in one run: (a) collection steps/s of a random policy for 1, 2, 4, 8 tabs, per vec env kind and with several simulations per tab; (b) the same through an in-process null env (the ceiling); (c) PPO training fps with tabs vs the null env at identical settings; (d) seconds from launch to 8 tabs connected; (e) PSS memory per tab; (f) the page in real-time (60 Hz) mode next to lock-step; (g) 4 tabs through Ray hosts (--ray local --hosts 2) against inline with 4 tabs (the median of 3 pairs of alternating windows), Ray's start-up, and the hosts' own round (an empty step frame to each host, the part of a vec step no tab work is in); (h) the floor: a page that only echoes, through the same transport, 1 and 4 tabs, and every row as a ratio to it (x floor: rate/py/browser); (i) the CPU --dashboard costs at 8 tabs (windows without and with it in turn; target at most 2 %). Prints a table; compare ratios within one run on a shared machine.")
    bench.add_argument("--quick", action="store_true", help="short windows and one simulations-per-tab value (under 3 minutes on 2 cores)")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write the results: rows (mode, tabs, sims_per_tab, envs, steps_per_s, ratio_to_ceiling, CPU per 1000 steps of the trainer, the browser and Ray, x_floor) and floor, per_step_cpu_us, startup_s_8_tabs, pss_mb_per_tab, ppo_fps_tabs, ppo_fps_null, ppo_original_settings, ppo_original_settings_packed, ppo_original_settings_one_tab, dashboard (cpu_ms_per_1k_without, cpu_ms_per_1k_with, cost_percent, ...), targets, ...")
    bench.add_argument("--tabs", type=_int_list, metavar="N,N", help="tab counts of the collection rows (default 1,2,4,8)")
    bench.add_argument("--sims", type=_int_list, metavar="K,K", help="simulations per tab of the batched rows (default 8,32,64; --quick 64)")
    bench.add_argument("--kinds", type=_kind_list, metavar="KIND,KIND", help="vec env kinds of the one-simulation rows (default inline,subproc)")
    bench.add_argument("--seconds", type=_positive_float, metavar="S", help="measuring window per row (default 4; --quick 1.5)")
    bench.add_argument("--ppo-rollout", type=_positive_int, metavar="N", help="PPO samples per rollout, n_steps = N / envs (default 8192; --quick 4096)")
    bench.add_argument("--ppo-rollouts", type=_positive_int, metavar="R", help="PPO rollouts (each followed by training) per measurement (default 3; --quick 2)")
    bench.add_argument("--no-dashboard", action="store_true", help="skip (i), the CPU --dashboard costs at 8 tabs")
    bench.add_argument("--original-n-steps", type=_positive_int, metavar="N", help="n_steps of PPO at the original settings (default 2048, the original app's; smaller only to try the bench out quickly)")
    bench.add_argument("--no-ppo", action="store_true", help="skip (c), the PPO measurement (with it, PPO at the original app's settings: 4 envs, n_steps 2048, as 4 tabs x 1 simulation and as 2 tabs x 2)")
    bench.add_argument("--profile", type=Path, metavar="DIR", help="(p) also profile each side at 4 tabs x 1 simulation into DIR: cProfile of the trainer's thread, which runs the tabs' sockets too (python-profile.txt, python.pstats) and a Chromium trace (chromium-trace.json, chromium-profile.txt)")
    bench.add_argument("--realtime-tabs", type=_int_list, metavar="N,N", help="tab counts of the real-time rows, 0 to skip (default 1; with more, tabs share one headless window and the hidden ones get no animation frames)")
    bench.add_argument("--ray", metavar="ADDRESS", default="local", help="(g) measure 4 tabs through Ray hosts on this Ray cluster: 'local' (default) starts one here, 'auto' or HOST:PORT joins one; 'none' skips the row. Needs pip install \"lunarfleet[ray]\" (skipped, and said, without it)")
    bench.add_argument("--hosts", type=_positive_int, default=2, metavar="N", help="(g) Ray hosts, the 4 tabs shared among them (default 2: 2 tabs each)")
    bench.add_argument("--base-port", type=_positive_int, default=8765, help="first WebSocket port (default 8765; the next free block if taken)")
    bench.add_argument("--app-port", type=_positive_int, default=4200, help="port that serves the embedded simulation (default 4200; a free one if taken)")
    bench.add_argument("--browser", metavar="PATH", help="Chromium executable (default as for train)")


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """`--config FILE`: the file's keys become the subcommand's defaults, so flags still win."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("command", nargs="?")
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is None or known.command is None:
        return
    try:
        data = tomllib.loads(known.config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"lunarfleet: cannot read --config {known.config}: {exc}") from None
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[known.command]
    options = {a.dest for a in sub._actions}
    defaults = {}
    for key, value in data.items():
        dest = key.replace("-", "_")
        if dest not in options or dest in ("config", "help"):
            raise SystemExit(f"lunarfleet: --config {known.config}: unknown key {key!r} for '{known.command}' (see lunarfleet {known.command} --help)")
        defaults[dest] = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    sub.set_defaults(**defaults)
