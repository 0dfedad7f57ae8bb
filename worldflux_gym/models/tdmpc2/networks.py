"""Building blocks of TD-MPC2: SimNorm, LayerNorm+Mish MLPs, a batched Q ensemble, the policy prior.

Every network is an MLP whose hidden layers are ``Linear -> LayerNorm -> Mish`` (the TD-MPC2 paper's
choice for stable training at any size). Latent states are normalised with SimNorm: the vector is cut
into groups of ``simnorm_dim`` entries and each group goes through a softmax, so a latent lies on a
product of simplices (every entry in [0, 1], each group sums to 1). That bounds the latent and keeps
long imagined rollouts from drifting off to large norms.

Rewards and values are learned by *discrete regression*: a scalar ``y`` becomes a "two-hot" target
over ``num_bins`` evenly spaced bins in symlog space, and the head is trained with cross-entropy
(``TwoHotSymlog`` in ``models/common.py``, shared with Dreamer). This is insensitive to the scale of
rewards, which differs by orders of magnitude between tasks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --- latent normalisation ---------------------------------------------------------------------
class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``group_size`` entries.

    Input and output ``[..., D]`` with ``D`` a multiple of ``group_size``; every output entry is in
    [0, 1] and every group sums to 1.
    """

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        return F.softmax(x, dim=-1).reshape(shape)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def mlp(
    in_dim: int,
    hidden: list[int],
    out_dim: int,
    *,
    output: nn.Module | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``Linear -> LayerNorm -> Mish`` for each hidden width, then a plain ``Linear`` to ``out_dim``.

    ``output`` is applied after the last layer (SimNorm for latents, or ``None`` for raw logits).
    ``dropout`` (TD-MPC2 uses it in the Q functions) follows the first hidden layer only.
    """
    layers: list[nn.Module] = []
    width = in_dim
    for i, h in enumerate(hidden):
        layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.Mish()]
        if i == 0 and dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    if output is not None:
        layers.append(output)
    return nn.Sequential(*layers)


# --- the Q ensemble, all members in one batched matmul -------------------------------------------
class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied to ``[E, N, in]`` in one ``baddbmm``."""

    def __init__(self, members: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim))
        # the same initialisation as nn.Linear, member by member
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with a separate affine transform per member; input ``[E, N, D]``."""

    def __init__(self, members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class QEnsemble(nn.Module):
    """``members`` Q functions ``Q_i(z, a)`` returning ``num_bins`` logits each.

    Input ``[N, in_dim]`` (the concatenated latent and action features), output ``[E, N, num_bins]``.
    Each member has its own weights and dropout masks; they are evaluated together for speed.
    """

    def __init__(self, members: int, in_dim: int, hidden: list[int], num_bins: int, dropout: float):
        super().__init__()
        self.members = members
        layers: list[nn.Module] = []
        width = in_dim
        for i, h in enumerate(hidden):
            layers += [EnsembleLinear(members, width, h), EnsembleLayerNorm(members, h), nn.Mish()]
            if i == 0 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(EnsembleLinear(members, width, num_bins))
        self.net = nn.Sequential(*layers)
        # The value head starts at zero so that early TD targets are not noise (as in TD-MPC2).
        with torch.no_grad():
            self.net[-1].weight.zero_()
            self.net[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the member count is read off the weights: torch.func.functional_call may pass a subset
        members = self.net[0].weight.shape[0]
        return self.net(x.unsqueeze(0).expand(members, *x.shape))


# --- the policy prior ------------------------------------------------------------------------------
def squashed_gaussian(
    mean: torch.Tensor,
    log_std: torch.Tensor,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``tanh(N(mean, std))`` and its log-density; shapes ``[..., A]`` -> ``[..., A]``, ``[...]``.

    The log-density includes the change of variables of ``tanh``, so ``-log_prob`` estimates the
    entropy of the squashed (in-bounds) action distribution.
    """
    std = log_std.exp()
    if deterministic:
        noise = torch.zeros_like(mean)
    else:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    pre_tanh = mean + std * noise
    action = torch.tanh(pre_tanh)
    gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prob = gaussian_log_prob - torch.log1p(-action.pow(2) + 1e-6).sum(-1)
    return action, log_prob
