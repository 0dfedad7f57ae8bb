"""`State`: the latent (or observed) state of a batch of dreams, as named tensors plus metadata."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class State:
    """Named tensors that share a leading batch dimension, plus free-form ``meta``.

    Every tensor is ``[B, ...]``. A family decides which names it uses (``"obs"`` for the ensemble,
    ``"deter"``/``"stoch"`` for Dreamer, ``"latent"`` for TD-MPC2); callers treat the state as opaque
    and only move, slice and join it.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {name: t.shape[0] for name, t in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"State tensors disagree on the batch size: {sizes}")

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def to(self, device: torch.device | str) -> State:
        return State({k: v.to(device) for k, v in self.tensors.items()}, dict(self.meta))

    def detach(self) -> State:
        return State({k: v.detach() for k, v in self.tensors.items()}, dict(self.meta))

    def select(self, index: torch.Tensor | slice | Sequence[int]) -> State:
        """Rows ``index`` of every tensor (a boolean mask, indices or a slice)."""
        if isinstance(index, Sequence) and not isinstance(index, torch.Tensor):
            index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        return State({k: v[index] for k, v in self.tensors.items()}, dict(self.meta))

    def replace_rows(self, mask: torch.Tensor, other: State) -> State:
        """A state whose rows where ``mask`` is true come from ``other`` (same batch size)."""
        out = {}
        for name, value in self.tensors.items():
            row_mask = mask.reshape(-1, *([1] * (value.dim() - 1)))
            out[name] = torch.where(row_mask, other.tensors[name], value)
        return State(out, dict(self.meta))

    @staticmethod
    def cat(states: Sequence[State]) -> State:
        """Join states along the batch dimension; they must hold the same names."""
        names = set(states[0].tensors)
        for s in states[1:]:
            if set(s.tensors) != names:
                raise ValueError(
                    f"cannot concatenate states with names {sorted(names)} and {sorted(s.tensors)}"
                )
        return State(
            {k: torch.cat([s.tensors[k] for s in states], dim=0) for k in states[0].tensors},
            dict(states[0].meta),
        )
