"""What models return: predictions, imagined trajectories and losses. Names say what they hold."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from worldflux_gym.core.state import State


@dataclass
class ModelOutput:
    """Predictions for a batch of states ``[B, ...]``; ``None`` where the family does not predict it.

    ``continue_logits`` are logits of "the episode goes on"; use :attr:`continue_prob` for
    probabilities. ``obs`` is in the real observation space's units (for images: uint8-range floats).
    ``uncertainty`` is a per-row disagreement (ensemble members' spread), larger is less sure.
    """

    obs: torch.Tensor | None = None
    reward: torch.Tensor | None = None
    continue_logits: torch.Tensor | None = None
    uncertainty: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def continue_prob(self) -> torch.Tensor | None:
        return None if self.continue_logits is None else torch.sigmoid(self.continue_logits)

    @property
    def termination_prob(self) -> torch.Tensor | None:
        return None if self.continue_logits is None else torch.sigmoid(-self.continue_logits)


@dataclass
class Trajectory:
    """An imagined rollout of ``T`` steps from ``B`` start states; predictions are ``[T, B, ...]``."""

    states: list[State]
    obs: torch.Tensor | None
    reward: torch.Tensor | None
    continue_prob: torch.Tensor | None
    uncertainty: torch.Tensor | None

    @property
    def horizon(self) -> int:
        return len(self.states)


@dataclass
class LossOutput:
    """A scalar ``loss`` to minimise and its named parts (detached, for logging)."""

    loss: torch.Tensor
    components: dict[str, float] = field(default_factory=dict)
