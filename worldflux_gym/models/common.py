"""Pieces shared by the families: symlog scaling and two-hot regression (DreamerV3, TD-MPC2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large magnitudes, keeps sign and zero."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHotSymlog(nn.Module):
    """A scalar as a categorical over ``bins`` values evenly spaced in symlog space on [low, high].

    The target ``y`` becomes a "two-hot" vector: the weight of ``symlog(y)`` is split between its two
    neighbouring bins in proportion to closeness, so the expected bin value reproduces ``symlog(y)``
    exactly. Predictions read out ``symexp(E[bin])``.
    """

    def __init__(self, bins: int, low: float = -20.0, high: float = 20.0):
        super().__init__()
        if bins < 2:
            raise ValueError(f"two-hot needs at least 2 bins, got {bins}")
        # Not persistent: derived from the config, so it stays out of the checkpoint.
        self.register_buffer("bins", torch.linspace(low, high, bins), persistent=False)

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` ``[...]`` -> two-hot probabilities ``[..., bins]``."""
        bins = self.bins
        x = symlog(y).clamp(bins[0], bins[-1])
        above = torch.searchsorted(bins, x.contiguous(), right=False).clamp(1, len(bins) - 1)
        below = above - 1
        weight_above = (x - bins[below]) / (bins[above] - bins[below])
        out = torch.zeros(*x.shape, len(bins), device=x.device, dtype=x.dtype)
        out.scatter_(-1, below.unsqueeze(-1), (1.0 - weight_above).unsqueeze(-1))
        out.scatter_add_(-1, above.unsqueeze(-1), weight_above.unsqueeze(-1))
        return out

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``logits`` ``[..., bins]`` against ``twohot(y)``; returns ``[...]``."""
        return -(self.target(y) * F.log_softmax(logits, dim=-1)).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value in real units: ``symexp(softmax(logits) @ bins)``, ``[...]``."""
        return symexp(torch.softmax(logits, dim=-1) @ self.bins)
