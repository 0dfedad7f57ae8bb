"""Observation normalization that travels inside a stable-baselines3 policy.

A recipe with ``normalize`` trains behind SB3's ``VecNormalize`` (running mean and variance of the
observations, returns scaled by their running std). Its statistics usually live in a separate file
that every user of the agent must remember to load. Here they are copied, when training ends, into
the policy's first layer, :class:`NormalizedObservation`: the saved ``.zip`` then takes raw
observations, in the real env as in the dream, and needs nothing beside it.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecNormalize


class NormalizedObservation(BaseFeaturesExtractor):
    """``clip((obs - mean) / std)``, flattened; the identity until :func:`freeze_normalization`."""

    mean: torch.Tensor
    std: torch.Tensor
    clip: torch.Tensor

    def __init__(self, observation_space: spaces.Box):
        super().__init__(observation_space, features_dim=int(np.prod(observation_space.shape)))
        shape = observation_space.shape
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        self.register_buffer("clip", torch.tensor(float("inf")))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        normalized = (observations - self.mean) / self.std
        return normalized.clamp(-self.clip, self.clip).flatten(1)


def freeze_normalization(agent: BaseAlgorithm, statistics: VecNormalize) -> None:
    """Copy the observation statistics of ``statistics`` into every :class:`NormalizedObservation`
    of ``agent`` (actor and critics alike), so that it acts on raw observations from now on."""
    rms = statistics.obs_rms
    if not isinstance(rms, RunningMeanStd):
        raise ValueError("VecNormalize of dict observations: normalize needs flat Box observations")
    extractors = [m for m in agent.policy.modules() if isinstance(m, NormalizedObservation)]
    if not extractors:
        raise ValueError("the agent's policy has no NormalizedObservation layer to hold the statistics")
    for extractor in extractors:
        extractor.mean.copy_(torch.as_tensor(rms.mean, dtype=torch.float32))
        extractor.std.copy_(torch.as_tensor(np.sqrt(rms.var + statistics.epsilon), dtype=torch.float32))
        extractor.clip.fill_(float(statistics.clip_obs))
