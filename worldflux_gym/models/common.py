"""Pieces shared by the families: symlog scaling and two-hot regression (DreamerV3, TD-MPC2), and the
Plan2Explore-style heads whose disagreement is their uncertainty."""

from __future__ import annotations

import math

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


# --- uncertainty heads (Plan2Explore) -------------------------------------------------------------
class DisagreementHeads(nn.Module):
    """``heads`` small MLPs that each predict the next step's latent target, run as one batch.

    Plan2Explore's one-step ensemble: the heads see the same inputs and targets and differ only in
    their random initialisation, so they agree where the training data were and disagree away from
    them. Their disagreement (:func:`disagreement`) is the uncertainty a family reports.

    The family computes the first layer, whose ``heads * hidden`` outputs are the heads' first
    hidden pre-activations side by side (a plain linear map of the inputs, or Dreamer's one-hot
    ``StateLinear``: one call for all heads). Then each head: LayerNorm, SiLU, one hidden layer
    (Linear, LayerNorm, SiLU) and a linear output, all heads in one ``baddbmm`` per layer.
    """

    def __init__(self, first: nn.Module, heads: int, hidden: int, outputs: int):
        super().__init__()
        self.first, self.heads, self.hidden = first, heads, hidden
        bound = 1.0 / math.sqrt(hidden)  # nn.Linear's default initialisation
        self.norm1_weight = nn.Parameter(torch.ones(heads, 1, hidden))
        self.norm1_bias = nn.Parameter(torch.zeros(heads, 1, hidden))
        self.weight2 = nn.Parameter(torch.empty(heads, hidden, hidden).uniform_(-bound, bound))
        self.bias2 = nn.Parameter(torch.empty(heads, 1, hidden).uniform_(-bound, bound))
        self.norm2_weight = nn.Parameter(torch.ones(heads, 1, hidden))
        self.norm2_bias = nn.Parameter(torch.zeros(heads, 1, hidden))
        self.weight_out = nn.Parameter(torch.empty(heads, hidden, outputs).uniform_(-bound, bound))
        self.bias_out = nn.Parameter(torch.empty(heads, 1, outputs).uniform_(-bound, bound))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` (``[N, ...]`` each, as ``first`` takes them) -> predictions ``[heads, N, outputs]``."""
        h = self.first(*inputs)  # [N, heads * hidden]
        h = h.reshape(-1, self.heads, self.hidden).transpose(0, 1)  # [heads, N, hidden]
        h = F.silu(F.layer_norm(h, (self.hidden,)) * self.norm1_weight + self.norm1_bias)
        h = torch.baddbmm(self.bias2, h, self.weight2)
        h = F.silu(F.layer_norm(h, (self.hidden,)) * self.norm2_weight + self.norm2_bias)
        return torch.baddbmm(self.bias_out, h, self.weight_out)

    def loss(self, predictions: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Squared error of ``predictions`` ``[heads, N, D]`` against ``target`` ``[N, D]``: mean over
        features, ``weight``-ed mean over rows (``[N]``), summed over heads (each learns as if alone)."""
        error = (predictions - target).pow(2).mean(-1)  # [heads, N]
        return ((error * weight).sum(-1) / weight.sum().clamp_min(1e-8)).sum()


def disagreement(predictions: torch.Tensor) -> torch.Tensor:
    """``[heads, N, D]`` -> ``[N]``: the variance across heads, averaged over the ``D`` features."""
    return predictions.var(dim=0, correction=0).mean(-1)
