"""LunarFleet as a library: PPO's envs in self-healing headless Chromium tabs.

- `lunarfleet.make_vec_env(n_envs)`: a Stable-Baselines3 `VecEnv` of N tabs (lunarfleet/vec_env.py);
- `gymnasium.make("LunarFleet/Rover-v0")`: one env, one tab (lunarfleet/rover_env.py), registered
  by `import lunarfleet`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import gymnasium

from lunarfleet.rover_env import ENV_ID, RoverEnv
from lunarfleet.vec_env import FleetVecEnv, make_vec_env

__all__ = ["ENV_ID", "FleetVecEnv", "RoverEnv", "__version__", "make_vec_env"]


def _version() -> str:
    """The installed package's version; in a checkout that is not installed, pyproject.toml's."""
    try:
        return version("lunarfleet")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])


__version__ = _version()

gymnasium.register(id=ENV_ID, entry_point="lunarfleet.rover_env:RoverEnv")
