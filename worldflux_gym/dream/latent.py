"""What a dream over a family that decodes no observations (TD-MPC2) shows: its latent.

Such a family exposes ``latent_dim`` (and optionally ``latent_bounds`` and
``latent_observation(state)``); the dream envs read the latent through these helpers, and
:func:`encode_observations` is how real observations become what an agent in such a dream sees
(:class:`~worldflux_gym.dream.EncodeObservation`, the audit's real replays, Dyna's collection).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.core.errors import ConfigError, SpaceError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.spaces import space_to_json
from worldflux_gym.core.state import State
from worldflux_gym.dream.starts import as_model_tensor


def latent_observation_space(model: WorldModel) -> spaces.Box:
    """The observation space of a family that does not decode observations: its latent ``Box``.

    Such a family exposes ``latent_dim``; SimNorm latents (TD-MPC2) lie in ``[0, 1]``. A family
    with other bounds may set ``latent_bounds = (low, high)``.
    """
    if not hasattr(model, "latent_dim"):
        raise ConfigError(
            f"the {model.family!r} family does not decode observations and exposes no `latent_dim`, so "
            "a dream over it has no observation space"
        )
    dim: Any = model.latent_dim  # a family's own attribute (nn.Module's __getattr__ types it loosely)
    return spaces.Box(*_latent_bounds(model), (int(dim),), np.float32)


def _latent_bounds(model: WorldModel) -> tuple[float, float]:
    return getattr(model, "latent_bounds", (0.0, 1.0))


def latent_of(model: WorldModel, state: State) -> torch.Tensor:
    """The latent a non-decoding family shows as its observation (``state["latent"]`` by convention)."""
    if hasattr(model, "latent_observation"):
        observe: Any = model.latent_observation  # a family's own method, if it defines one
        return observe(state)
    if "latent" not in state:
        raise ConfigError(
            f"the {model.family!r} state has no 'latent' tensor (it has {sorted(state.tensors)}) and the "
            "family defines no latent_observation(state)"
        )
    return state["latent"]


def same_space(a: spaces.Space, b: spaces.Space) -> bool:
    try:
        return space_to_json(a) == space_to_json(b)
    except SpaceError:
        return False


def encode_observations(model: WorldModel, obs: np.ndarray) -> np.ndarray:
    """Real observations ``[N, *obs_shape]`` -> the latents ``[N, latent_dim]`` (float32, inside
    :func:`latent_observation_space`) that an agent trained in ``model``'s latent dream acts on."""
    with torch.inference_mode():
        latent = latent_of(model, model.encode(as_model_tensor(obs, model.device)))
    # the bounds alone: building the Box on every real step would cost ~15% of the encoding
    return np.clip(latent.float().cpu().numpy(), *_latent_bounds(model))
