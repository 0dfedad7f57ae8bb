"""Small fitted world models for the dream-env tests, fitted once per test session.

Each is a real model fitted for a few hundred gradient steps on real data from the real env (random
actions), saved as a checkpoint directory, so the tests exercise the whole path: real data ->
fitted checkpoint -> dream env.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from worldflux_gym import create_world_model
from worldflux_gym.data import EpisodeBuffer, collect_episodes

_ROOT = Path(tempfile.mkdtemp(prefix="worldflux-dream-tests-"))


@functools.cache
def real_buffer(env_id: str, steps: int = 1500) -> EpisodeBuffer:
    return EpisodeBuffer(collect_episodes(env_id, steps, seed=0, progress=False))


@functools.cache
def fitted_checkpoint(env_id: str, model: str = "tiny-mlp:ci", fit_steps: int = 300) -> Path:
    """A checkpoint directory of ``model`` fitted on ``env_id`` (cached for the session)."""
    torch.manual_seed(0)
    buffer = real_buffer(env_id)
    env = gym.make(env_id)
    world_model = create_world_model(model, env.observation_space, env.action_space)
    env.close()
    world_model.adapt_to_data(buffer.all_transitions())
    optimizer = torch.optim.Adam(world_model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(fit_steps):
        loss = world_model.loss(buffer.sample_transitions(128, rng)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = _ROOT / f"{env_id}-{model.replace(':', '-')}"
    world_model.eval().save_pretrained(directory)
    return directory


def constant_model(env_id: str, reward: float = 1.0, continue_logit: float = 20.0):
    """A tiny-mlp model whose predictions are fixed: obs unchanged, the given reward and continue logit.

    Lets a test know exactly what the dream must return (termination probability, horizon ...).
    """
    env = gym.make(env_id)
    model = create_world_model("tiny-mlp:ci", env.observation_space, env.action_space)
    env.close()
    last = model.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[-2] = reward
        last.bias[-1] = continue_logit
    return model.eval()


@functools.cache
def family_checkpoint(env_id: str, family: str) -> Path:
    """A checkpoint of the family's ``ci`` preset for ``env_id``: fitted for the one-step ensemble,
    untrained for the sequence families (Dreamer, TD-MPC2), whose dream semantics do not depend on
    training. ``None``-free: raises if the family is not installed."""
    if family == "ensemble":
        return fitted_checkpoint(env_id, "ensemble:ci")
    torch.manual_seed(0)
    env = gym.make(env_id)
    model = create_world_model(f"{family}:ci", env.observation_space, env.action_space)
    env.close()
    directory = _ROOT / f"{env_id}-{family}-ci-untrained"
    model.eval().save_pretrained(directory)
    return directory
