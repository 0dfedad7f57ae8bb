"""What to dream with: a dream id, a dream env, a checkpoint directory or a model, resolved to the
loaded model and the real env and horizon it stands for.

:func:`resolve_dream` is the one resolver: the audit, videos and ``play`` call it, and it resolves
an id's weights through the same :func:`~worldflux_gym.dream.registration.resolve_checkpoint` that
the registered Gymnasium ids use (``checkpoint=`` replaces the shipped weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from worldflux_gym.core.checkpoint import from_pretrained, is_checkpoint
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.dream.registration import find_spec, resolve_checkpoint


def load_model(model: WorldModel | str | Path, device: str | torch.device = "auto") -> WorldModel:
    """A fitted model, or the checkpoint directory of one (loaded with ``from_pretrained``)."""
    if isinstance(model, WorldModel):
        return model.eval()
    return from_pretrained(model, device=device)


def checkpoint_dir_of(model: WorldModel | str | Path) -> Path | None:
    """The directory a model comes from: the one given, or the one a loaded model was read from (its
    data, start bank and metadata live there); ``None`` for a model built in memory."""
    return model.checkpoint_dir if isinstance(model, WorldModel) else Path(model)


@dataclass
class ResolvedDream:
    """A model to dream with, and what it stands for."""

    model: WorldModel
    dream_id: str | None  # the WorldFlux/* id, when it came from one
    real_env: str | None  # the real env id it was fitted on (None: not known)
    horizon: int | None  # the id's episode limit (None for a bare checkpoint or model)
    checkpoint: Path | None  # the directory its weights came from: its data and start bank live there
    options: dict[str, Any] = field(default_factory=dict)  # DreamBatch options of a given dream env

    @property
    def label(self) -> str:
        return self.dream_id or str(self.checkpoint or f"the {self.model.family!r} model")


def resolve_dream(
    dream: str | Path | gym.Env | WorldModel | None,
    checkpoint: str | Path | WorldModel | None = None,
    *,
    real_env: str | None = None,
    device: str | torch.device = "auto",
) -> ResolvedDream:
    """The model and real env (and, for an id, the horizon) to dream with.

    ``dream`` is one of

    - a registered ``WorldFlux/*`` id: its shipped weights, or ``checkpoint`` (a fitted run
      directory or a loaded model of the same env) instead;
    - a dream env made with ``gym.make(id, ...)``: its model, real env, horizon and options;
    - a checkpoint directory or a loaded :class:`WorldModel` (or ``None`` with ``checkpoint``): then
      ``real_env`` names the env it was fitted on, and there is no horizon.

    ``real_env`` overrides the real env an id or a dream env stands for.
    """
    if isinstance(dream, gym.Env):
        inner = dream.unwrapped
        if not hasattr(inner, "dream"):
            raise ConfigError(f"{dream} is not a worldflux-gym dream env")
        batch = inner.dream
        horizon = batch.max_episode_steps or (dream.spec.max_episode_steps if dream.spec else None)
        options = {
            "deterministic": batch.deterministic,
            "termination_odds": batch.termination_odds,
            "report_uncertainty": batch.report_uncertainty,
            "uncertainty_penalty": batch.uncertainty_penalty,
            "halt_threshold": batch.halt_threshold,
            "halt_penalty": batch.halt_penalty,
        }
        dream_id = dream.spec.id if dream.spec and str(dream.spec.id).startswith("WorldFlux/") else None
        env_id = real_env or batch.real_env_id
        return ResolvedDream(batch.model, dream_id, env_id, horizon, batch.checkpoint, options)
    if isinstance(dream, str) and dream.startswith("WorldFlux/"):
        spec = find_spec(dream)
        weights = checkpoint if isinstance(checkpoint, WorldModel) else resolve_checkpoint(spec, checkpoint)
        model = load_model(weights, device)
        return ResolvedDream(
            model, dream, real_env or spec.real_env, spec.max_episode_steps, checkpoint_dir_of(weights)
        )
    if dream is None:  # a bare checkpoint: loading it says what is wrong with it, if anything
        if checkpoint is None:
            raise ConfigError("name a dream id (WorldFlux/...) or give a fitted checkpoint to dream with")
        return ResolvedDream(
            load_model(checkpoint, device), None, real_env, None, checkpoint_dir_of(checkpoint)
        )
    if isinstance(dream, WorldModel) or is_checkpoint(str(dream)):
        return ResolvedDream(load_model(dream, device), None, real_env, None, checkpoint_dir_of(dream))
    raise ConfigError(
        f"{str(dream)!r} is neither a WorldFlux/* dream id (see `worldflux-gym list`) nor a checkpoint "
        "directory"
    )
