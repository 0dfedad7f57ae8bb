"""Training batches: the single home of the transition-alignment convention.

A stored step is ``(o_t, a_t, r_{t+1}, terminated_{t+1}, truncated_{t+1}, o_{t+1})``: the reward
and the end-of-episode flags are the ones the environment returned *after* ``a_t`` was taken.
Every model trains its reward and continue heads on the state that has seen ``a_t`` (the state
for ``o_{t+1}``), and learns continuation only from ``terminated``: a time limit (``truncated``)
is not a property of the world and is never learned as an end.

Index arithmetic for sequences, written once here so that nobody writes it again::

    obs:        o_0  o_1  o_2 ... o_T          [B, T+1, ...]
    action:     a_0  a_1  ... a_{T-1}          [B, T, ...]    a_t is taken in o_t
    reward:     r_1  r_2  ... r_T              [B, T]         reward[:, t] follows a_t
    terminated: d_1  d_2  ... d_T              [B, T]         terminated[:, t] is o_{t+1}'s
    mask:       valid transitions              [B, T]         False past an episode's end
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def _map(batch, fn):
    return type(batch)(**{f.name: fn(getattr(batch, f.name)) for f in fields(batch)})


@dataclass
class TransitionBatch:
    """Independent single steps ``[B, ...]`` (what a one-step model such as the ensemble learns)."""

    obs: torch.Tensor  # o_t
    action: torch.Tensor  # a_t (float for Box, integer index for Discrete)
    reward: torch.Tensor  # r_{t+1}, [B]
    terminated: torch.Tensor  # bool [B]: o_{t+1} is a real terminal state
    truncated: torch.Tensor  # bool [B]: the episode was cut after this step (never a learning target)
    next_obs: torch.Tensor  # o_{t+1}; the final observation of an episode is kept

    def __len__(self) -> int:
        return self.obs.shape[0]

    def to(self, device: torch.device | str) -> TransitionBatch:
        return _map(self, lambda t: t.to(device))

    def continue_target(self) -> torch.Tensor:
        """1.0 where the episode goes on after the step, 0.0 at a real termination (truncation is 1)."""
        return 1.0 - self.terminated.float()


@dataclass
class SequenceBatch:
    """Windows of consecutive steps from single episodes (what recurrent/latent models learn).

    ``is_first`` marks windows that start at the episode's first observation (no history before).
    """

    obs: torch.Tensor  # [B, T+1, ...]
    action: torch.Tensor  # [B, T, ...]
    reward: torch.Tensor  # [B, T]
    terminated: torch.Tensor  # bool [B, T]
    truncated: torch.Tensor  # bool [B, T]
    mask: torch.Tensor  # bool [B, T]
    is_first: torch.Tensor  # bool [B]

    def __post_init__(self) -> None:
        b, t = self.reward.shape
        if self.obs.shape[:2] != (b, t + 1):
            raise ValueError(
                f"SequenceBatch needs T+1 observations for T steps: obs {tuple(self.obs.shape[:2])}, "
                f"reward {(b, t)}"
            )

    @property
    def horizon(self) -> int:
        return self.reward.shape[1]

    def __len__(self) -> int:
        return self.reward.shape[0]

    def to(self, device: torch.device | str) -> SequenceBatch:
        return _map(self, lambda t: t.to(device))

    def continue_target(self) -> torch.Tensor:
        """[B, T]: 1.0 unless o_{t+1} is a real termination; time limits count as continuing."""
        return 1.0 - self.terminated.float()

    def transitions(self) -> TransitionBatch:
        """Flatten the valid steps of the windows into independent transitions."""
        m = self.mask
        return TransitionBatch(
            obs=self.obs[:, :-1][m],
            action=self.action[m],
            reward=self.reward[m],
            terminated=self.terminated[m],
            truncated=self.truncated[m],
            next_obs=self.obs[:, 1:][m],
        )
