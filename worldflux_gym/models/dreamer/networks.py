"""Building blocks of the DreamerV3 world model: MLPs, a normalised GRU, CNNs (symlog and two-hot
regression are shared with TD-MPC2 in ``models/common.py``).

Every hidden layer is ``Linear -> LayerNorm -> SiLU`` as in DreamerV3; output layers are plain
linear maps. Shapes in the docstrings use ``N`` for any number of leading batch dimensions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


# --- dense layers ---------------------------------------------------------------------------------
def dense(inputs: int, outputs: int) -> nn.Sequential:
    """One hidden layer: linear (no bias, the norm has one), LayerNorm, SiLU."""
    return nn.Sequential(nn.Linear(inputs, outputs, bias=False), nn.LayerNorm(outputs), nn.SiLU())


class StateLinear(nn.Module):
    """A linear layer on ``[x, stoch.flatten(-2)]`` for a one-hot ``stoch`` ``[..., S, K]``.

    The weight is kept in two parts: ``weight_x`` ``[out, X]`` and ``weight_stoch`` ``[S*K, out]``
    (one row per latent and class). With gradients on, ``stoch`` multiplies ``weight_stoch``
    densely (training needs the straight-through gradient of the sample). Without (imagination,
    burn-in) ``stoch`` is exactly one-hot, so its product is a sum of ``S`` rows, gathered with
    ``embedding_bag``: for 32x32 latents that is 32x fewer multiply-adds, the same result up to
    float rounding.
    """

    def __init__(self, x_size: int, latents: int, classes: int, outputs: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(x_size + latents * classes)  # nn.Linear's default initialisation
        self.weight_x = nn.Parameter(torch.empty(outputs, x_size).uniform_(-bound, bound))
        self.weight_stoch = nn.Parameter(torch.empty(latents * classes, outputs).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(outputs).uniform_(-bound, bound)) if bias else None
        self.latents, self.classes = latents, classes
        # Derived from the sizes, so not saved: class numbers (to read indices off a one-hot with a
        # tiny matmul, far cheaper than argmax) and each latent's first row in weight_stoch.
        self.register_buffer("class_ids", torch.arange(classes, dtype=torch.float32), persistent=False)
        self.register_buffer("row_offsets", torch.arange(latents) * classes, persistent=False)

    def forward(self, x: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """``x`` ``[..., X]``, ``stoch`` ``[..., S, K]`` -> ``[..., out]``."""
        out = F.linear(x, self.weight_x, self.bias)
        if torch.is_grad_enabled():
            return out + stoch.flatten(-2) @ self.weight_stoch
        # round(): a straight-through sample made under gradients is one-hot only up to rounding.
        rows = (stoch @ self.class_ids).round().long() + self.row_offsets  # [..., S]
        picked = F.embedding_bag(rows.reshape(-1, self.latents), self.weight_stoch, mode="sum")
        return out + picked.reshape(out.shape)


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


class StateMLP(nn.Module):
    """An :class:`MLP` whose input is ``[deter, stoch]``: its first layer is a :class:`StateLinear`.

    ``layers`` (at least 1) hidden layers of width ``hidden``, then a linear output layer.
    """

    def __init__(
        self, deter: int, latents: int, classes: int, hidden: int, layers: int, outputs: int, **kwargs
    ):
        super().__init__()
        self.first = StateLinear(deter, latents, classes, hidden, bias=False)
        self.norm = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU())
        self.rest = MLP(hidden, hidden, layers - 1, outputs, **kwargs)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """``deter`` ``[..., D]``, ``stoch`` ``[..., S, K]`` -> ``[..., outputs]``."""
        return self.rest(self.norm(self.first(deter, stoch)))


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
    """The state ``[deter, stoch]`` -> image means ``[N, H, W, C]`` in encoder units (``x/255 - 0.5``)."""

    def __init__(self, deter: int, latents: int, classes: int, shape: tuple[int, int, int], depth: int):
        super().__init__()
        height, width, channels = shape
        stages = image_stages(height, width)
        self.shape = shape
        self.top = depth * 2 ** (stages - 1)
        self.project = StateLinear(deter, latents, classes, self.top * 4 * 4)
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

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """``deter`` ``[..., D]``, ``stoch`` ``[..., S, K]`` -> images ``[..., H, W, C]``."""
        lead = deter.shape[:-1]
        x = self.project(deter, stoch).reshape(-1, self.top, 4, 4)
        return self.net(x).permute(0, 2, 3, 1).reshape(*lead, *self.shape)
