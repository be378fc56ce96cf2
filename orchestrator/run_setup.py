"""A run's set-up, written once: the browser, the page server, the ports, the fleet of tabs, the
vec env and the monitor, as `train`, `smoke`, `evaluate`, `tabs` and `bench` open them.

`RunPieces` holds what a run has opened so far; `close()` stops all of it, newest first, also
when the set-up failed halfway, so no Chromium, page server or env worker is left behind.
`set_up_training` is the whole set-up of `train`, `smoke` and `evaluate`, in order; `tabs` and
`bench` use the steps they need (`find_browser`, `free_ports`, `serve_page`, `open_fleet`).

Also here: `page_pool_options`, the pool settings of the page options every command shares
(--connect-click, --init-script, --watch, --record-video), and the ffmpeg that records video.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_pool.chromium import BrowserChoice, LaunchOptions, find_chromium
from browser_pool.pool import PoolSettings
from browser_pool.processes import sweep_leftovers
from orchestrator.app_server import AppServer, start_app_server
from orchestrator.config import RunConfig
from orchestrator.dashboard import Dashboard, start_dashboard
from orchestrator.doctor import playwright_chromium
from orchestrator.events import EventLog, say
from orchestrator.fleet import Fleet
from orchestrator.monitor import Monitoring
from orchestrator.monitor_settings import MonitorSettings
from orchestrator.ports import free_block
from orchestrator.sizing import NotEnoughMemory, memory_refusal
from training.tab_link import LinkDeadlines, PageSettings
from training.task_metrics import actions_name
from training.vec_env import FleetEnvSettings, make_vec_env

if TYPE_CHECKING:
    from training.tab_vec_env import TabVecEnv

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# ---- the run's folder and its signals --------------------------------------------------------
def open_run_folder(cfg: RunConfig) -> EventLog:
    """The run's folder with its `config.json`, and its event log (`events.jsonl`)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.run_dir / "config.json")
    return EventLog(cfg.run_dir / "events.jsonl")


@contextlib.contextmanager
def stop_signals(handler: Any) -> Iterator[None]:
    """`handler` for Ctrl+C and SIGTERM inside the block, the handlers from before after it."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---- what a run has opened -------------------------------------------------------------------
@dataclass
class RunPieces:
    """The page server, fleet, vec env and monitor of one run; each is None until it is opened."""

    app: AppServer | None = None
    fleet: Fleet | None = None
    venv: TabVecEnv | None = None
    eval_venv: TabVecEnv | None = None  # the evaluation tab's (train --eval-freq)
    monitoring: Monitoring | None = None
    dashboard: Dashboard | None = None  # --dashboard: the run's web page (orchestrator/dashboard.py)

    def finish_monitoring(self, state: str, extra: dict[str, Any] | None = None) -> None:
        """The monitor's last sample, final status.json and last frame; its failure fails nothing."""
        monitoring, self.monitoring = self.monitoring, None
        if monitoring is not None:
            with contextlib.suppress(Exception):
                monitoring.finish(state, extra)

    def close_vec_env(self) -> None:
        venv, self.venv = self.venv, None
        eval_venv, self.eval_venv = self.eval_venv, None
        with contextlib.ExitStack() as stack:
            for v in (eval_venv, venv):
                if v is not None:
                    stack.callback(v.close)

    def close(self) -> None:
        """Stop what is still open, newest first: the monitor, the vec env (and its workers), the
        dashboard (after the final status, which it shows), the fleet (tabs, browser, driver), the
        page server; each one even if an earlier one fails."""
        app, self.app = self.app, None
        fleet, self.fleet = self.fleet, None
        dashboard, self.dashboard = self.dashboard, None
        with contextlib.ExitStack() as stack:
            if app is not None:
                stack.callback(app.close)
            if fleet is not None:
                stack.callback(fleet.stop)
            if dashboard is not None:
                stack.callback(dashboard.close)
            stack.callback(self.close_vec_env)
            stack.callback(self.finish_monitoring, "failed")


# ---- the steps ---------------------------------------------------------------------------------
def find_browser(wanted: str | None, tell: Callable[[str], None] = say, announce: bool = True) -> BrowserChoice:
    """Clean up after earlier runs whose process is gone, then choose the Chromium to launch."""
    for line in sweep_leftovers():
        tell(f"[Setup] Cleaned up after an earlier run: {line}")
    choice = find_chromium(wanted, playwright_chromium())
    if announce:
        tell(f"[Setup] Browser: {choice.description}")
    return choice


def free_ports(base: int, count: int, tell: Callable[[str], None] | None = None) -> list[int]:
    """`count` consecutive free ports from `base` on, or from the next free block (said to `tell`)."""
    start = free_block(base, count)
    if start != base and tell is not None:
        tell(f"[Setup] ! Ports {base}-{base + count - 1} are not all free; using {start}-{start + count - 1}")
    return list(range(start, start + count))


def serve_page(run: RunPieces, preferred_port: int, tell: Callable[[str], None] = say) -> int:
    """Serve the embedded simulation page; the port it is on (another one, said, if that is taken)."""
    run.app = start_app_server(preferred_port, tell)
    return run.app.port


def tab_urls(run: RunPieces, cfg: RunConfig, ports: list[int], first_env: int = 0, app_port: int | None = None) -> list[str]:
    """Each tab's page URL (past --envs: the evaluation tab's); the embedded page is served first (on
    `app_port`, default --app-port), unless the run uses its own (--url). `first_env`: the env number
    of the first tab (a Ray host's tabs follow those of the hosts before it)."""
    app_port = app_port or cfg.app_port
    if cfg.embedded:
        app_port = serve_page(run, app_port)
    urls = [cfg.tab_url(first_env + i, port, app_port) for i, port in enumerate(ports[: cfg.envs])]
    return urls + [cfg.eval_tab_url(port, app_port) for port in ports[cfg.envs :]]


def open_fleet(
    run: RunPieces, cfg: RunConfig, browser: BrowserChoice, ports: list[int], urls: list[str], events: EventLog
) -> Fleet:
    """The tab pool and its health channel; the browser and tabs open later (`Fleet.start`)."""
    settings = PoolSettings(
        hang_s=cfg.step_timeout,
        recycle_steps=cfg.recycle_steps,
        recycle_hours=cfg.recycle_hours,
        **page_pool_options(cfg),
    )
    launch = LaunchOptions(executable=browser.executable, headless=not cfg.headed)
    run.fleet = Fleet(urls, ports, launch, settings, events, cfg.token)
    return run.fleet


def start_monitoring(run: RunPieces, cfg: RunConfig, settings: MonitorSettings, events: EventLog, **info: Any) -> Monitoring:
    """The resource sampler, live view and status.json of the run (`orchestrator/monitor.py`);
    `info` goes into status.json too."""
    assert run.fleet is not None
    run_info = {"run_id": cfg.run_id, "run_dir": str(cfg.run_dir), "command": cfg.command, "envs": cfg.envs,
                "vec_env": cfg.vec_env, "target_timesteps": cfg.timesteps, **info}
    run.monitoring = Monitoring(settings, run.fleet, lambda: run.venv, cfg.run_dir, run_info, cfg.progress, events, say)
    run.monitoring.start()
    return run.monitoring


def open_dashboard(run: RunPieces, cfg: RunConfig, thumbnails: bool = True) -> Dashboard:
    """--dashboard: the run's page, and the thumbnails of its tabs (not with --ray: they are on other
    machines) taken on the pool's loop."""
    from orchestrator.thumbnails import THUMBNAILS_DIR, Thumbnailer

    thumbnailer = None
    if thumbnails and run.fleet is not None:
        thumbnailer = Thumbnailer(run.fleet.pool, cfg.run_dir / THUMBNAILS_DIR)
        thumbnailer.start(run.fleet.loop)
    try:
        run.dashboard = start_dashboard(cfg.run_dir, cfg.dashboard or 0, cfg.dashboard_host, say, thumbnailer)
    except BaseException:
        if thumbnailer is not None:
            thumbnailer.stop()
        raise
    return run.dashboard


def fleet_env_settings(cfg: RunConfig, ports: list[int], urls: list[str], health_port: int) -> FleetEnvSettings:
    """The vec env of a run's tabs, reporting to the fleet's health channel."""
    return FleetEnvSettings(
        ports=ports,
        page=PageSettings(
            timescale=cfg.timescale,
            max_episode_steps=cfg.max_episode_steps,
            stage=cfg.stage if cfg.embedded else None,
        ),
        deadlines=LinkDeadlines(step_s=cfg.step_timeout, connect_s=max(cfg.connect_timeout, 60.0)),
        health_port=health_port,
        run_token=cfg.token,
        page_token=cfg.token if cfg.embedded else None,
        origins=cfg.allowed_origins(urls[0]),
        vec_env=cfg.vec_env,
        sims_per_tab=cfg.sims_per_tab,
        straggler_s=cfg.straggler_grace,
    )


def open_vec_env(run: RunPieces, settings: FleetEnvSettings, events: EventLog) -> TabVecEnv:
    """The vec env (`training.vec_env.make_vec_env`); each respawned env worker is an event."""
    assert run.fleet is not None
    run.venv = make_vec_env(
        settings,
        on_respawn=lambda i, why: events("worker_respawned", {"env": i, "cause": why}),
        on_outage=run.fleet.record_outage,
    )
    return run.venv


def open_eval_env(run: RunPieces, cfg: RunConfig, settings: FleetEnvSettings, port: int) -> TabVecEnv:
    """The evaluation tab's vec env (--eval-freq): one simulation on its own port, inline, with the
    evaluation episodes' own limit; it reports to the fleet like the others, so its tab is healed."""
    page = replace(settings.page, max_episode_steps=cfg.eval_max_episode_steps)
    eval_settings = replace(settings, ports=[port], page=page, vec_env="inline", sims_per_tab=1)
    assert run.fleet is not None
    run.eval_venv = make_vec_env(eval_settings, on_outage=run.fleet.record_outage)
    return run.eval_venv


def connect_tabs(run: RunPieces, cfg: RunConfig) -> None:
    """Open the browser and every tab, and wait until each page is connected to its env."""
    assert run.fleet is not None and run.venv is not None
    # Every port listens before any tab opens: a page like the original app gives up after ~10 tries.
    run.venv.get_attr("port")
    run.fleet.start()
    run.fleet.wait_connected(cfg.connect_timeout)
    if run.monitoring is not None:
        run.monitoring.running()


def set_up_training(run: RunPieces, cfg: RunConfig, monitor: MonitorSettings, events: EventLog) -> None:
    """All that `train`, `smoke` and `evaluate` open before the first step, into `run`, until every
    tab is connected. (`lunarfleet.make_vec_env` opens the same, without the monitor.) With `--ray`,
    the tabs are on the hosts of a Ray cluster (`ray_fleet.py`)."""
    if cfg.ray is not None:
        from orchestrator.ray_fleet import set_up_on_ray  # Ray is imported only when a run asks for it

        set_up_on_ray(run, cfg, events)
        if monitor.enabled:  # status.json: the tabs by host (their processes are on other machines: no CPU/memory)
            start_monitoring(run, cfg, monitor, events, ray=cfg.ray, machines=run.fleet.machines).running()
        if cfg.dashboard:
            open_dashboard(run, cfg, thumbnails=False)
        return
    settings = open_tab_fleet(run, cfg, monitor, events)
    if cfg.sims_per_tab > 1:
        say(f"[Setup] {cfg.envs} tabs x {cfg.sims_per_tab} simulations = {settings.num_envs} environments for PPO "
            f"(rollout {cfg.n_steps} x {settings.num_envs} = {cfg.n_steps * settings.num_envs:,} steps)")
    open_vec_env(run, settings, events)
    if cfg.evaluates and run.fleet is not None:
        ports = run.fleet.ports
        say(f"[Setup] Evaluation tab: tab {len(ports)} (port {ports[-1]}), every {cfg.eval_freq:,} steps "
            f"{cfg.eval_episodes} {actions_name(cfg.deterministic)} episodes of at most {cfg.eval_max_episode_steps:,} steps")
        open_eval_env(run, cfg, settings, ports[-1])
    connect_tabs(run, cfg)


def open_tab_fleet(run: RunPieces, cfg: RunConfig, monitor: MonitorSettings, events: EventLog) -> FleetEnvSettings:
    """The page server, the fleet (its tabs not opened yet; with --eval-freq the evaluation tab is the
    last) and the monitor, into `run`; the settings of the envs that will serve the training tabs'
    ports. Refused first if memory is short."""
    tabs = cfg.envs + (1 if cfg.evaluates else 0)
    refusal = memory_refusal(tabs, floor_mb=monitor.memory_floor_mb, vec_env=cfg.vec_env)
    if refusal:
        raise NotEnoughMemory(refusal)  # before opening a single tab
    browser = find_browser(cfg.browser)
    ports = free_ports(cfg.base_port, tabs, say)
    urls = tab_urls(run, cfg, ports)
    train_ports = ports[: cfg.envs]
    on = f"on ports {train_ports[0]}-{train_ports[-1]}" if cfg.envs > 1 else f"on port {train_ports[0]}"
    if cfg.sims_per_tab > 1:
        where = f"{cfg.envs} tab{'s' if cfg.envs > 1 else ''} of {cfg.sims_per_tab} simulations {on}"
    else:
        where = f"{cfg.envs} parallel environment{'s' if cfg.envs > 1 else ''} {on}"
    say(f"[Setup] Creating {where}; page {urls[0]}")
    fleet = open_fleet(run, cfg, browser, ports, urls, events)
    if monitor.enabled:
        start_monitoring(run, cfg, monitor, events)
    if cfg.dashboard:
        open_dashboard(run, cfg)
    return fleet_env_settings(cfg, train_ports, urls, fleet.health_port)


# ---- page options every command shares ---------------------------------------------------------
def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def page_pool_options(cfg: RunConfig, tell: Callable[[str], None] = say) -> dict[str, Any]:
    """PoolSettings fields for --connect-click, --init-script, --watch and --record-video."""
    return {
        "connect_click": cfg.connect_click,
        "init_script": cfg.init_script,
        "watch_first": _watch_first(cfg, tell),
        "video_dir": _video_dir(cfg, tell),
        "video_s": cfg.record_video or 60.0,
    }


def _watch_first(cfg: RunConfig, tell: Callable[[str], None]) -> bool:
    if not cfg.watch:
        return False
    if has_display():
        tell("[Setup] --watch: tab 1 opens in a visible browser window (closing it only sends tab 1 back to headless)")
        return True
    tell("[Setup] ! --watch: there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set), so tab 1 "
         "stays headless like the others. --record-video S records it into the run folder instead.")
    return False


def _video_dir(cfg: RunConfig, tell: Callable[[str], None]) -> str | None:
    if not cfg.record_video:
        return None
    ffmpeg, how = video_ffmpeg(link=True)
    if ffmpeg is None:
        tell(f"[Setup] ! --record-video: {how}; carrying on without a video")
        return None
    video_dir = str(cfg.run_dir / "videos")
    tell(f"[Setup] Recording tab 1 for {cfg.record_video:g} s from when it opens into {video_dir}/ "
         f"(then tab 1 reloads unrecorded); ffmpeg: {how}")
    return video_dir


def video_ffmpeg(link: bool = False) -> tuple[Path | None, str]:
    """The ffmpeg Playwright will record video with, and how it was found.

    Playwright looks only at its own build (`playwright install ffmpeg`, a download that some
    machines cannot make). Where that is missing, an ffmpeg from the imageio-ffmpeg package or
    the PATH serves as well (it needs VP8 and MJPEG): with `link`, it is linked in at the place
    Playwright looks, which is what `playwright install ffmpeg` would fill.
    """
    target = _playwright_ffmpeg_path()
    if target is not None and os.access(target, os.X_OK):
        return target, f"Playwright's own ({target})"
    source = _other_ffmpeg()
    missing = ("no ffmpeg to record with: run 'python -m playwright install ffmpeg', "
               "or 'pip install imageio-ffmpeg', or install ffmpeg (apt-get install ffmpeg)")
    if source is None:
        return None, missing
    if target is None:
        return None, f"{missing} (found {source}, but Playwright uses only its own ffmpeg on {sys.platform})"
    if not link:
        return Path(source), f"{source}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # a dangling link from an earlier install
        target.symlink_to(source)
    except OSError as exc:
        return None, f"{missing} (could not link {source} as {target}: {exc})"
    return target, f"{source}, linked as {target}"


def _other_ffmpeg() -> str | None:
    """An executable ffmpeg from imageio-ffmpeg, else from the PATH."""
    candidates: list[str] = []
    with contextlib.suppress(Exception):
        import imageio_ffmpeg  # optional: pip install imageio-ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    if found := shutil.which("ffmpeg"):
        candidates.append(found)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def _playwright_ffmpeg_path() -> Path | None:
    """Where Playwright's driver looks for its ffmpeg on this machine (Linux x64 only here)."""
    if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "AMD64"):
        return None
    try:
        import playwright

        package = Path(playwright.__file__).parent / "driver" / "package"
        browsers = json.loads((package / "browsers.json").read_text())["browsers"]
        revision = next(b["revision"] for b in browsers if b["name"] == "ffmpeg")
    except (OSError, ValueError, KeyError, StopIteration, ImportError):
        return None
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    if root == "0":
        base = package / ".local-browsers"
    elif root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ms-playwright"
    return base / f"ffmpeg-{revision}" / "ffmpeg-linux"
