"""Refit a world model's termination head on the states the model itself predicts.

Every family trains its continue head on states built from real observations (the ensemble on the
real next observation, the latent families on the posterior latent), but a dream asks it about the
model's *prediction* of the next state. Where the prediction is blurred exactly at the steps that
matter (a falling walker's last step, a pole at its limit), the head is right on real states and
wrong in the dream: a candidate Walker ensemble's head read 0.999 balanced accuracy on real next
observations and 0.912 on its own one-step predictions of them (``benchmarks/RESULTS.md``).

Here the world model is frozen and only the termination head learns, from windows of real episodes:
``context`` real steps burned in with ``observe``, one step imagined with the real action
(deterministic, as :func:`~worldflux_gym.training.model_quality.evaluate_model` measures it), and the
family's weighted continue BCE between the head's reading of that predicted state and the real
termination. The dynamics, reward and uncertainty are exactly as they were. Given ``validation``
episodes, the head is measured on them every ``evaluate_every`` updates (the termination balanced
accuracy of :mod:`~worldflux_gym.training.model_quality`) and the best one is kept: at a fixed
learning rate the accuracy need not rise steadily.

    model = from_pretrained("runs/walker")
    model = fit_end_head(model, EpisodeStore("runs/walker/data"))
    model.save_pretrained("runs/walker-end-head")  # a new checkpoint
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.store import EpisodeStore, split_buffer
from worldflux_gym.models.common import calibrated_continue_logits, continue_loss_weights
from worldflux_gym.training.model_quality import termination_balanced_accuracy


def end_head_loss(
    model: WorldModel, obs: torch.Tensor, action: torch.Tensor, goes_on: torch.Tensor
) -> torch.Tensor:
    """Weighted continue BCE of the head read on the model's one-step prediction.

    ``obs`` ``[B, C+2, ...]`` and ``action`` ``[B, C+1, ...]`` are real windows: the first ``C+1``
    observations are burned in, the last action is imagined; ``goes_on`` ``[B]`` is the real
    continue target of that last step."""
    state = model.observe(obs[:, :-1], action[:, :-1])
    state = model.transition(state, action[:, -1], deterministic=True, report_uncertainty=False)
    logits = model.decode(state).continue_logits
    if logits is None:
        raise ConfigError(f"the {model.family!r} model predicts no terminations")
    # decode reports calibrated logits; the weighted BCE is taken before that correction, as in the fit
    raw = logits - calibrated_continue_logits(torch.zeros(()), model.config)
    weight = continue_loss_weights(goes_on, model.config.termination_positive_weight)
    return F.binary_cross_entropy_with_logits(raw, goes_on, weight=weight)


def fit_end_head(
    model: WorldModel,
    data: EpisodeBuffer | EpisodeStore | str | Path,
    *,
    updates: int = 3000,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    context: int = 5,
    seed: int = 0,
    validation: EpisodeBuffer | EpisodeStore | str | Path | None = None,
    evaluate_every: int = 250,
) -> WorldModel:
    """Fit only ``model``'s termination head (in place) on its own one-step predictions of ``data``.

    ``data``: an :class:`EpisodeBuffer`, an ``EpisodeStore`` or the directory of one (its training
    split). Each update samples ``batch_size`` windows of ``context + 1`` real steps and takes an
    AdamW step on the head alone (see the module docstring). Every other parameter is left exactly
    as it was. The result does not depend on the caller's torch RNG, which is left as it was.
    ``validation`` (a buffer, or a store's validation split): keep the head that reads its episodes'
    ends best, measured before the first update, every ``evaluate_every`` updates and after the
    last. Returns the model in eval mode."""
    buffer = split_buffer(data)
    if updates < 1 or batch_size < 1 or context < 0 or evaluate_every < 1:
        raise ConfigError(
            "updates, batch_size and evaluate_every must be >= 1 and context >= 0, got "
            f"{updates}, {batch_size}, {evaluate_every} and {context}"
        )
    held_out = None if validation is None else split_buffer(validation, "validation", model.device)
    head = model.termination_head()
    if not buffer.terminated.any():
        raise ConfigError("the data hold no real termination: there is nothing for the end head to learn")
    if held_out is not None and not held_out.terminated.any():
        raise ConfigError(
            "the validation data hold no real termination, so no head can be judged better: "
            "pass episodes that end in one, or validation=None"
        )
    if not (buffer.lengths >= context + 1).any():
        raise ConfigError(
            f"no episode of the data holds context + 1 = {context + 1} steps: lower context "
            f"(the longest holds {int(buffer.lengths.max())})"
        )
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    rng = np.random.default_rng(seed)
    cuda = [model.device] if model.device.type == "cuda" else []
    model.eval()  # the frozen parts predict as they do in a dream
    model.requires_grad_(False)
    head.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=1e-4)
    best_accuracy, best_head = -1.0, None  # on the validation episodes

    def keep_if_best(judged: EpisodeBuffer) -> None:
        nonlocal best_accuracy, best_head
        accuracy = termination_balanced_accuracy(model, judged, context, seed=seed)
        if accuracy is not None and accuracy > best_accuracy:
            best_accuracy, best_head = accuracy, {k: v.clone() for k, v in head.state_dict().items()}

    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for update in range(int(updates)):
                if held_out is not None and update % evaluate_every == 0:
                    keep_if_best(held_out)
                batch = buffer.sample_sequences(batch_size, context + 1, rng).to(model.device)
                valid = batch.mask.all(dim=1)
                if not valid.any():  # every window ran into a short episode's padding
                    continue
                loss = end_head_loss(
                    model, batch.obs[valid], batch.action[valid], batch.continue_target()[valid, -1]
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if held_out is not None:
                keep_if_best(held_out)
                if best_head is not None:
                    head.load_state_dict(best_head)
    finally:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable[name])
    return model.eval()
