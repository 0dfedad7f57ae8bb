"""Building blocks of the DreamerV3 world model: symlog, two-hot, MLPs, a normalised GRU, CNNs.

Every hidden layer is ``Linear -> LayerNorm -> SiLU`` as in DreamerV3; output layers are plain
linear maps. Shapes in the docstrings use ``N`` for any number of leading batch dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


# --- scale-free targets ---------------------------------------------------------------------------
def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large magnitudes, keeps sign and zero."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


class TwoHotSymlog(nn.Module):
    """A scalar as a categorical over ``bins`` values evenly spaced in symlog space on [-20, 20].

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
        """``y`` ``[N]`` -> two-hot probabilities ``[N, bins]``."""
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
        """Cross-entropy of ``logits`` ``[N, bins]`` against ``twohot(y)``; returns ``[N]``."""
        return -(self.target(y) * F.log_softmax(logits, dim=-1)).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected value in real units: ``symexp(softmax(logits) @ bins)``, ``[N]``."""
        return symexp(torch.softmax(logits, dim=-1) @ self.bins)


# --- dense layers ---------------------------------------------------------------------------------
def dense(inputs: int, outputs: int) -> nn.Sequential:
    """One hidden layer: linear (no bias, the norm has one), LayerNorm, SiLU."""
    return nn.Sequential(nn.Linear(inputs, outputs, bias=False), nn.LayerNorm(outputs), nn.SiLU())


class MLP(nn.Module):
    """``layers`` hidden layers of width ``hidden`` and an optional linear output layer.

    ``zero_output`` starts the output layer at zero (DreamerV3 does this for the reward head so
    that early predictions are 0 instead of large random values).
    """

    def __init__(
        self, inputs: int, hidden: int, layers: int, outputs: int | None = None, zero_output: bool = False
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = inputs
        for _ in range(layers):
            blocks.append(dense(width, hidden))
            width = hidden
        if outputs is not None:
            head = nn.Linear(width, outputs)
            if zero_output:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
            blocks.append(head)
            width = outputs
        self.net = nn.Sequential(*blocks)
        self.outputs = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NormGRUCell(nn.Module):
    """A GRU cell with LayerNorm on its gate pre-activations (the RSSM's deterministic path).

    One linear map of ``[x, h]`` gives the reset, candidate and update pre-activations. The update
    gate is biased by -1 so that a fresh cell starts out keeping most of its previous state, which
    keeps long rollouts stable early in training.
    """

    def __init__(self, inputs: int, size: int):
        super().__init__()
        self.size = size
        self.linear = nn.Linear(inputs + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, inputs]``, ``h`` ``[B, size]`` -> next ``h`` ``[B, size]``."""
        parts = self.norm(self.linear(torch.cat([x, h], dim=-1)))
        reset, candidate, update = parts.split(self.size, dim=-1)
        reset = torch.sigmoid(reset)
        candidate = torch.tanh(reset * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * h


# --- images ---------------------------------------------------------------------------------------
class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` feature map (per pixel)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def image_stages(height: int, width: int) -> int:
    """Number of stride-2 stages that take a square power-of-two image down to 4x4 (64 -> 4)."""
    stages = round(math.log2(height)) - 2
    if height != width or height != 2 ** (stages + 2) or stages < 1:
        raise ValueError(
            f"the CNN encoder takes square power-of-two images of at least 8x8 (e.g. 64x64), "
            f"got {height}x{width}; resize the observations first"
        )
    return stages


class ConvEncoder(nn.Module):
    """uint8 images ``[N, H, W, C]`` -> features ``[N, 8d * 4 * 4]`` (for 64x64: 4 stride-2 convs).

    Pixels enter as ``x / 255 - 0.5``. Channels double at every stage from ``depth``.
    """

    def __init__(self, shape: tuple[int, int, int], depth: int):
        super().__init__()
        height, width, channels = shape
        stages = image_stages(height, width)
        blocks: list[nn.Module] = []
        for i in range(stages):
            out = depth * 2**i
            blocks += [
                nn.Conv2d(channels, out, 4, stride=2, padding=1, bias=False),
                ChannelNorm(out),
                nn.SiLU(),
            ]
            channels = out
        self.net = nn.Sequential(*blocks)
        self.outputs = channels * 4 * 4

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return self.net(x).reshape(*lead, self.outputs)


class ConvDecoder(nn.Module):
    """Features ``[N, F]`` -> image means ``[N, H, W, C]`` in the encoder's units (``x/255 - 0.5``)."""

    def __init__(self, features: int, shape: tuple[int, int, int], depth: int):
        super().__init__()
        height, width, channels = shape
        stages = image_stages(height, width)
        self.shape = shape
        self.top = depth * 2 ** (stages - 1)
        self.project = nn.Linear(features, self.top * 4 * 4)
        blocks: list[nn.Module] = []
        width_in = self.top
        for i in reversed(range(stages - 1)):
            out = depth * 2**i
            blocks += [
                nn.ConvTranspose2d(width_in, out, 4, stride=2, padding=1, bias=False),
                ChannelNorm(out),
                nn.SiLU(),
            ]
            width_in = out
        blocks.append(nn.ConvTranspose2d(width_in, channels, 4, stride=2, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        x = self.project(features.reshape(-1, features.shape[-1])).reshape(-1, self.top, 4, 4)
        x = self.net(x).permute(0, 2, 3, 1)
        return x.reshape(*lead, *self.shape)
