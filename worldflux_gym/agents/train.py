"""Training a stable-baselines3 agent inside a dream env."""

from __future__ import annotations

import importlib.util
import io
import json
import time
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize
from tqdm.auto import tqdm

from worldflux_gym.agents.normalization import NormalizedObservation, freeze_normalization
from worldflux_gym.agents.recipes import Recipe, load_recipe
from worldflux_gym.core.checkpoint import atomic_write_file, to_json_bytes
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.paths import check_output_file
from worldflux_gym.core.validate import check_optional_positive_int, check_positive_float, check_seed
from worldflux_gym.data.policy import sidecar_path
from worldflux_gym.dream.registration import find_spec, make_sb3_vec_env
from worldflux_gym.version import __version__


class StopAfterSeconds(BaseCallback):
    """Ends ``learn()`` once ``seconds`` of wall-clock time have passed (a budget in time, not steps).

    With ``progress`` it shows a bar over the seconds with the steps taken so far: SB3's own bar
    counts towards ``total_timesteps``, which a time budget never reaches.
    """

    def __init__(self, seconds: float, progress: bool = False):
        super().__init__()
        self.seconds = float(seconds)
        self.progress = progress
        self.started = self.deadline = 0.0
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()
        self.deadline = self.started + self.seconds
        if self.progress:
            self.bar = tqdm(total=self.seconds, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}")

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(min(now, self.deadline) - self.started - self.bar.n)
            self.bar.set_postfix_str(f"{self.num_timesteps:,} steps", refresh=False)
        return now < self.deadline

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def default_recipe(dream_id: str) -> str:
    recipe = find_spec(dream_id).recipe
    if recipe is None:
        raise ConfigError(f"{dream_id} names no default agent recipe; pass one with --recipe")
    return recipe


def agent_device(recipe: Recipe) -> str:
    # PPO/A2C with MLP policies are faster on the CPU; off-policy algorithms use the GPU when present
    return "cpu" if recipe.algorithm in ("PPO", "A2C") else "auto"


def build_agent(
    recipe: Recipe, venv, seed: int = 0, tensorboard_dir: str | Path | None = None
) -> BaseAlgorithm:
    """The recipe's SB3 algorithm over ``venv`` (TensorBoard logs only when tensorboard is installed)."""
    if tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
        tensorboard_dir = None
    hyperparameters = dict(recipe.hyperparameters)
    if recipe.normalize:
        if not isinstance(venv.observation_space, spaces.Box) or len(venv.observation_space.shape) != 1:
            raise ConfigError(
                f"recipe {recipe.name}: normalize needs flat Box observations, the dream has "
                f"{venv.observation_space}; drop normalize from the recipe"
            )
        policy_kwargs = dict(hyperparameters.get("policy_kwargs", {}))
        policy_kwargs["features_extractor_class"] = NormalizedObservation
        hyperparameters["policy_kwargs"] = policy_kwargs
        venv = VecNormalize(venv, gamma=float(hyperparameters.get("gamma", 0.99)))
    return recipe.algorithm_class(
        recipe.policy,
        venv,
        seed=seed,
        device=agent_device(recipe),
        tensorboard_log=None if tensorboard_dir is None else str(tensorboard_dir),
        verbose=0,
        **hyperparameters,
    )


def train_agent(
    dream_id: str,
    out: str | Path,
    recipe: str | Path | Recipe | None = None,
    steps: int | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    tensorboard: bool = True,
    env_options: dict[str, Any] | None = None,
    max_seconds: float | None = None,
    overwrite: bool = False,
) -> BaseAlgorithm:
    """Train the recipe's SB3 agent for ``steps`` dreamed steps in ``dream_id``; save it to ``out``.

    ``recipe`` is a shipped recipe name (``agents/*.json``), a recipe file or a :class:`Recipe`;
    by default the dream id's own. ``checkpoint`` dreams with a fitted run instead of the shipped
    weights, ``env_options`` adds dream options (``docs/dream-options.md``).

    Writes ``out`` (SB3's ``.zip``) and ``out`` with a ``.json`` suffix: what the agent was trained
    in (dream id, real env, checkpoint, recipe, dream options, steps, seed, throughput, final dream
    return), which ``evaluate`` and ``audit`` read. TensorBoard logs go to ``<out>_tb/`` when
    tensorboard is installed. ``max_seconds`` stops training early when the wall-clock budget is
    spent. An existing agent at ``out`` is replaced only with ``overwrite=True`` (checked before
    training starts). Returns the trained SB3 model.

    >>> from worldflux_gym.agents import evaluate_agent, train_agent
    >>> agent = train_agent(
    ...     "WorldFlux/Ensemble-Pendulum-v0", "ppo.zip", recipe="ppo_pendulum", steps=4096, progress=False
    ... )
    >>> agent.num_timesteps
    4096
    >>> evaluate_agent("ppo.zip", episodes=2).env_id  # the real env the dream stands for
    'Pendulum-v1'
    """
    out = Path(out)
    if out.suffix != ".zip":
        raise ConfigError(f"the agent is saved as a stable-baselines3 .zip; got --out {out}")
    steps = check_optional_positive_int(steps, "steps")
    seed = check_seed(seed)
    if max_seconds is not None:
        max_seconds = check_positive_float(max_seconds, "max_seconds")
    check_output_file(out, "out", overwrite=overwrite, what="agent")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe or default_recipe(dream_id))
    steps = recipe.default_steps if steps is None else steps
    spec = find_spec(dream_id)
    options = {**recipe.env_options, **(env_options or {})}
    venv = make_sb3_vec_env(dream_id, num_envs=recipe.num_envs, checkpoint=checkpoint, **options)
    venv.seed(seed)
    agent = build_agent(recipe, venv, seed, out.with_name(out.stem + "_tb") if tensorboard else None)
    started = time.perf_counter()
    callback = StopAfterSeconds(max_seconds, progress) if max_seconds else None
    agent.learn(total_timesteps=steps, progress_bar=progress and callback is None, callback=callback)
    seconds = time.perf_counter() - started
    trained_in = agent.get_env()
    if isinstance(trained_in, VecNormalize):
        freeze_normalization(agent, trained_in)
    save_agent(agent, out)
    episodes = list(agent.ep_info_buffer or [])
    sidecar = {
        "library_version": __version__,
        "dream_id": dream_id,
        "real_env": spec.real_env,
        "checkpoint": str(Path(venv.dream.checkpoint).resolve()) if venv.dream.checkpoint else None,
        "observation": "real" if venv.dream.decodes else "latent",
        "algorithm": recipe.algorithm,
        "recipe": recipe.name,
        "env_options": options,
        "steps": int(agent.num_timesteps),
        "seed": seed,
        "train_seconds": round(seconds, 2),
        "fps": round(agent.num_timesteps / seconds, 1),
        "dream_return_last_100": (sum(e["r"] for e in episodes) / len(episodes)) if episodes else None,
    }
    atomic_write_file(sidecar_path(out), to_json_bytes(sidecar))
    venv.close()
    return agent


def save_agent(agent: BaseAlgorithm, path: Path) -> None:
    """``agent.save(path)``, all at once: SB3 writes in place, so a kill in the middle would leave a
    torn zip where the agent, or the one it replaces, was. The zip is built in memory and replaced
    as one file (:func:`atomic_write_file`: other agents may be saved into the folder meanwhile)."""
    zipped = io.BytesIO()
    agent.save(zipped)
    atomic_write_file(path, zipped.getvalue())


def read_training_summary(agent_path: str | Path) -> dict[str, Any]:
    return json.loads(sidecar_path(agent_path).read_text())
