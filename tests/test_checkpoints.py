"""Checkpoint files: atomic saves, newest-first discovery, cheap sanity checks, skipping bad ones."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from training import checkpoints
from training.trainer import CheckpointLoadError, PPOSettings, TrainSettings, load_or_create


def make_venv() -> DummyVecEnv:
    return DummyVecEnv([lambda: gym.make("CartPole-v1")])


@pytest.fixture(scope="module")
def venv() -> Iterator[DummyVecEnv]:
    env = make_venv()
    yield env
    env.close()


def tiny_ppo(venv: DummyVecEnv, steps: int = 0, seed: int = 0) -> PPO:
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=seed, device="cpu", verbose=0)
    model.num_timesteps = steps  # saved in the checkpoint: tells which one was loaded
    return model


@pytest.fixture(scope="module")
def good_bytes(venv: DummyVecEnv, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real, complete checkpoint (saved with 100 steps)."""
    path = checkpoints.save_atomic(tiny_ppo(venv, 100), tmp_path_factory.mktemp("good") / "model.zip")
    return path.read_bytes()


def write(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def settings(models_dir: Path, load: Path | None = None, auto_load: bool = True, **ppo: float) -> TrainSettings:
    return TrainSettings(
        total_timesteps=1000,
        models_dir=models_dir,
        load=load,
        auto_load=auto_load,
        ppo=PPOSettings(**{"n_steps": 16, "batch_size": 16, "n_epochs": 1, "ent_coef": 0.0, **ppo}),  # tiny_ppo's
    )


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


# ---- save_atomic -----------------------------------------------------------------------------
def test_save_atomic_writes_a_loadable_checkpoint_and_no_temp_files(venv: DummyVecEnv, tmp_path: Path) -> None:
    model = tiny_ppo(venv, 4321, seed=3)
    target = checkpoints.steps_path(tmp_path / "models" / "nested", 4321)
    assert checkpoints.save_atomic(model, target) == target
    assert target.name == "lunar_rover_ppo_4321_steps.zip"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name], "no temporary file left"
    assert checkpoints.looks_loadable(target) is None
    loaded = PPO.load(target, env=venv, device="cpu")
    assert loaded.num_timesteps == 4321
    for name, tensor in model.policy.state_dict().items():
        assert torch.equal(tensor, loaded.policy.state_dict()[name]), name


def test_save_atomic_replaces_an_existing_checkpoint(venv: DummyVecEnv, tmp_path: Path) -> None:
    target = checkpoints.interrupted_path(tmp_path)
    checkpoints.save_atomic(tiny_ppo(venv, 10), target)
    checkpoints.save_atomic(tiny_ppo(venv, 20), target)
    assert PPO.load(target, device="cpu").num_timesteps == 20
    assert [p.name for p in tmp_path.iterdir()] == ["lunar_rover_ppo_interrupted.zip"]


def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(
    venv: DummyVecEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = checkpoints.steps_path(tmp_path, 10)
    checkpoints.save_atomic(tiny_ppo(venv, 10), target)
    before = target.read_bytes()
    model = tiny_ppo(venv, 20)

    def half_a_save(handle: object) -> None:
        handle.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # e.g. Ctrl+C in the middle of a save

    monkeypatch.setattr(model, "save", half_a_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_atomic(model, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


# ---- candidates ------------------------------------------------------------------------------
def test_candidates_newest_first(tmp_path: Path, good_bytes: bytes) -> None:
    old = write(checkpoints.steps_path(tmp_path, 300), good_bytes, mtime=1_000_000)
    newest = write(checkpoints.interrupted_path(tmp_path), good_bytes, mtime=3_000_000)
    middle = write(checkpoints.steps_path(tmp_path, 20), good_bytes, mtime=2_000_000)
    # not checkpoints of this app, or not files
    write(tmp_path / "other_model.zip", good_bytes, mtime=9_000_000)
    write(tmp_path / "lunar_rover_ppo_1_steps.txt", b"x", mtime=9_000_000)
    write(tmp_path / ".lunar_rover_ppo_5_steps.zip.123.tmp", b"x", mtime=9_000_000)
    (tmp_path / "lunar_rover_ppo_dir.zip").mkdir()
    assert checkpoints.candidates(tmp_path) == [newest, middle, old]


def test_candidates_of_a_missing_or_empty_folder(tmp_path: Path) -> None:
    assert checkpoints.candidates(tmp_path / "nope") == []
    assert checkpoints.candidates(tmp_path) == []


# ---- looks_loadable --------------------------------------------------------------------------
def test_looks_loadable_accepts_a_real_checkpoint(tmp_path: Path, good_bytes: bytes) -> None:
    assert checkpoints.looks_loadable(write(tmp_path / "good.zip", good_bytes)) is None


def test_looks_loadable_truncated_zip(tmp_path: Path, good_bytes: bytes) -> None:
    half = write(tmp_path / "half.zip", good_bytes[: len(good_bytes) // 2])
    assert checkpoints.looks_loadable(half) is not None


def test_looks_loadable_rejects_a_checkpoint_cut_anywhere(tmp_path: Path, good_bytes: bytes) -> None:
    # (policy.pth is itself a stored zip, so a cut file may open as that inner zip: still refused)
    cut = tmp_path / "cut.zip"
    for length in [*range(0, len(good_bytes), 257), len(good_bytes) - 1]:
        cut.write_bytes(good_bytes[:length])
        assert checkpoints.looks_loadable(cut) is not None, f"cut at {length} of {len(good_bytes)} bytes"


def test_looks_loadable_text_file(tmp_path: Path) -> None:
    text = write(tmp_path / "notes.zip", b"this is not a checkpoint\n")
    reason = checkpoints.looks_loadable(text)
    assert reason is not None and "not a readable zip" in reason


def test_looks_loadable_empty_and_missing_files(tmp_path: Path) -> None:
    assert checkpoints.looks_loadable(write(tmp_path / "empty.zip", b"")) is not None
    assert checkpoints.looks_loadable(tmp_path / "missing.zip") is not None


def test_looks_loadable_zip_without_policy(tmp_path: Path, good_bytes: bytes) -> None:
    source = write(tmp_path / "good.zip", good_bytes)
    stripped = tmp_path / "no_policy.zip"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(stripped, "w") as dst:
        for name in src.namelist():
            if name != "policy.pth":
                dst.writestr(name, src.read(name))
    reason = checkpoints.looks_loadable(stripped)
    assert reason is not None and "policy.pth" in reason


def test_looks_loadable_zip_with_a_corrupt_member(tmp_path: Path) -> None:
    path = tmp_path / "bitrot.zip"
    payload = b"A" * 4096
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("data", b"{}")
        archive.writestr("policy.pth", payload)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(payload) + 100
    data[at] ^= 0xFF  # bit rot in the middle of policy.pth
    path.write_bytes(bytes(data))
    assert checkpoints.looks_loadable(path) == "corrupt member policy.pth"


# ---- load_or_create --------------------------------------------------------------------------
def test_load_or_create_skips_a_corrupt_newest_checkpoint(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    good = write(checkpoints.steps_path(tmp_path, 100), good_bytes, mtime=1_000_000)
    write(checkpoints.steps_path(tmp_path, 200), good_bytes[: len(good_bytes) // 2], mtime=2_000_000)
    said = Said()
    model, loaded_from = load_or_create(settings(tmp_path), venv, said)
    assert loaded_from == good
    assert model.num_timesteps == 100
    assert len(said.lines) == 1
    assert "Skipping checkpoint lunar_rover_ppo_200_steps.zip: " in said.lines[0]
    assert said.lines[0].split(": ", 1)[1].strip(), "the warning says why"


def test_load_or_create_skips_a_whole_zip_that_does_not_load(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    good = write(checkpoints.steps_path(tmp_path, 100), good_bytes, mtime=1_000_000)
    impostor = checkpoints.steps_path(tmp_path, 300)
    with zipfile.ZipFile(impostor, "w") as archive:
        archive.writestr("data", "{ not json")
        archive.writestr("policy.pth", b"nonsense")
    os.utime(impostor, (3_000_000, 3_000_000))
    write(checkpoints.interrupted_path(tmp_path), b"text, not a zip", mtime=2_000_000)
    said = Said()
    model, loaded_from = load_or_create(settings(tmp_path), venv, said)
    assert loaded_from == good and model.num_timesteps == 100
    assert len(said.lines) == 2
    assert "lunar_rover_ppo_300_steps.zip" in said.lines[0]
    assert "lunar_rover_ppo_interrupted.zip" in said.lines[1]


def test_load_or_create_with_only_bad_checkpoints_starts_fresh(venv: DummyVecEnv, tmp_path: Path) -> None:
    write(checkpoints.steps_path(tmp_path, 100), b"junk")
    said = Said()
    model, loaded_from = load_or_create(settings(tmp_path), venv, said)
    assert loaded_from is None and model.num_timesteps == 0
    assert model.n_steps == 16
    assert len(said.lines) == 1 and "Skipping" in said.lines[0]


def test_load_or_create_without_auto_load_ignores_checkpoints(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    write(checkpoints.steps_path(tmp_path, 100), good_bytes)
    model, loaded_from = load_or_create(settings(tmp_path, auto_load=False), venv, Said())
    assert loaded_from is None and model.num_timesteps == 0


def test_explicit_load_of_a_good_file(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    explicit = write(tmp_path / "elsewhere" / "mine.zip", good_bytes)
    write(checkpoints.steps_path(tmp_path, 999), good_bytes, mtime=9_000_000)  # newer, but not asked for
    model, loaded_from = load_or_create(settings(tmp_path, load=explicit), venv, Said())
    assert loaded_from == explicit and model.num_timesteps == 100


def test_a_resumed_model_trains_with_the_command_lines_ppo_settings_and_says_which_changed(
    venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes
) -> None:
    write(checkpoints.steps_path(tmp_path, 100), good_bytes)  # n_steps 16, batch 16, ent_coef 0
    said = Said()
    resumed = settings(tmp_path, n_steps=32, ent_coef=0.005)
    resumed.seed = 3
    model, _ = load_or_create(resumed, venv, said)
    assert (model.n_steps, model.batch_size, model.ent_coef, model.seed) == (32, 16, 0.005, 3)
    assert model.rollout_buffer.buffer_size == 32, "the rollout buffer is made for the new n_steps"
    assert said.lines == [
        "[Setup] lunar_rover_ppo_100_steps.zip trained with n_steps 16; training goes on with 32 (--n-steps)",
        "[Setup] lunar_rover_ppo_100_steps.zip trained with ent_coef 0.0; training goes on with 0.005 (--ent-coef)",
        "[Setup] lunar_rover_ppo_100_steps.zip trained with seed 0; training goes on with 3 (--seed)",
    ]
    model.learn(32, reset_num_timesteps=False)  # a rollout of the new size, and an update with it
    assert model.num_timesteps == 132


@pytest.mark.parametrize("kind", ["truncated", "text", "no policy", "missing"])
def test_explicit_load_of_a_corrupt_file_raises_naming_the_file(
    kind: str, venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes
) -> None:
    path = tmp_path / "chosen_checkpoint.zip"
    if kind == "truncated":
        write(path, good_bytes[: len(good_bytes) // 2])
    elif kind == "text":
        write(path, b"hello")
    elif kind == "no policy":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data", "{}")
    write(checkpoints.steps_path(tmp_path, 100), good_bytes)  # a good one is there, but not asked for
    with pytest.raises(CheckpointLoadError) as caught:
        load_or_create(settings(tmp_path, load=path), venv, Said())
    assert str(path) in str(caught.value)
    if kind == "missing":
        assert "no such file" in str(caught.value)


def test_explicit_load_of_a_whole_zip_that_is_not_a_model_raises_checkpoint_load_error(
    venv: DummyVecEnv, tmp_path: Path
) -> None:
    path = tmp_path / "chosen_checkpoint.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", "{ not json")
        archive.writestr("policy.pth", b"nonsense")
    with pytest.raises(CheckpointLoadError, match="chosen_checkpoint.zip"):
        load_or_create(settings(tmp_path, load=path), venv, Said())


def test_loaded_model_predicts(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    write(checkpoints.steps_path(tmp_path, 100), good_bytes)
    model, _ = load_or_create(settings(tmp_path), venv, Said())
    action, _ = model.predict(np.zeros((1, 4), dtype=np.float32), deterministic=True)
    assert action.shape == (1,)


# ---- a checkpoint trained with other spaces (the original app's turn rate limited to 0..1) ----------
class RoverSpaces(gym.Env):
    """No simulation: only the rover's spaces, as the tab env has them (or as an old checkpoint had them)."""

    def __init__(self, turn_low: float = -1.0) -> None:
        from training.tab_env import action_space, observation_space

        self.observation_space = observation_space()
        low = action_space().low.copy()
        low[1] = turn_low
        self.action_space = gym.spaces.Box(low=low, high=action_space().high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # noqa: ANN201
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, dtype=np.float32), {}

    def step(self, action):  # noqa: ANN001, ANN201
        return np.zeros(self.observation_space.shape, dtype=np.float32), 0.0, False, False, {}


def save_turn_limited(path: Path, steps: int = 1234) -> Path:
    old = DummyVecEnv([lambda: RoverSpaces(turn_low=0.0)])
    model = tiny_ppo(old, steps)
    checkpoints.save_atomic(model, path)
    old.close()
    return path


def test_a_checkpoint_with_other_action_bounds_is_explained_and_adapted_only_when_asked(tmp_path: Path) -> None:
    from training.tab_env import action_space

    path = save_turn_limited(tmp_path / "original_app_model.zip")
    sim = DummyVecEnv([RoverSpaces])
    with pytest.raises(CheckpointLoadError) as caught:
        load_or_create(settings(tmp_path, load=path), sim, Said())
    message = str(caught.value)
    assert str(path) in message and "turn rate action was limited to 0..1" in message
    assert "unable to turn right" in message and "--adapt-spaces" in message
    assert "speed" not in message and "dig" not in message, "only the dimension that differs is named"

    said = Said()
    adapting = settings(tmp_path, load=path)
    adapting.adapt_spaces = True
    model, loaded_from = load_or_create(adapting, sim, said)
    assert loaded_from == path and model.num_timesteps == 1234
    assert model.action_space == action_space(), "it goes on with the simulation's spaces"
    assert any("--adapt-spaces" in line for line in said.lines)
    model.learn(16, reset_num_timesteps=False)
    assert model.num_timesteps > 1234
    sim.close()


def test_other_shapes_cannot_be_adapted_and_say_so(venv: DummyVecEnv, tmp_path: Path, good_bytes: bytes) -> None:
    path = write(tmp_path / "cartpole.zip", good_bytes)  # CartPole: 4 observations, a discrete action
    sim = DummyVecEnv([RoverSpaces])
    adapting = settings(tmp_path, load=path)
    adapting.adapt_spaces = True
    with pytest.raises(CheckpointLoadError, match="shapes differ") as caught:
        load_or_create(adapting, sim, Said())
    assert "observations of shape (4,)" in str(caught.value)
    sim.close()
