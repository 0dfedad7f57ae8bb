"""Gymnasium ids for the shipped dream envs, read from one declarative JSON spec per env.

The specs live in the top-level ``envs/`` folder of the repository (``envs/dreamer_walker_v1.json``
...), shipped inside the package as ``worldflux_gym/dream/shipped`` (a link to ``envs/`` in the
source tree, real files in a wheel). A spec names the id, the real env, the family and preset, the
checkpoint folder (relative to ``envs/``), the horizon, the recipe that fits the weights and the
validation figures the shipping script measured::

    {"id": "WorldFlux/Dreamer-Walker-v1", "real_env": "Walker2d-v5", "family": "dreamer",
     "preset": "small", "checkpoint": "checkpoints/dreamer_walker_v1", "max_episode_steps": 1000,
     "fit": {...}, "validation": {...}}

Each id is registered with an ``entry_point`` (a :class:`DreamEnv`) and a ``vector_entry_point``
(a :class:`DreamVectorEnv`), so both ``gym.make`` and ``gym.make_vec`` work. By default an id
mirrors its real env: same spaces, starts from the real env's ``reset()``, same episode limit
(the spec's ``max_episode_steps``). A family that decodes no observations (TD-MPC2) observes its
latent ``Box`` instead; ``EncodeObservation(real_env, model)`` gives the real env the same space.
``gym.make(id, checkpoint=DIR)`` uses any fitted run instead of the shipped weights; every
``DreamEnv`` option (``starts``, ``deterministic`` ...) passes through.

A spec may declare ``variants``: more ids over the same weights with other default options,
named by inserting the variant's name before the version. ``Ensemble-Walker-v5``'s ``Branched``
variant, ``WorldFlux/Ensemble-Walker-Branched-v5``, is the dream to *train* in (short dreams from
real mid-episode states, the ensemble's disagreement as a cost); the plain id, which mirrors the
real env, is the one whose dreamed return estimates a policy's real return::

    "variants": {"Branched": {"starts": "branched", "max_episode_steps": 50, ...}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from worldflux_gym.core.checkpoint import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE
from worldflux_gym.core.errors import CheckpointError, ConfigError


def _envs_dir() -> Path:
    shipped = Path(__file__).resolve().parent / "shipped"
    if shipped.is_dir():
        return shipped
    # a checkout made without symlinks (core.symlinks=false) holds envs/ only at the top
    return Path(__file__).resolve().parents[2] / "envs"


ENVS_DIR = _envs_dir()
_ID_PATTERN = re.compile(r"^WorldFlux/[A-Za-z0-9]+-[A-Za-z0-9]+-v\d+$")
_VARIANT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_REQUIRED = ("id", "real_env", "family", "preset", "checkpoint", "max_episode_steps")


@dataclass(frozen=True)
class DreamEnvSpec:
    """One shipped dream env, as its JSON file declares it."""

    id: str
    real_env: str
    family: str
    preset: str
    checkpoint: Path  # absolute
    max_episode_steps: int
    path: Path  # the JSON file
    fit: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None  # the agent recipe (agents/*.json) that trains best in this dream
    options: dict[str, Any] = field(default_factory=dict)  # the id's default dream options
    variant: str | None = None  # the name of the variant this spec is, None for the spec's own id
    variant_of: str | None = None  # a variant's plain id: the one whose dreamed return is an estimate
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> options

    def with_variant(self, name: str) -> DreamEnvSpec:
        """The spec of variant ``name``: the same weights under its own id and default options."""
        if name not in self.variants:
            raise ConfigError(
                f"{self.path}: {self.id} has no variant {name!r}; its variants: {sorted(self.variants)}"
            )
        options = dict(self.variants[name])
        family_env, version = self.id.rsplit("-", 1)
        return replace(
            self,
            id=f"{family_env}-{name}-{version}",
            max_episode_steps=int(options.pop("max_episode_steps", self.max_episode_steps)),
            options=options,
            variant=name,
            variant_of=self.id,
            variants={},
        )

    def with_variants(self) -> list[DreamEnvSpec]:
        """This spec, then each of its variants."""
        return [self] + [self.with_variant(name) for name in sorted(self.variants)]

    @property
    def weights_present(self) -> bool:
        return all((self.checkpoint / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE))

    def fit_command(self, out: str = "DIR") -> str:
        return f"worldflux-gym fit {self.real_env} --model {self.family}:{self.preset} --out {out}"


def read_spec(path: str | Path) -> DreamEnvSpec:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"the dream env spec {path} is not valid JSON: {err}") from err
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"the dream env spec {path} lacks {missing} (required: {list(_REQUIRED)})")
    if not _ID_PATTERN.match(data["id"]):
        raise ConfigError(f"{path}: id {data['id']!r} is not of the form WorldFlux/<Family>-<Env>-v<N>")
    variants = data.get("variants", {})
    bad = [name for name in variants if not _VARIANT_NAME.match(name) or not isinstance(variants[name], dict)]
    if bad:
        raise ConfigError(
            f"{path}: variants {bad}: each needs a capitalised name (letters and digits) and a dict "
            "of dream options (docs/dream-options.md)"
        )
    return DreamEnvSpec(
        id=data["id"],
        real_env=data["real_env"],
        family=data["family"],
        preset=data["preset"],
        checkpoint=(path.parent / data["checkpoint"]).resolve(),
        max_episode_steps=int(data["max_episode_steps"]),
        path=path,
        fit=dict(data.get("fit", {})),
        validation=dict(data.get("validation", {})),
        recipe=data.get("recipe"),
        variants={name: dict(options) for name, options in variants.items()},
    )


def load_specs(directory: str | Path | None = None) -> list[DreamEnvSpec]:
    """Every ``*.json`` spec in ``directory`` (the shipped ``envs/`` by default), sorted by id."""
    directory = Path(directory) if directory is not None else ENVS_DIR
    if not directory.is_dir():
        return []
    specs = [read_spec(p) for p in sorted(directory.glob("*.json"))]
    ids = [s.id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"ids declared twice in {directory}: {duplicates}")
    return sorted(specs, key=lambda s: s.id)


def find_spec(env_id: str) -> DreamEnvSpec:
    """The spec of a shipped id, a variant's included."""
    for spec in load_specs():
        for candidate in spec.with_variants():
            if candidate.id == env_id:
                return candidate
    raise ConfigError(f"no dream env spec declares {env_id!r} (specs are in {ENVS_DIR})")


def register_envs(directory: str | Path | None = None) -> list[str]:
    """Register every spec's id and its variants' with Gymnasium (ids already registered are left
    as they are)."""
    registered = []
    for spec in [s for file_spec in load_specs(directory) for s in file_spec.with_variants()]:
        if spec.id not in gym.registry:
            kwargs = {"spec_path": str(spec.path)}
            if spec.variant is not None:
                kwargs["variant"] = spec.variant
            gym.register(
                id=spec.id,
                entry_point="worldflux_gym.dream.registration:make_dream_env",
                vector_entry_point="worldflux_gym.dream.registration:make_dream_vector_env",
                max_episode_steps=spec.max_episode_steps,
                kwargs=kwargs,
            )
        registered.append(spec.id)
    return registered


def resolve_checkpoint(spec: DreamEnvSpec, checkpoint: str | Path | None) -> Path:
    """The checkpoint to load: ``checkpoint`` if given, else the shipped weights; a clear error if absent."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not (path / METADATA_FILE).is_file():
            raise CheckpointError(
                f"{path} is not a fitted world-model checkpoint (no {METADATA_FILE}); fit one with "
                f"`{spec.fit_command(str(path))}`"
            )
        return path
    if not spec.weights_present:
        raise CheckpointError(
            f"the weights of {spec.id} are not installed (expected in {spec.checkpoint}). Fit a model "
            f"with `{spec.fit_command()}`, then use it with gym.make({spec.id!r}, checkpoint=DIR)"
        )
    return spec.checkpoint


def _options(spec: DreamEnvSpec, options: dict[str, Any]) -> dict[str, Any]:
    options = {**spec.options, **options}  # the caller's options over the id's defaults
    options.setdefault("real_env", spec.real_env)
    return options


def _read(spec_path: str, variant: str | None) -> DreamEnvSpec:
    spec = read_spec(spec_path)
    return spec if variant is None else spec.with_variant(variant)


def make_dream_env(
    spec_path: str, checkpoint: str | Path | None = None, variant: str | None = None, **options: Any
):
    """Gymnasium ``entry_point``: the registered id's :class:`DreamEnv` (the horizon is ``TimeLimit``'s)."""
    from worldflux_gym.dream.dream_env import DreamEnv

    spec = _read(spec_path, variant)
    return DreamEnv(resolve_checkpoint(spec, checkpoint), **_options(spec, options))


def make_dream_vector_env(
    num_envs: int = 1,
    spec_path: str = "",
    checkpoint: str | Path | None = None,
    variant: str | None = None,
    **options: Any,
):
    """Gymnasium ``vector_entry_point``: the registered id's :class:`DreamVectorEnv`."""
    from worldflux_gym.dream.vector_env import DreamVectorEnv

    spec = _read(spec_path, variant)
    options = _options(spec, options)
    options.setdefault("max_episode_steps", spec.max_episode_steps)
    return DreamVectorEnv(resolve_checkpoint(spec, checkpoint), num_envs, **options)


def make_sb3_vec_env(env_id: str, num_envs: int = 1, checkpoint: str | Path | None = None, **options: Any):
    """A registered id as stable-baselines3's ``VecEnv`` (:class:`DreamSB3VecEnv`), with its horizon.

    ``num_envs`` dreams are one batch, stepped by one model call; SB3's algorithms ``learn()`` on it
    unchanged (SB3 takes no Gymnasium ``VectorEnv``). ``checkpoint`` and ``options`` are those of
    ``gym.make(env_id, ...)``.

    >>> from stable_baselines3 import PPO
    >>> from worldflux_gym.dream import make_sb3_vec_env
    >>> venv = make_sb3_vec_env("WorldFlux/Ensemble-Pendulum-v0", num_envs=64)
    >>> agent = PPO("MlpPolicy", venv, n_steps=16, batch_size=256, n_epochs=1, device="cpu", seed=0)
    >>> _ = agent.learn(total_timesteps=1024)
    >>> agent.num_timesteps
    1024
    """
    from worldflux_gym.dream.sb3 import DreamSB3VecEnv

    spec = find_spec(env_id)
    options = _options(spec, options)
    options.setdefault("max_episode_steps", spec.max_episode_steps)
    return DreamSB3VecEnv(resolve_checkpoint(spec, checkpoint), num_envs, **options)
