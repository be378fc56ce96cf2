"""Task metrics: what each finished episode achieved beside its reward, and the reward-gaming rule.

Reward alone can mislead (issue 19): with per-step penalties, driving into a rock at once is
the cheapest way to stop paying them, so the mean reward rises while the rover never touches
an orb. So every place that shows reward also shows, over the same episodes, how often one
collected an orb, deposited one, collided, and how long episodes lasted, all computed here
from the info of each episode's last real step (`orbs_collected`, `orbs_deposited_construction`,
`orbs_deposited_berm`, `collision_occurred`: the embedded sim and the original app both send
them). Frozen steps (`tab_waiting`, training/outages.py) and episodes cut short by a tab or
worker failure say nothing of the policy and are skipped.

The rule that calls a run reward gaming lives here too (`gaming_verdict`), with its thresholds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from training.step_round import FAILURE_KEYS, TAB_WAITING

# The reward-gaming rule (`gaming_verdict`).
WINDOW = 100  # recent episodes the metrics and the rule look at (as SB3's ep_rew_mean)
MIN_EPISODES = 20  # episodes seen before the rule says anything
EARLY_END_FRACTION = 0.8  # at least this share of the recent episodes ended early (a collision, or another termination)...
SHORT_FRACTION_OF_LIMIT = 0.25  # ... after fewer steps on average than this share of --max-episode-steps...
BASELINE_EPISODES = 20  # ... while the mean reward is above that of the run's first episodes (at most this many)...
REWARD_RISE = 0.1  # ... by at least this share of the baseline's size (a random policy's noise is no rise)


def ended_by_failure(info: Mapping[str, Any]) -> bool:
    """An episode a tab or worker failure cut short: its reward and outcome are not the policy's."""
    return any(key in info for key in FAILURE_KEYS)


def is_episode_end(done: bool, info: Mapping[str, Any]) -> bool:
    """Whether this step ends a real episode of the policy (not a frozen step, not a failure's cut)."""
    return bool(done) and TAB_WAITING not in info and not ended_by_failure(info)


def _count(info: Mapping[str, Any], key: str) -> int | None:
    value = info.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class EpisodeOutcome:
    """One finished episode. None: the page's info does not carry that key (an app of one's own)."""

    length: int
    reward: float | None
    ended_early: bool  # terminated (a collision or another end) rather than running out of steps
    collided: bool | None
    orbs_collected: int | None
    deposited_construction: int | None
    deposited_berm: int | None

    @classmethod
    def from_info(cls, info: Mapping[str, Any], reward: float | None = None, length: int | None = None) -> EpisodeOutcome:
        """From the info of the episode's last real step; `reward`/`length` default to Monitor's."""
        monitor = info.get("episode") or {}
        if length is None:
            length = _count(monitor, "l") if "l" in monitor else _count(info, "episode_length")
        if reward is None and "r" in monitor:
            reward = float(monitor["r"])
        collided = info.get("collision_occurred")
        collided = bool(collided) if collided is not None else None
        return cls(
            length=int(length or 0),
            reward=reward,
            ended_early=bool(collided) or not info.get("TimeLimit.truncated", False),
            collided=collided,
            orbs_collected=_count(info, "orbs_collected"),
            deposited_construction=_count(info, "orbs_deposited_construction"),
            deposited_berm=_count(info, "orbs_deposited_berm"),
        )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(flags: Sequence[bool | None]) -> float | None:
    """The share of True among the episodes that report the flag; None when none does."""
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None


@dataclass(frozen=True)
class TaskSummary:
    """Means and fractions over some episodes; the names are the JSON and TensorBoard keys."""

    episodes: int
    mean_reward: float | None
    mean_length: float | None
    ended_early: float | None  # fraction of episodes
    collided: float | None
    orb_collected: float | None  # at least one orb picked up
    orb_deposited: float | None  # at least one orb dropped in the construction zone or the berm
    deposited_construction: float | None
    deposited_berm: float | None
    mean_orbs_collected: float | None
    mean_orbs_deposited: float | None  # construction zone and berm together

    @classmethod
    def of(cls, outcomes: Sequence[EpisodeOutcome]) -> TaskSummary:
        def counts(name: str) -> list[int]:
            return [v for v in (getattr(o, name) for o in outcomes) if v is not None]

        both = [o for o in outcomes if o.deposited_construction is not None and o.deposited_berm is not None]
        deposited = [(o.deposited_construction or 0) + (o.deposited_berm or 0) for o in both]
        return cls(
            episodes=len(outcomes),
            mean_reward=_mean([o.reward for o in outcomes if o.reward is not None]),
            mean_length=_mean([o.length for o in outcomes]),
            ended_early=_share([o.ended_early for o in outcomes]),
            collided=_share([o.collided for o in outcomes]),
            orb_collected=_share([v > 0 for v in counts("orbs_collected")]),
            orb_deposited=_share([v > 0 for v in deposited]),
            deposited_construction=_share([v > 0 for v in counts("deposited_construction")]),
            deposited_berm=_share([v > 0 for v in counts("deposited_berm")]),
            mean_orbs_collected=_mean(counts("orbs_collected")),
            mean_orbs_deposited=_mean(deposited),
        )

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskSummary:
        """Back from `to_json` (status.json, events); keys it lacks are unknown (None)."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: data.get(name) for name in names} | {"episodes": int(data.get("episodes") or 0)})

    def scalars(self, prefix: str = "task/") -> dict[str, float]:
        """For TensorBoard (`task/collided`, ...); keys the pages do not report are left out."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if v is not None}

    def short(self) -> str:
        """One line for progress output: what the episodes achieved."""
        if not self.episodes:
            return "no finished episodes yet"
        parts = [f"orb collected {_pct(self.orb_collected)}", f"deposited {_pct(self.orb_deposited)}",
                 f"collided {_pct(self.collided)}", f"mean length {_num(self.mean_length)}"]
        return " · ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


@dataclass(frozen=True)
class GamingVerdict:
    """The rule's figures: recent episodes end early and short, and (judged apart) whether reward rose."""

    ends_early_and_short: bool
    reward_rising: bool | None  # None: nothing to compare with (an evaluation without --against-random)
    episodes_seen: int
    window: int
    ended_early: float
    collided: float | None
    orb_collected: float | None
    orb_deposited: float | None
    mean_length: float
    length_limit: int
    reward_before: float | None
    reward_now: float | None
    baseline: str = "the run's first episodes"  # whose mean reward `reward_before` is

    @property
    def gaming(self) -> bool:
        return self.ends_early_and_short and self.reward_rising is True

    def to_json(self) -> dict[str, Any]:
        figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {"gaming": self.gaming, **figures, "message": self.sentence()}

    def facts(self) -> str:
        how = f"{_pct(self.ended_early)} of the last {self.window} episodes ended early"
        if self.collided is not None:
            how += f" ({_pct(self.collided)} in a collision)"
        return (f"{how} after {_num(self.mean_length)} steps on average (limit {self.length_limit:,}); "
                f"{_pct(self.orb_collected)} collected an orb, {_pct(self.orb_deposited)} deposited one")

    def sentence(self) -> str:
        """What the figures mean and what to do, in plain words."""
        if self.gaming:
            return (f"reward gaming: {self.facts()}, while the mean reward, {_num(self.reward_now, 1)}, is above "
                    f"that of {self.baseline}, {_num(self.reward_before, 1)}. The policy ends its episodes early on "
                    "purpose, which costs less than the per-step penalties of driving on; that is not the task, "
                    "and the higher reward is no sign of learning. Judge the run by its task metrics; make ending "
                    "early cost more than driving (rewards, stage) before training longer.")
        if self.ends_early_and_short:
            rose = "" if self.reward_rising is None else " (the mean reward did not rise)"
            return (f"episodes end early: {self.facts()}{rose}. Compare with random actions "
                    "(lunarfleet evaluate --against-random) before calling this learning.")
        return f"no reward gaming: {self.facts()}"


def gaming_verdict(
    recent: Sequence[EpisodeOutcome], episodes_seen: int, length_limit: int | None, reward_before: float | None,
    baseline: str = "the run's first episodes",
) -> GamingVerdict | None:
    """The rule, on the most recent episodes (at most WINDOW); None until MIN_EPISODES were seen.

    Gaming: at least EARLY_END_FRACTION of them ended early, their mean length is below
    SHORT_FRACTION_OF_LIMIT of the episode limit, and their mean reward is above `reward_before`
    (the run's first episodes, or random actions') by REWARD_RISE of its size. Without `reward_before` it only says whether
    episodes end early and short.
    """
    recent = list(recent)[-WINDOW:]
    if episodes_seen < MIN_EPISODES or not recent or not length_limit:
        return None
    summary = TaskSummary.of(recent)
    early, length = summary.ended_early or 0.0, summary.mean_length or 0.0
    short = early >= EARLY_END_FRACTION and length < SHORT_FRACTION_OF_LIMIT * length_limit
    now = summary.mean_reward
    rising = None if reward_before is None or now is None else now > reward_before + REWARD_RISE * abs(reward_before)
    return GamingVerdict(
        ends_early_and_short=short, reward_rising=rising, episodes_seen=episodes_seen, window=len(recent),
        ended_early=early, collided=summary.collided, orb_collected=summary.orb_collected,
        orb_deposited=summary.orb_deposited, mean_length=length,
        length_limit=int(length_limit), reward_before=reward_before, reward_now=now, baseline=baseline,
    )


class TaskTracker:
    """A run's finished episodes: the recent window for the metrics, the first ones as reward baseline."""

    def __init__(self, length_limit: int | None, window: int = WINDOW) -> None:
        self.length_limit = length_limit
        self.recent: deque[EpisodeOutcome] = deque(maxlen=window)
        self.first_rewards: list[float] = []
        self.seen = 0
        self.gaming = False  # the state last reported by `changed`
        self.latest: GamingVerdict | None = None  # the verdict of the last `changed` call, with today's figures

    def add_step(self, dones: Sequence[bool], infos: Sequence[Mapping[str, Any]]) -> None:
        """One vec step's dones and infos (as SB3 hands them to callbacks)."""
        for done, info in zip(dones, infos, strict=False):
            if is_episode_end(done, info):
                self.add(EpisodeOutcome.from_info(info))

    def add(self, outcome: EpisodeOutcome) -> None:
        self.recent.append(outcome)
        self.seen += 1
        if outcome.reward is not None and len(self.first_rewards) < BASELINE_EPISODES:
            self.first_rewards.append(outcome.reward)

    def summary(self) -> TaskSummary:
        return TaskSummary.of(list(self.recent))

    def verdict(self) -> GamingVerdict | None:
        # The baseline is at most half the episodes seen, so a short run compares its first half with its last.
        first = self.first_rewards[: max(self.seen // 2, 1)]
        recent = list(self.recent)[-max(self.seen - len(first), 1):]
        return gaming_verdict(recent, self.seen, self.length_limit, _mean(first))

    def gaming_now(self) -> dict[str, Any] | None:
        """The latest verdict's figures while the run is reward gaming (for progress events), else None."""
        return self.latest.to_json() if self.gaming and self.latest is not None else None

    def changed(self) -> GamingVerdict | None:
        """The verdict when the gaming state flipped since the last call (the first report is a flip to on)."""
        verdict = self.latest = self.verdict()
        if verdict is None or verdict.gaming == self.gaming:
            return None
        self.gaming = verdict.gaming
        return verdict


# ---- the task score: which of two policies does the task better (lunar_rover_ppo_best.zip) ----
# Stages 1-2 (driving, navigation): the task is to drive without colliding.
DRIVING_STAGES = (1, 2)
_SCORE_FORMATS = {"no collision": _pct, "mean length": _num, "mean orbs deposited": lambda v: _num(v, 2),
                  "orb collected": _pct}


@dataclass(frozen=True)
class TaskScore:
    """A policy's task score at one stage: figures compared in order, higher is better.

    Stages 1 and 2 (driving, navigation) ask the rover to drive without colliding: the share of
    episodes without a collision, then the mean episode length (driving on, not stopping early).
    Stages 3 and 4 ask for orbs: the mean orbs deposited per episode (construction zone and berm),
    then the share of episodes that collected an orb, then the share without a collision.
    Scores of different stages are not compared (`beats` is False): the stages reward different
    things, so when the curriculum moves on, the first score at the new stage is the best.
    A figure the page does not report counts as 0; for an app without `collision_occurred`, an
    episode that ended early counts as a collision.
    """

    stage: int
    values: tuple[float, ...]
    names: tuple[str, ...]

    def beats(self, other: TaskScore | None) -> bool:
        return other is None or (self.stage == other.stage and self.values > other.values)

    def text(self) -> str:
        """e.g. "stage 1: no collision 80%, mean length 912"."""
        shown = [f"{name} {_SCORE_FORMATS[name](v)}" for name, v in zip(self.names, self.values, strict=True)]
        return f"stage {self.stage}: " + ", ".join(shown)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "values": [round(v, 4) for v in self.values], "names": list(self.names),
                "text": self.text()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskScore:
        return cls(int(data["stage"]), tuple(float(v) for v in data["values"]), tuple(str(n) for n in data["names"]))


def actions_name(deterministic: bool) -> str:
    """How scored actions are named in lines, a score's basis and JSON: the policy's mean action or samples."""
    return "deterministic" if deterministic else "sampled"


def task_score(summary: TaskSummary, stage: int) -> TaskScore | None:
    """The one definition of the task score (see `TaskScore`); None without finished episodes."""
    if not summary.episodes:
        return None
    collided = summary.collided if summary.collided is not None else summary.ended_early
    no_collision = 1.0 - (collided or 0.0)
    if stage in DRIVING_STAGES:
        return TaskScore(stage, (no_collision, summary.mean_length or 0.0), ("no collision", "mean length"))
    return TaskScore(stage, (summary.mean_orbs_deposited or 0.0, summary.orb_collected or 0.0, no_collision),
                     ("mean orbs deposited", "orb collected", "no collision"))


@dataclass(frozen=True)
class TaskComparison:
    """Whether a model does its stage's task better than random actions on the same tabs, and why."""

    stage: int
    better: bool
    figures: tuple[str, ...]  # e.g. "collided 20% vs 72% (fewer)"

    def sentence(self) -> str:
        does = "does" if self.better else "does not do"
        return f"the model {does} the stage-{self.stage} task better than random actions: {'; '.join(self.figures)}"

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "better": self.better, "figures": list(self.figures), "message": self.sentence()}


def compare_with_random(model: TaskSummary, random: TaskSummary, stage: int) -> TaskComparison:
    """The learning check's rule, by task metrics only: at stages 1-2 the model collides in fewer
    episodes than random actions AND its episodes are longer on average; at stages 3-4 it collects
    an orb in more episodes AND deposits at least as many orbs per episode. Unknown figures fail."""
    def row(label: str, mine: float | None, theirs: float | None, higher: bool, show: Any, word: str) -> tuple[bool, str]:
        ok = mine is not None and theirs is not None and (mine > theirs if higher else mine < theirs)
        return ok, f"{label} {show(mine)} vs {show(theirs)} ({word if ok else 'not ' + word})"

    if stage in DRIVING_STAGES:
        rows = [row("collided", model.collided, random.collided, False, _pct, "fewer"),
                row("mean length", model.mean_length, random.mean_length, True, _num, "longer")]
    else:
        deposits = model.mean_orbs_deposited, random.mean_orbs_deposited
        at_least = deposits[0] is not None and deposits[1] is not None and deposits[0] >= deposits[1]
        rows = [row("collected an orb", model.orb_collected, random.orb_collected, True, _pct, "more"),
                (at_least, f"mean orbs deposited {_num(deposits[0], 2)} vs {_num(deposits[1], 2)} "
                           f"({'at least as many' if at_least else 'fewer'})")]
    return TaskComparison(stage, all(ok for ok, _ in rows), tuple(text for _, text in rows))
