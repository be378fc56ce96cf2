"""The run's configuration: every setting in one dataclass, saved into the run folder."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from training.outages import STRAGGLER_S
from training.vec_env import DEFAULT_VEC_ENV

DEFAULT_URL = "http://localhost:{app_port}/?wsPort={port}&maxSteps={max_steps}"
# The embedded page also learns its seed, stage and run token from its URL.
EMBEDDED_EXTRAS = "&seed={seed}&stage={stage}&token={token}"
# The embedded page's WebSocket in a shared worker, out of Playwright's sight: about half the CPU
# per step on both sides (webapp/socket_link.js, lunarfleet bench). Not for `lunarfleet tabs`,
# which watches the pages' sockets through Playwright.
WORKER_SOCKET = "&socket=worker"
CHAOS_OVERTIME_S = 600.0  # --chaos-overtime: how long training may go on past --timesteps for planned faults
MAX_SIMS_PER_TAB = 64  # the page's limit (webapp/params.js)
# --eval-freq: an evaluation runs at most this share of the steps trained between two evaluations,
# by capping its episodes (--eval-max-episode-steps defaults to what keeps it there).
EVAL_COST_SHARE = 0.1
EVAL_SEED_OFFSET = 1000
DASHBOARD_PORT = 4280  # --dashboard's default port (orchestrator/dashboard.py)
DASHBOARD_HOST = "127.0.0.1"  # loopback only unless --dashboard-host says otherwise  # the evaluation tab's episodes are seeded apart from the training tabs'


def eval_episode_cap(eval_freq: int, eval_episodes: int, max_episode_steps: int) -> int:
    """The default --eval-max-episode-steps: episodes x cap <= EVAL_COST_SHARE x eval_freq, within the
    training episode limit (so the evaluation's steps are at most a tenth of the training's)."""
    return max(1, min(max_episode_steps, int(EVAL_COST_SHARE * eval_freq) // eval_episodes))


@dataclass
class RunConfig:
    command: str = "train"
    envs: int = 4
    timesteps: int = 1_000_000
    timescale: float = 2.0
    max_episode_steps: int = 10_000
    url: str | None = None  # None: the embedded simulation, served by us
    models_dir: Path = Path("models")
    runs_dir: Path = Path("runs")
    save_freq: int = 10_000
    load: Path | None = None
    auto_load: bool = True
    adapt_spaces: bool = False
    seed: int = 0
    stage: int = 1
    base_port: int = 8765
    app_port: int = 4200
    step_timeout: float = 10.0
    straggler_grace: float = STRAGGLER_S  # the other tabs wait this long for a slow one (training/outages.py)
    connect_timeout: float = 60.0
    allow_origins: list[str] = field(default_factory=list)  # extra page origins allowed to connect
    browser: str | None = None
    headed: bool = False
    chaos: str | None = None
    chaos_overtime: float = CHAOS_OVERTIME_S
    json_path: Path | None = None
    progress: str = "auto"  # auto, bar, lines
    n_steps: int = 2048
    hours: float | None = None
    eval_episodes: int = 20  # evaluate: episodes to score; train: episodes per evaluation (--eval-episodes)
    eval_freq: int = 0  # train: evaluate every this many steps on an extra tab (0: never)
    eval_max_episode_steps: int = 0  # train: the evaluation episodes' limit (0: eval_episode_cap)
    against_random: bool = False  # evaluate: score random actions too, on the same tabs
    deterministic: bool = True  # evaluate, train's evaluations: the policy's mean action (False: sampled, --stochastic, --eval-stochastic)
    video: Path | None = None  # evaluate: record tab 1's episodes into this file (orchestrator/video.py)
    video_episodes: int = 2
    recycle_steps: int = 0
    recycle_hours: float = 0.0
    keep_checkpoints: int = 0
    curriculum: list[int] | None = None  # stage budgets in steps
    batch_size: int = 64
    ent_coef: float = 0.01  # PPO entropy bonus (the original app's)
    vec_env: str = DEFAULT_VEC_ENV
    sims_per_tab: int = 1  # simulations per tab of the embedded page (URL parameter sims)
    connect_click: str | None = None  # selector to click once a page loaded (click-to-connect pages)
    init_script: str | None = None  # JS run before the page's own scripts; {port}, {env_id} filled in
    watch: bool = False  # tab 1 in a visible window, where there is a display
    record_video: float = 0.0  # seconds of tab 1 to record into <run>/videos/ (0: none)
    ray: str | None = None  # --ray ADDRESS: tabs on the hosts of a Ray cluster ("local", "auto", HOST:PORT)
    hosts: int | None = None  # --hosts N (None: every machine offering lunarfleet_host; 2 with "local")
    dashboard: int | None = None  # --dashboard PORT: the run's web page (orchestrator/dashboard.py)
    dashboard_host: str = DASHBOARD_HOST  # --dashboard-host: where it listens (loopback unless asked)
    run_id: str = ""
    token: str = ""

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{self.command}"
        if not self.token:
            self.token = secrets.token_hex(8)

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run_id

    @property
    def _embedded_template(self) -> str:
        return DEFAULT_URL + EMBEDDED_EXTRAS + ("" if self.command == "tabs" else WORKER_SOCKET)

    def tab_url(self, env_id: int, port: int, app_port: int) -> str:
        template = self.url or self._embedded_template
        if self.embedded and self.sims_per_tab > 1:
            template += f"&sims={self.sims_per_tab}"
        if self.embedded and env_id == 0 and (self.watch or self.record_video):
            template += "&watch=1"  # the embedded page draws under automation only when asked
        return template.format(
            app_port=app_port,
            port=port,
            env_id=env_id,
            max_steps=self.max_episode_steps,
            seed=self.seed + env_id,
            stage=self.stage,
            token=self.token,
        )

    @property
    def evaluates(self) -> bool:
        """Training evaluates on an extra tab of its own (--eval-freq)."""
        return self.command == "train" and self.eval_freq > 0

    def eval_tab_url(self, port: int, app_port: int) -> str:
        """The evaluation tab's page: one simulation, its own episode limit and seed, never drawn."""
        template = self.url or self._embedded_template
        return template.format(app_port=app_port, port=port, env_id=self.envs, max_steps=self.eval_max_episode_steps,
                               seed=self.seed + EVAL_SEED_OFFSET, stage=self.stage, token=self.token)

    def allowed_origins(self, page_url: str) -> list[str | None]:
        """Only the app's own origin (plus any the user adds) may open an env socket."""
        parts = urlsplit(page_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        return [origin, *self.allow_origins]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("token")  # a secret of this run only
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
