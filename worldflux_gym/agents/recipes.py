"""Agent recipes: an SB3 algorithm with the hyperparameters that work in a dream env.

A recipe is one JSON file in the repository's ``agents/`` folder (shipped inside the package as
``worldflux_gym/agents/shipped``, a link in the source tree), or any path. It names the
algorithm, the policy, how many dreamed envs run side by side, a default training length and the
algorithm's keyword arguments, passed to SB3 unchanged. ``normalize`` trains behind SB3's
``VecNormalize`` and leaves the observation statistics inside the saved policy
(``agents/normalization.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from worldflux_gym.core.errors import ConfigError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "A2C": A2C, "SAC": SAC, "TD3": TD3, "DQN": DQN}


@dataclass(frozen=True)
class Recipe:
    name: str
    algorithm: str
    policy: str = "MlpPolicy"
    num_envs: int = 64
    default_steps: int = 100_000
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    env_options: dict[str, Any] = field(default_factory=dict)  # DreamBatch options (starts, horizon...)
    normalize: bool = False  # VecNormalize observations and rewards while training
    description: str = ""

    @property
    def algorithm_class(self) -> type[BaseAlgorithm]:
        return ALGORITHMS[self.algorithm]


RECIPES_DIR = Path(__file__).resolve().parent / "shipped"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``"ppo_walker"``) or a recipe JSON file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = RECIPES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(
            f"no agent recipe {str(name_or_path)!r}; shipped recipes: {available_recipes()}, "
            "or give the path of a recipe JSON file"
        )
    data = json.loads(path.read_text())
    known = {f.name for f in fields(Recipe)}
    if set(data) - known:
        raise ConfigError(
            f"recipe {path} has unknown keys {sorted(set(data) - known)}; valid: {sorted(known)}"
        )
    if data.get("algorithm") not in ALGORITHMS:
        raise ConfigError(
            f"recipe {path}: algorithm {data.get('algorithm')!r} is not one of {sorted(ALGORITHMS)}"
        )
    data.setdefault("name", path.stem)
    return Recipe(**data)
