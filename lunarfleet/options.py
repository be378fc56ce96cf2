"""The options of `lunarfleet.make_vec_env` and `LunarFleet/Rover-v0`: the CLI's own names, read by
the CLI's own parser (`orchestrator/cli_parser.py`), so their types, defaults and checks are the
ones `lunarfleet train` has."""

from __future__ import annotations

import contextlib
import io
import re
from typing import Any

from orchestrator.cli import config_from_args
from orchestrator.cli_parser import build_parser
from orchestrator.config import RunConfig
from orchestrator.monitor_settings import MonitorSettings

# The options of `lunarfleet train` that concern the envs (the others are PPO's or the run's).
ENV_OPTIONS = (
    "timescale", "max_episode_steps", "stage", "seed", "base_port", "app_port", "browser", "headed",
    "step_timeout", "straggler_grace", "connect_timeout", "allow_origin", "recycle_steps", "recycle_hours",
    "vec_env", "connect_click", "init_script", "watch", "record_video", "runs_dir", "memory_floor_mb",
)


def env_options(
    caller: str, envs: int, url: str | None, sims_per_tab: int, options: dict[str, Any], *,
    accepted: tuple[str, ...] = ENV_OPTIONS, arguments: str = "n_envs, url, sims_per_tab",
) -> tuple[RunConfig, MonitorSettings]:
    """The run configuration of these options (`arguments` are the caller's own, named in the error);
    TypeError for an unknown one, ValueError for a bad value."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{caller}: unknown option(s) {', '.join(unknown)}; the options are {arguments}, "
                        f"{', '.join(accepted)} (as `lunarfleet train --help` describes them)")
    argv = ["train", "--envs", str(envs), "--sims-per-tab", str(sims_per_tab), *_flags({"url": url, **options})]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
    except SystemExit as exc:  # argparse's error, or the CLI's own check of the values
        said = errors.getvalue().strip().splitlines()
        reason = said[-1].split("error: ", 1)[-1] if said else str(exc.code).removeprefix("lunarfleet: ")
        raise ValueError(f"{caller}: {_option_names(reason)}") from None
    cfg.command = caller
    cfg.run_id = cfg.run_id.rsplit("-", 1)[0] + "-library"
    return cfg, MonitorSettings(enabled=False, memory_floor_mb=args.memory_floor_mb)


def wants_run_folder(options: dict[str, Any]) -> bool:
    """A run folder (config.json, events.jsonl) only when asked for: a library writes no files unasked."""
    return options.get("runs_dir") is not None


def _flags(options: dict[str, Any]) -> list[str]:
    """name=value as the CLI's flags: True a bare flag, False and None nothing, a list one flag per item."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def _option_names(text: str) -> str:
    """The CLI's words for an option (`argument --stage`, `--vec-env`) as this API's (`stage`, `vec_env`)."""
    return re.sub(r"(?:argument )?--([a-z][a-z-]*)", lambda m: m[1].replace("-", "_"), text)
