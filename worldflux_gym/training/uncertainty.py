"""Give a fitted world model uncertainty heads without refitting it.

The ``dreamer`` and ``tdmpc2`` families report uncertainty through Plan2Explore heads: a few small
one-step predictors of the next latent whose disagreement is the uncertainty (see their module
docs). A model fitted with them (the presets' default) trains them in its own loss. A model saved
before they existed (``uncertainty_heads=0``, e.g. an older shipped checkpoint) can gain them here:
the world model is frozen and only the heads learn, from the model's own latents of real episodes,
which is cheap (no gradient through the world model, a few hundred small updates).

    model = from_pretrained("runs/walker-2026-11")  # a checkpoint saved before the heads: none
    model = fit_uncertainty_heads(model, EpisodeStore("runs/walker/data"))
    model.save_pretrained("runs/walker-with-heads")  # a new checkpoint; the world model is unchanged
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.store import EpisodeStore, split_buffer


def with_uncertainty_heads(model: WorldModel, heads: int = 5, hidden: int | None = None) -> WorldModel:
    """A copy of ``model`` with ``heads`` fresh (untrained) uncertainty heads and its own weights.

    ``hidden``: the heads' width (default: the model's ``uncertainty_hidden``). A model that already
    has heads is returned as is."""
    config = model.config
    if not hasattr(config, "uncertainty_heads"):
        raise ConfigError(
            f"the {model.family!r} family has no uncertainty heads (dreamer and tdmpc2 do; the ensemble "
            "reports its members' disagreement)"
        )
    if config.uncertainty_heads:
        return model
    new_config = dataclasses.replace(
        config,
        uncertainty_heads=int(heads),
        uncertainty_hidden=int(hidden if hidden is not None else config.uncertainty_hidden),
    )
    out = type(model)(new_config, model.observation_space, model.action_space).to(model.device)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not name.startswith("uncertainty_net.") for name in missing):
        raise RuntimeError(
            f"unexpected weights when adding heads: missing {missing}, unexpected {unexpected}"
        )
    out.preset, out.checkpoint_dir = model.preset, model.checkpoint_dir  # same world model, same data
    return out.train(model.training)


def fit_uncertainty_heads(
    model: WorldModel,
    data: EpisodeBuffer | EpisodeStore | str | Path,
    *,
    heads: int = 5,
    hidden: int | None = None,
    updates: int = 500,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> WorldModel:
    """Fit only the uncertainty heads of ``model`` on ``data``; the world model stays as it is.

    ``data``: an :class:`EpisodeBuffer`, an ``EpisodeStore`` or the directory of one (its training
    split). A model without heads gets ``heads`` of them first (:func:`with_uncertainty_heads`; the
    returned model is then a new one), a model with heads has them refitted in place. Each update
    takes ``batch_size`` windows of the model's sequence length (one step for Markov families),
    computes the latents without gradients and takes an Adam step on the heads alone. Returns the
    model with heads, in eval mode. The heads' result does not depend on the caller's torch RNG
    (seeded by ``seed``), and that RNG is left as it was.
    """
    data = split_buffer(data)
    if updates < 1 or batch_size < 1:
        raise ConfigError(f"updates and batch_size must be >= 1, got {updates} and {batch_size}")
    rng = np.random.default_rng(seed)
    length = model.sequence_length or 1
    cuda = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # seeded heads and filter samples; the caller's RNG kept
        torch.manual_seed(seed)
        model = with_uncertainty_heads(model, heads, hidden)
        optimizer = torch.optim.Adam(model.uncertainty_net.parameters(), lr=learning_rate)
        # Training mode: the heads' input statistics follow the data. (The world model's own training-
        # time updates, TD-MPC2's target networks, run in its `loss` only, which is not called here.)
        model.train()
        for _ in range(int(updates)):
            batch = data.sample_sequences(batch_size, length, rng).to(model.device)
            loss = model.uncertainty_head_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()
