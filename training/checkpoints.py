"""Checkpoint files: the original app's naming, atomic writes, and finding the newest good one.

SB3's `model.save` writes in place, so a kill during a save would leave a broken zip where the
last good model was. Here a checkpoint is written to a temporary name, flushed to disk and
renamed: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from stable_baselines3.common.base_class import BaseAlgorithm

PREFIX = "lunar_rover_ppo_"
STEPS_NAME = re.compile(r"^lunar_rover_ppo_(\d+)_steps\.zip$")


def steps_path(models_dir: Path, steps: int) -> Path:
    return models_dir / f"{PREFIX}{steps}_steps.zip"


def interrupted_path(models_dir: Path) -> Path:
    return models_dir / f"{PREFIX}interrupted.zip"


def best_path(models_dir: Path) -> Path:
    """The best model by task score (training/best_model.py); never auto-loaded (training resumes the newest)."""
    return models_dir / f"{PREFIX}best.zip"


def prune(models_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` highest-step periodic checkpoints; returns what was deleted."""
    if keep <= 0:
        return []
    numbered = sorted(
        (int(m.group(1)), p) for p in models_dir.glob(f"{PREFIX}*_steps.zip") if (m := STEPS_NAME.match(p.name))
    )
    doomed = [p for _, p in numbered[:-keep]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def save_atomic(model: BaseAlgorithm, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            model.save(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def candidates(models_dir: Path) -> list[Path]:
    """Checkpoints in a folder, newest first (by modification time, as the original app's auto-load)."""
    if not models_dir.is_dir():
        return []
    found = [p for p in models_dir.glob(f"{PREFIX}*.zip") if p.is_file() and p != best_path(models_dir)]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


def looks_loadable(path: Path) -> str | None:
    """None when the file is a complete SB3 zip, else why not (cheap: no unpickling)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a readable zip ({exc})"
    if bad is not None:
        return f"corrupt member {bad}"
    if "data" not in names or "policy.pth" not in names:
        return "not a Stable-Baselines3 checkpoint (no data/policy.pth inside)"
    return None
