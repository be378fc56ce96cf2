"""`lunarfleet`: train PPO in headless browser tabs, with no tab opened by hand.

Subcommands: train (the main job), smoke (a short real run for CI, with a JSON verdict),
doctor (check the machine and say how to fix what is wrong), status (the per-tab table of a run),
tabs (only the self-healing tab pool, for people who keep their own trainer script).
The options themselves are in `orchestrator/cli_parser.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli_parser import apply_config_file, build_parser
from orchestrator.config import MAX_SIMS_PER_TAB, RunConfig, eval_episode_cap
from training.vec_env import DEFAULT_VEC_ENV

if TYPE_CHECKING:
    from orchestrator.training_run import RunSummary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    apply_config_file(parser, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in COMMANDS:
        return COMMANDS[args.command](args)
    if getattr(args, "ray", None) is not None:
        code = _check_ray(args)
        if code:
            return code
    if args.envs == "auto":
        _pick_envs(args)
    cfg = config_from_args(args)
    if args.command in ("train", "smoke", "evaluate"):
        return _train_or_smoke(cfg, args)
    parser.error(f"unknown command {args.command}")
    return 2


def _check_ray(args: argparse.Namespace) -> int:
    """`--ray`: Ray must be importable (exit code 2 with one line saying what to install)."""
    from orchestrator.ray_fleet import RayMissing, require_ray

    try:
        require_ray()
    except RayMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.envs == "auto":
        print("lunarfleet: --envs auto sizes this machine only; with --ray give the tabs per host (--envs N)", file=sys.stderr)
        return 2
    return 0


def _supervising(args: argparse.Namespace) -> bool:
    """This process is the supervisor of a `train` run, which trains in a child process."""
    return args.command == "train" and args.attempt is None and args.max_restarts > 0


def _pick_envs(args: argparse.Namespace) -> None:
    """`--envs auto`: as many tabs as the cores and free memory carry; on a small machine, with the
    embedded page, the same envs packed into one tab (`sizing.packed_layout`)."""
    from orchestrator.sizing import auto_envs, packed_layout

    args.envs, why = auto_envs(floor_mb=args.memory_floor_mb, vec_env=args.vec_env or DEFAULT_VEC_ENV)
    packed = None
    if args.command in ("train", "smoke") and args.url is None and args.sims_per_tab == 1 and args.vec_env in (None, "inline") \
            and getattr(args, "ray", None) is None:
        packed = packed_layout(args.envs)  # the embedded page only: the original app runs one simulation
    if packed is not None:
        args.envs, args.sims_per_tab, packed_why = packed
        why += f"\n[Setup] {packed_why}"
    if not _supervising(args):
        print(f"[Setup] {why}", flush=True)  # said by the process that trains, not its supervisor


# ---- the commands that need no run configuration ---------------------------------------
def _report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report, newest_run, print_report

    try:
        run_dir = args.run_dir or newest_run(args.runs_dir)
    except FileNotFoundError as exc:
        print(f"lunarfleet: {exc}", file=sys.stderr)
        return 1
    print_report(build_report(run_dir))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from orchestrator.doctor import browser_line, run_doctor

    if args.browser_only:
        ok, line = browser_line(args.browser)
        print(line)
        return 0 if ok else 1
    return run_doctor(args.browser, args.base_port, args.envs)


def _status(args: argparse.Namespace) -> int:
    from orchestrator.status_command import show_status

    return show_status(args.run_dir, args.runs_dir, args.json)


def _dashboard(args: argparse.Namespace) -> int:
    from orchestrator.dashboard_command import serve_run_folder

    return serve_run_folder(args.run_dir, args.runs_dir, args.port, args.host)


def _bench(args: argparse.Namespace) -> int:
    from orchestrator.bench import BenchSettings, run_bench  # heavy imports only when needed

    settings = BenchSettings.quick_settings() if args.quick else BenchSettings()
    overrides = {
        "tabs": [n for n in args.tabs or [] if n > 0] or None,
        "sims": [k for k in args.sims or [] if k > 1] if args.sims is not None else None,
        "kinds": args.kinds,
        "seconds": args.seconds,
        "ppo_rollout": args.ppo_rollout,
        "ppo_rollouts": args.ppo_rollouts,
        "original_n_steps": args.original_n_steps,
        "realtime_tabs": [n for n in args.realtime_tabs if n > 0] if args.realtime_tabs is not None else None,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    settings.ppo = not args.no_ppo
    settings.dashboard = not args.no_dashboard
    settings.profile_dir = args.profile
    settings.ray = None if args.ray == "none" else args.ray
    if 4 % args.hosts:
        print("lunarfleet: bench --hosts shares 4 tabs among the hosts: 1, 2 or 4", file=sys.stderr)
        return 2
    settings.ray_hosts, settings.ray_tabs_per_host = args.hosts, 4 // args.hosts
    settings.base_port, settings.app_port, settings.browser, settings.json_path = args.base_port, args.app_port, args.browser, args.json
    return run_bench(settings)


def _tabs(args: argparse.Namespace) -> int:
    from orchestrator.tabs_command import run_tabs

    if args.ray is not None and (code := _check_ray(args)):
        return code
    if args.ray is not None and args.dashboard:
        print("lunarfleet: tabs --ray --dashboard is not supported: the tabs are on the hosts' machines; "
              "run 'lunarfleet dashboard' there, or train with --ray --dashboard", file=sys.stderr)
        return 2
    return run_tabs(_tabs_config(args))


def _tabs_config(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig(
        command="tabs",
        envs=args.envs,
        url=args.url,
        max_episode_steps=args.max_episode_steps,
        base_port=args.base_port,
        app_port=args.app_port,
        browser=args.browser,
        headed=args.headed,
        step_timeout=args.hang_timeout,
        runs_dir=args.runs_dir,
        connect_click=args.connect_click,
        init_script=args.init_script,
        watch=args.watch,
        record_video=args.record_video,
        ray=args.ray,
        hosts=args.hosts,
        dashboard=dashboard_port(args.dashboard),
        dashboard_host=args.dashboard_host,
    )
    if cfg.hosts is not None and cfg.ray is None:
        raise SystemExit("lunarfleet: --hosts needs --ray (the hosts are Ray actors, one per machine)")
    _check_url(cfg)
    return cfg


def dashboard_port(value: object) -> int | None:
    """--dashboard [PORT], or the config file's `dashboard = true` / `dashboard = PORT`."""
    from orchestrator.config import DASHBOARD_PORT

    if value is True:
        return DASHBOARD_PORT
    if value is None or value is False:
        return None
    if isinstance(value, int) and value > 0:
        return value
    raise SystemExit(f"lunarfleet: dashboard must be true, false or a port number, not {value!r}")


def _check_url(cfg: RunConfig) -> None:
    if cfg.url is not None:
        try:
            cfg.tab_url(0, 8765, 4200)
        except (KeyError, IndexError, ValueError) as exc:
            raise SystemExit(f"lunarfleet: --url has an unknown placeholder {exc}; use {{port}}, {{env_id}}, {{max_steps}}") from None
        if "{port}" not in cfg.url and not cfg.init_script:
            print("[Setup] ! --url has no {port}: every tab gets the same URL, so the page must learn its port another "
                  "way (--init-script 'window.SOME_GLOBAL = {port}')", flush=True)


# What `main` runs for each of them.
COMMANDS = {"report": _report, "doctor": _doctor, "status": _status, "dashboard": _dashboard, "bench": _bench, "tabs": _tabs}


# ---- train, smoke, evaluate ------------------------------------------------------------
def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run configuration of train, smoke and evaluate (also of `lunarfleet.make_vec_env`'s options)."""
    cfg = _run_config(args)
    _check_sims(cfg)
    if args.command == "train":
        _train_config(cfg, args)
    else:
        cfg.models_dir = args.models_dir or cfg.run_dir / "models"
        cfg.json_path = args.json
        cfg.chaos = args.chaos
    if cfg.chaos:
        _chaos_config(cfg, args)
    _check_url(cfg)
    if args.command == "evaluate":
        cfg.load, cfg.eval_episodes, cfg.against_random = args.model, args.episodes, args.against_random
        cfg.deterministic = not args.stochastic
        if cfg.load is not None and not cfg.load.exists():
            raise SystemExit(f"lunarfleet: no checkpoint at {cfg.load}")
        _video_config(cfg, args)
    return cfg


def _video_config(cfg: RunConfig, args: argparse.Namespace) -> None:
    """`evaluate --video`: what it needs, checked before any tab opens."""
    cfg.video, cfg.video_episodes = args.video, args.video_episodes
    if cfg.video is None:
        return
    if not cfg.embedded:
        raise SystemExit("lunarfleet: --video records the embedded simulation's canvas; with --url, use --record-video instead")
    if cfg.video.is_dir():
        raise SystemExit(f"lunarfleet: --video {cfg.video} is a folder; give a file name such as {cfg.video / 'rover.mp4'}")
    from orchestrator.video import VideoUnavailable, check_video_support

    try:
        check_video_support()
    except VideoUnavailable as exc:
        raise SystemExit(f"lunarfleet: {exc}") from None


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The options train, smoke and evaluate share."""
    return RunConfig(
        command=args.command,
        envs=args.envs,
        timesteps=args.timesteps,
        timescale=args.timescale,
        max_episode_steps=args.max_episode_steps,
        url=args.url,
        runs_dir=args.runs_dir,
        save_freq=args.save_freq,
        seed=args.seed,
        stage=args.stage,
        base_port=args.base_port,
        app_port=args.app_port,
        step_timeout=args.step_timeout,
        straggler_grace=args.straggler_grace,
        connect_timeout=args.connect_timeout,
        browser=args.browser,
        allow_origins=args.allow_origin,
        recycle_steps=args.recycle_steps,
        recycle_hours=args.recycle_hours,
        headed=args.headed,
        progress=args.progress,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        ent_coef=args.ent_coef,
        vec_env=args.vec_env or ("inline" if args.sims_per_tab > 1 else DEFAULT_VEC_ENV),  # subproc drives one sim per tab
        sims_per_tab=args.sims_per_tab,
        connect_click=args.connect_click,
        init_script=args.init_script,
        watch=args.watch,
        record_video=args.record_video,
        ray=args.ray,
        hosts=args.hosts,
        dashboard=dashboard_port(args.dashboard),
        dashboard_host=args.dashboard_host,
    )


def _check_sims(cfg: RunConfig) -> None:
    if cfg.hosts is not None and cfg.ray is None:
        raise SystemExit("lunarfleet: --hosts needs --ray (the hosts are Ray actors, one per machine)")
    if cfg.ray is not None and cfg.vec_env != "inline":
        raise SystemExit("lunarfleet: --ray drives each host's tabs inline; --vec-env subproc does not apply")
    if cfg.sims_per_tab > MAX_SIMS_PER_TAB:
        raise SystemExit(f"lunarfleet: --sims-per-tab is at most {MAX_SIMS_PER_TAB} (the page's limit)")
    if cfg.sims_per_tab > 1 and cfg.vec_env != "inline":
        raise SystemExit("lunarfleet: --sims-per-tab needs --vec-env inline (a subproc worker drives one simulation)")
    if cfg.sims_per_tab > 1 and cfg.url is not None:
        raise SystemExit("lunarfleet: --sims-per-tab works with the embedded simulation only (your app would need the sims extension)")


def _train_config(cfg: RunConfig, args: argparse.Namespace) -> None:
    cfg.run_id = args.run_id or cfg.run_id
    cfg.chaos = args.chaos if not args.attempt else None  # a restarted attempt resumes; faults were injected
    if args.attempt:  # a restart resumes from the newest checkpoint, whatever the first start loaded
        args.load, args.no_auto_load = None, False
    cfg.hours = args.hours
    cfg.keep_checkpoints = args.keep_checkpoints
    if args.curriculum:
        cfg.curriculum = _curriculum(args.curriculum)
    cfg.models_dir = args.models_dir or Path("models")
    cfg.load = args.load
    cfg.auto_load = not args.no_auto_load
    cfg.adapt_spaces = args.adapt_spaces
    cfg.eval_freq, cfg.eval_episodes = args.eval_freq, args.eval_episodes
    cfg.deterministic = not args.eval_stochastic
    if cfg.eval_freq:
        cfg.eval_max_episode_steps = args.eval_max_episode_steps or eval_episode_cap(
            cfg.eval_freq, cfg.eval_episodes, cfg.max_episode_steps)
    if cfg.ray is not None and cfg.evaluates:
        raise SystemExit("lunarfleet: --eval-freq evaluates on a tab of this machine's pool, which a --ray run does not have; "
                         "score checkpoints with 'lunarfleet evaluate' instead")


def _curriculum(text: str) -> list[int]:
    """`--curriculum S1,S2,S3`: the step budgets of stages 1-3."""
    try:
        budgets = [int(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"lunarfleet: --curriculum takes step budgets like 200000,300000,500000, not {text!r}") from None
    if len(budgets) != 3 or min(budgets) <= 0:
        raise SystemExit("lunarfleet: --curriculum takes three positive step budgets (stages 1-3; stage 4 runs to the end)")
    return budgets


def _chaos_config(cfg: RunConfig, args: argparse.Namespace) -> None:
    """`--chaos SPEC`: a fault plan this run can carry out."""
    from browser_pool.faults import parse_spec

    cfg.chaos_overtime = args.chaos_overtime
    try:
        kinds = parse_spec(cfg.chaos)
    except ValueError as exc:
        raise SystemExit(f"lunarfleet: {exc}") from None
    needs_hooks = [k for k in ("hang", "disconnect", "garbage") if kinds.get(k)]
    if needs_hooks and cfg.url is not None:
        raise SystemExit(f"lunarfleet: --chaos {','.join(needs_hooks)} needs the embedded page's hooks; with --url only crash, browser and driver work")
    if (kinds.get("host") or kinds.get("host_tree")) and cfg.ray is None:
        raise SystemExit("lunarfleet: --chaos host and host_tree kill a Ray host; they need --ray (e.g. --ray local --hosts 2)")
    if kinds.get("trainer") and cfg.command != "train":
        raise SystemExit("lunarfleet: --chaos trainer needs 'lunarfleet train', whose supervisor restarts the trainer")


def _train_or_smoke(cfg: RunConfig, args: argparse.Namespace) -> int:
    if cfg.dashboard and args.no_monitor:
        raise SystemExit("lunarfleet: --dashboard shows what the monitor writes (status.json); drop --no-monitor")
    if _supervising(args):
        from orchestrator.supervisor import supervise

        if cfg.dashboard:  # every attempt serves the page with the same token, so its URL stays the same
            from orchestrator.dashboard import TOKEN_ENV, dashboard_token

            os.environ[TOKEN_ENV] = dashboard_token()

        return supervise(sys.argv[1:] if args.argv is None else args.argv, cfg.run_dir, args.max_restarts)
    from orchestrator.monitor_settings import MonitorSettings
    from orchestrator.training_run import run_training  # heavy imports only when needed

    monitor = MonitorSettings(
        enabled=not args.no_monitor,
        interval_s=args.monitor_interval,
        tab_memory_limit_mb=args.tab_memory_limit_mb,
        memory_floor_mb=args.memory_floor_mb,
    )
    summary = run_training(cfg, monitor)
    _wrap_up(cfg, args, summary)
    return _exit_code(summary)


def _wrap_up(cfg: RunConfig, args: argparse.Namespace, summary: RunSummary) -> None:
    """After the run: the report (train), the checkpoint check (smoke), the JSON verdict, the [Done] lines."""
    if cfg.command == "train" and (cfg.run_dir / "events.jsonl").exists():
        from orchestrator.report import build_report, print_report

        try:
            print_report(build_report(cfg.run_dir))
        except Exception as exc:  # the report is a courtesy; never fail a run for it
            print(f"[Report] could not write the report: {exc}", flush=True)
    if cfg.command == "smoke":
        _check_checkpoint_loads(summary)
    if cfg.json_path:
        summary.write(cfg.json_path)
    if cfg.command == "smoke" and args.models_dir is None and not args.keep:
        shutil.rmtree(cfg.models_dir, ignore_errors=True)
    print(
        f"[Done] {summary.status}: {summary.timesteps:,} steps, {summary.episodes} episodes, {summary.fps:,.0f} steps/s, "
        f"{summary.tab_restarts} tab restarts, {summary.elapsed_s:.0f} s. Run folder: {summary.run_dir}",
        flush=True,
    )
    if summary.error:
        print(f"[Done] error: {summary.error}", file=sys.stderr, flush=True)


def _exit_code(summary: RunSummary) -> int:
    if summary.status == "interrupted":
        return 130
    if summary.trainer_exceptions:
        return 75  # the trainer crashed: a supervisor restarts it from the newest checkpoint
    return 0 if summary.ok else 1


def _check_checkpoint_loads(summary: object) -> None:
    from stable_baselines3 import PPO

    path = getattr(summary, "checkpoint", None)
    ok = False
    if path:
        try:
            PPO.load(path, device="cpu")
            ok = True
        except Exception as exc:  # the verdict says why
            summary.error = f"checkpoint {path} does not load: {exc}"  # type: ignore[attr-defined]
    summary.checkpoint_loads = ok  # type: ignore[attr-defined]
    summary.ok = bool(summary.ok and ok and summary.timesteps > 0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
