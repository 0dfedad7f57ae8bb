"""``EncodeObservation``: the real env, seen through a world model's encoder.

A family that does not decode observations (TD-MPC2) dreams in its latent space, so its dream env
observes latents. Wrapping the real env with the same encoder gives both the same observation
space, so one agent trained in the dream runs unchanged in the real env.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from worldflux_gym.core.model import WorldModel
from worldflux_gym.dream.latent import encode_observations, latent_observation_space, same_space
from worldflux_gym.dream.resolve import load_model


class EncodeObservation(gym.ObservationWrapper):
    """Replace each real observation by ``model.encode(obs)``'s latent (float32, in the latent Box)."""

    def __init__(self, env: gym.Env, model: WorldModel | str | Path, device: str | torch.device = "auto"):
        super().__init__(env)
        self.model = load_model(model, device)
        if not same_space(env.observation_space, self.model.observation_space):
            raise gym.error.Error(
                f"the model was fitted for observations {self.model.observation_space}, the env has "
                f"{env.observation_space}"
            )
        self.observation_space = latent_observation_space(self.model)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return encode_observations(self.model, np.asarray(observation)[None])[0]
