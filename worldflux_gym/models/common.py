"""Pieces shared by the families: symlog scaling and two-hot regression (DreamerV3, TD-MPC2),
per-feature standardisation (the ensemble's inputs and targets, the Dreamer's optional observation
scaling), the weighting of rare terminal steps in a continue loss, and the Plan2Explore-style
heads whose disagreement is their uncertainty."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from worldflux_gym.core.errors import ConfigError


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large magnitudes, keeps sign and zero."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def standardisation(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of ``data`` ``[N, F]``. A feature that never varies
    (an unused one-hot, a fixed joint) keeps unit scale."""
    std, mean = torch.std_mean(data.float(), dim=0, correction=0)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def check_terminal_weight(family: str, terminal_weight: float) -> None:
    """The ``termination_positive_weight`` of ``family``'s config must be positive."""
    if not terminal_weight > 0:
        raise ConfigError(
            f"{family} config termination_positive_weight must be > 0 (1: terminal and other steps "
            f"count the same), got {terminal_weight}"
        )


def continue_loss_weights(continue_target: torch.Tensor, terminal_weight: float) -> torch.Tensor:
    """Per-step weights of a continue BCE: ``terminal_weight`` where the episode ends (target 0),
    1 elsewhere."""
    return torch.where(continue_target > 0.5, 1.0, terminal_weight)


class TerminationConfig(Protocol):
    """The two config fields every family has for its continue head."""

    termination_positive_weight: float
    calibrate_terminations: bool


def calibrated_continue_logits(logits: torch.Tensor, config: TerminationConfig) -> torch.Tensor:
    """Continue logits of a head trained with :func:`continue_loss_weights` as probabilities again.

    The weighted BCE is minimised by odds of ending ``termination_positive_weight`` times the true
    odds, so a dream would end episodes that much too often (Dreamer-CartPole-v1 ended good
    policies' episodes early); adding the log of the weight to the continue logit undoes it (the
    prior correction of weighted logistic regression). Configs saved before
    ``calibrate_terminations`` existed load with it off and keep their heads as trained.
    """
    if not config.calibrate_terminations:
        return logits
    return logits + math.log(config.termination_positive_weight)


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

    Inputs: a dense part ``x`` ``[N, X]``, standardised with running statistics of the training
    inputs (so that "far from the data" is measured in the data's own spread, whatever the scale of
    a latent feature), and whatever else the first layer takes (Dreamer's one-hot ``stoch``). The
    family gives the first layer, whose ``heads * hidden`` outputs are the heads' first hidden
    pre-activations side by side (a plain linear map, or Dreamer's one-hot ``StateLinear``: one
    call for all heads). Then each head: SiLU, one hidden layer (linear, SiLU) and a linear output,
    all heads in one ``baddbmm`` per layer. No LayerNorm, unlike the world model's own layers: a
    norm makes a layer blind to how far its input lies from the data along a direction (scaling it
    up changes nothing after the norm), and that distance is what the disagreement is there to show.
    """

    STATS_RATE = 0.01  # EMA rate of the input statistics (a plain running mean for the first 100 updates)
    MIN_STD = 1e-2  # a feature that hardly varies in the data is not blown up by its tiny spread

    def __init__(self, first: nn.Module, inputs: int, heads: int, hidden: int, outputs: int):
        super().__init__()
        self.first, self.heads, self.hidden = first, heads, hidden
        bound = 1.0 / math.sqrt(hidden)  # nn.Linear's default initialisation
        self.weight2 = nn.Parameter(torch.empty(heads, hidden, hidden).uniform_(-bound, bound))
        self.bias2 = nn.Parameter(torch.empty(heads, 1, hidden).uniform_(-bound, bound))
        self.weight_out = nn.Parameter(torch.empty(heads, hidden, outputs).uniform_(-bound, bound))
        self.bias_out = nn.Parameter(torch.empty(heads, 1, outputs).uniform_(-bound, bound))
        # Running statistics of the dense inputs (buffers: saved with the weights, see update_input_stats).
        self.register_buffer("input_mean", torch.zeros(inputs))
        self.register_buffer("input_var", torch.ones(inputs))
        self.register_buffer("input_updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, X]`` (and ``rest``, as the first layer takes it) -> ``[heads, N, outputs]``.

        Always in float32, also inside a bfloat16 dream (``torch.autocast``): the heads' spread is a
        few percent of their predictions, about what bfloat16's 8-bit mantissa can resolve."""
        with torch.autocast(x.device.type, enabled=False):
            x = (x.float() - self.input_mean) * self.input_var.clamp_min(self.MIN_STD**2).rsqrt()
            h = F.silu(self.first(x, *(r.float() for r in rest)))  # [N, heads * hidden]
            h = h.reshape(-1, self.heads, self.hidden).transpose(0, 1)  # [heads, N, hidden]
            h = F.silu(torch.baddbmm(self.bias2, h, self.weight2))
            return torch.baddbmm(self.bias_out, h, self.weight_out)

    @torch.no_grad()
    def update_input_stats(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        """Move the input statistics towards those of the rows of a training batch ``x`` ``[N, X]``
        with ``weight`` ``[N]`` (padded steps weigh 0 and count for nothing)."""
        total = weight.float().sum()
        if total <= 0:
            return
        w = (weight.float() / total).unsqueeze(-1)
        mean = (w * x.float()).sum(0)
        var = (w * (x.float() - mean).square()).sum(0)
        rate = max(self.STATS_RATE, 1.0 / float(self.input_updates + 1))
        self.input_mean.lerp_(mean, rate)
        self.input_var.lerp_(var, rate)
        self.input_updates += 1

    def fit_loss(self, target: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, *rest: torch.Tensor):
        """The training loss on inputs ``(x, *rest)`` (detached by the caller) and ``target`` ``[N, D]``,
        rows weighted by ``weight`` ``[N]``. In a training step (training mode, gradients on; like
        TD-MPC2's target networks) the input statistics move first; validation leaves them alone.

        Squared error: mean over features, weighted mean over rows, summed over heads (each learns
        as if alone)."""
        if self.training and torch.is_grad_enabled():
            self.update_input_stats(x, weight)
        error = (self(x, *rest) - target).pow(2).mean(-1)  # [heads, N]
        return ((error * weight).sum(-1) / weight.sum().clamp_min(1e-8)).sum()


def disagreement(predictions: torch.Tensor) -> torch.Tensor:
    """``[heads, N, D]`` -> ``[N]``: the variance across heads, averaged over the ``D`` features.

    (Written out: ``Tensor.var`` over the leading dimension took ~30x longer on a CPU.)"""
    heads, _, features = predictions.shape
    spread = predictions - predictions.mean(0)
    spread = spread.square() if torch.is_grad_enabled() else spread.square_()
    return spread.sum(-1).sum(0) / (heads * features)
