"""Probabilistic MLP ensemble (PETS / MBPO): the workhorse family for vector observations.

Each of ``members`` MLPs maps ``(o_t, a_t)`` to a diagonal Gaussian over the *normalised* target
``[o_{t+1} - o_t, r_{t+1}]``. Training (and the GPU) run all members in one batched matrix product
per layer (weights ``[members, in, out]``, ``torch.baddbmm``); CPU imagination runs them member by
member through oneDNN's fused product + SiLU (``cpu_kernels.py`` says why). Termination is a
separate small MLP on the next observation ``o_{t+1}``: Gymnasium's envs decide termination on the
state after the step (a walker below its healthy height, a pole past its angle), so the dream ends
exactly when the *imagined* next state is one that ends an episode. (Sharing the members' trunk
with the Gaussian likelihood starved this rare-event head: on CartPole it barely told terminal steps
from others.)

Training (``loss``): Gaussian negative log-likelihood (or beta-NLL, ``nll_beta``) with soft-clamped
log-variance between learned bounds, the small bound regulariser of PETS, and binary cross-entropy
of the continue logit of the real ``o_{t+1}`` against ``batch.continue_target()`` (real terminations
only; time limits count as continuing).

With ``sequence_length`` H > 1 the model trains on windows of H real steps and adds an open-loop
term: each member feeds its own mean predictions back for H steps from the window's first real
observation, and its squared error against the real observations and rewards along the window
(normalised like the one-step target) joins the loss with weight ``open_loop_weight``. One-step
likelihood alone lets small biases compound over a long dream (a dreamed walker's height drifts out
of the healthy range in ~170 steps); the open-loop term trains against exactly that drift, as
multi-step losses do in PlaNet's overshooting and TD-MPC2's latent consistency. Elites are then
the members with the lowest open-loop error. ``closed_loop_error`` is the same rollout with a
policy choosing the actions from the imagined observations; ``pipelines/closed_loop.py`` fine-tunes
a fitted model with it under the policies that logged the data.

Data-dependent state, all kept as buffers so that it is saved with the weights:

- ``adapt_to_data`` fits the input normalisation (observation and action features) and the target
  normalisation (observation change and reward);
- ``validate`` ranks members by their held-out mean-squared error and keeps the best ``elites``.

Imagination (``transition``): every row is advanced by one elite member drawn uniformly at random
(MBPO's "random model" propagation), sampling from its Gaussian, or by the mean of the elite means
when ``deterministic`` (which ignores the generator). Uncertainty is the elites' disagreement,
the epistemic signal behind MOPO-style reward penalties and MOReL-style halting::

    u = max_e || mu_e - mean_e'(mu_e') ||_2      over the elite members e,

computed on the normalised prediction ``[delta obs, reward]`` (so every dimension weighs alike,
whatever its units). It is the "max deviation from the ensemble mean" form; MOReL takes the max
pairwise distance (at most twice this) and the MOPO paper the largest predicted std.

With ``report_uncertainty=False`` only each row's own member is computed (the cost of about one
member instead of all elites) and the uncertainty is reported as NaN: "not measured", never a
misleading zero.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from worldflux_gym.core import (
    Capabilities,
    ConfigError,
    LossOutput,
    ModelOutput,
    Preset,
    SequenceBatch,
    SpaceError,
    State,
    TransitionBatch,
    WorldModel,
    register_family,
)
from worldflux_gym.core.spaces import action_dim, action_features, is_image_space, observation_dim
from worldflux_gym.core.validate import check_float
from worldflux_gym.models.common import (
    calibrated_continue_logits,
    check_terminal_weight,
    continue_loss_weights,
    standardisation,
)
from worldflux_gym.models.ensemble import cpu_kernels

# Logit used for "the episode certainly goes on" in states that come from real observations.
_CERTAIN_CONTINUE_LOGIT = 20.0


@dataclass
class EnsembleConfig:
    members: int = 7  # networks trained side by side
    elites: int = 5  # the best members on held-out data; only these are used to imagine
    hidden: int = 200  # width of every hidden layer
    layers: int = 4  # number of hidden layers
    init_min_logvar: float = -10.0  # starting values of the learned log-variance bounds
    init_max_logvar: float = 0.5  # (normalised units, so the data's own variance is about 0)
    logvar_bound_weight: float = 0.01  # PETS: pulls max_logvar down and min_logvar up
    # beta-NLL (Seitzer et al. 2022): each row's NLL is weighted by its predicted variance^beta (no
    # gradient through the weight). Plain NLL (0) scales a row's mean gradient by 1/variance, so the
    # members stop fitting the mean where they learned a wide variance: a walker's foot impacts.
    nll_beta: float = 0.0
    termination_weight: float = 1.0  # weight of the continue-logit BCE in the loss
    # Weight of a terminal transition against a non-terminal one in that BCE. Terminations are rare
    # (about 1% of CartPole-v1 steps); above 1 the head learns a sharp termination rule sooner, at the
    # price of probabilities that overstate termination near the rule's limits.
    termination_positive_weight: float = 1.0
    # correct the continue logits for that weight (models.common.calibrated_continue_logits)
    calibrate_terminations: bool = True
    termination_hidden: int = 64  # width of the two hidden layers of the termination MLP
    sequence_length: int = 1  # H: steps of the open-loop training rollout; 1 = one-step likelihood only
    open_loop_weight: float = 1.0  # weight of the open-loop error when sequence_length > 1
    batch_size: int = 256  # per update: transitions, or windows of H steps when sequence_length > 1
    # Sampled transitions draw mean + noise_scale x std; the mean transition ignores it. The members'
    # std is fitted to one-step errors, which are mostly systematic: at full scale dreamed Walker2d
    # walkers fall far too early, without noise some never fall (benchmarks/bench_audit.py).
    noise_scale: float = 1.0
    # Which elite a sampled transition uses for a row (PETS' trajectory sampling): "ts1" a random one
    # each step; "tsinf" row b always elite b mod E, so a dreamed episode follows one member, the
    # way open-loop and closed-loop training roll each member out on its own.
    propagation: str = "ts1"

    # A checkpoint saved before a field existed rebuilds the model it was (core/checkpoint.py).
    checkpoint_defaults: ClassVar[dict[str, Any]] = {"calibrate_terminations": False}


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers: weight ``[members, in, out]``, bias ``[members, 1, out]``.

    The model applies them with one ``torch.baddbmm`` per layer (``[K, N, in] -> [K, N, out]``), either
    with all members' weights or with a subset's (the elites), see ``EnsembleModel._forward``.
    """

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))
        # Truncated normal with std 1/(2 sqrt(in)), as in the MBPO ensemble.
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * math.sqrt(in_features)))


def _soft_clamp(logvar: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Smoothly keep ``logvar`` inside ``[low, high]`` so gradients still reach the bounds (PETS)."""
    logvar = high - F.softplus(high - logvar)
    return low + F.softplus(logvar - low)


@register_family(
    "ensemble",
    presets={
        "default": Preset(
            {"members": 7, "elites": 5, "hidden": 200, "layers": 4},
            "experimental",
            "MBPO ensemble: 7 members (5 elites) of 4x200 SiLU MLPs",
        ),
        "small": Preset(
            {"members": 5, "elites": 3, "hidden": 128, "layers": 3},
            "experimental",
            "5 members (3 elites) of 3x128 SiLU MLPs",
        ),
        "ci": Preset(
            {"members": 3, "elites": 2, "hidden": 32, "layers": 2},
            "test",
            "3 members (2 elites) of 2x32 SiLU MLPs, for tests",
        ),
    },
)
class EnsembleModel(WorldModel):
    """PETS/MBPO probabilistic ensemble over vector observations (Box or Discrete actions).

    State tensors: ``obs`` ``[B, obs_dim]`` and, for the step that led there, ``reward``,
    ``continue_logits`` and ``uncertainty`` ``[B]``.
    """

    config_class = EnsembleConfig
    capabilities = Capabilities(
        decodes_observations=True,
        predicts_reward=True,
        predicts_termination=True,
        reports_uncertainty=True,
        recurrent=False,
    )

    def __init__(self, config: EnsembleConfig, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(config, observation_space, action_space)
        if is_image_space(observation_space):
            raise SpaceError(
                f"the ensemble family models vector observations (a 1-D Box), not images "
                f"{observation_space!r}; use the dreamer family for pixels, e.g. "
                "create_world_model('dreamer:ci', ...)"
            )
        if not 1 <= config.elites <= config.members:
            raise ConfigError(
                f"the ensemble needs 1 <= elites <= members, got elites={config.elites}, "
                f"members={config.members}"
            )
        if config.layers < 1 or config.hidden < 1:
            raise ConfigError(f"need at least one hidden layer of width >= 1, got {config}")
        if config.noise_scale < 0:
            raise ConfigError(f"noise_scale must be >= 0 (0: no noise), got {config.noise_scale}")
        if not 0.0 <= config.nll_beta <= 1.0:
            raise ConfigError(
                f"nll_beta must be in [0, 1] (0: plain Gaussian NLL, 0.5: beta-NLL's usual choice), "
                f"got {config.nll_beta}"
            )
        check_terminal_weight("ensemble", config.termination_positive_weight)
        if config.propagation not in ("ts1", "tsinf"):
            raise ConfigError(f"propagation must be 'ts1' or 'tsinf', got {config.propagation!r}")
        if config.sequence_length < 1:
            raise ConfigError(
                f"sequence_length must be >= 1 (1: one-step training), got {config.sequence_length}"
            )
        # The trainer samples what batch_type says: windows only when there is an open-loop term.
        self.batch_type = SequenceBatch if config.sequence_length > 1 else TransitionBatch

        self.obs_dim = observation_dim(observation_space)
        self.target_dim = self.obs_dim + 1  # [delta obs, reward]
        input_dim = self.obs_dim + action_dim(action_space)
        widths = [input_dim] + [config.hidden] * config.layers
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(config.members, w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        # One output layer for the Gaussian mean and its log-variance.
        self.output_layer = EnsembleLinear(config.members, config.hidden, 2 * self.target_dim)
        # Termination is a threshold-like function of the next observation: a narrow MLP is enough,
        # and it keeps the extra cost per imagined step small (~4% of one 4x200 member).
        width = config.termination_hidden
        self.termination_net = nn.Sequential(
            nn.Linear(self.obs_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1)
        )
        self.min_logvar = nn.Parameter(torch.full((self.target_dim,), float(config.init_min_logvar)))
        self.max_logvar = nn.Parameter(torch.full((self.target_dim,), float(config.init_max_logvar)))

        # Fitted by adapt_to_data / validate; identity normalisation and the first members until then.
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.register_buffer("target_mean", torch.zeros(self.target_dim))
        self.register_buffer("target_std", torch.ones(self.target_dim))
        self.register_buffer("elite_index", torch.arange(config.elites))

    def with_noise_scale(self, noise_scale: float) -> EnsembleModel:
        """This model sampling with another ``noise_scale``, sharing every weight; ``self`` is left as
        it is (the dream option ``noise_scale`` uses this)."""
        noise_scale = check_float(noise_scale, "noise_scale", minimum=0.0)
        view = copy.copy(self)
        view.config = dataclasses.replace(self.config, noise_scale=noise_scale)
        return view

    # --- the network ------------------------------------------------------------------------------
    def _features(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Normalised network input ``[..., N, obs_dim + action_dim]`` (``obs`` may carry a leading
        members dimension that ``action`` ``[N, ...]`` lacks)."""
        act = action_features(action, self.action_space)
        x = torch.cat([obs.float(), act.expand(*obs.shape[:-1], -1)], dim=-1)
        return (x - self.input_mean) / self.input_std

    def _targets(self, batch: TransitionBatch) -> torch.Tensor:
        """Normalised regression target ``[N, obs_dim + 1]``: ``[o_{t+1} - o_t, r_{t+1}]``."""
        delta = batch.next_obs.float() - batch.obs.float()
        target = torch.cat([delta, batch.reward.float().unsqueeze(-1)], dim=-1)
        return (target - self.target_mean) / self.target_std

    def _layers(self) -> list[EnsembleLinear]:
        return [*self.hidden_layers, self.output_layer]

    def _weights(
        self, elites_only: bool, dtype: torch.dtype, fused: bool
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's ``(weight, bias)`` for the members that run: all, or the elites in
        ``elite_index`` order. Layout ``[K, in, out]`` / ``[K, 1, out]`` for ``torch.baddbmm``, or
        for the ``fused`` CPU path (:func:`cpu_kernels.linear`) lists of each member's ``[out, in]`` /
        ``[out]``. Without autograd the prepared copy is cached (:func:`cpu_kernels.cached_weights`).
        """
        elites = self.elite_index

        def prepare(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.index_select(0, elites) if elites_only else tensor

        if torch.is_grad_enabled():
            return [(prepare(m.weight), prepare(m.bias)) for m in self._layers()]
        layers = self._layers()

        def build() -> list:
            if fused:  # lists of each member's own tensors: no tensor indexing in the member loop
                return [cpu_kernels.per_member(prepare(m.weight), prepare(m.bias), dtype) for m in layers]
            return [(prepare(m.weight).to(dtype), prepare(m.bias).to(dtype)) for m in layers]

        tensors = [elites] + [t for m in layers for t in (m.weight, m.bias)]
        return cpu_kernels.cached_weights(self, tensors, (elites_only, dtype, fused), build)

    def _forward(self, x: torch.Tensor, elites_only: bool = False) -> torch.Tensor:
        """Run member k on ``x[k]`` for ``x`` ``[K, N, in]``: K = all members, or the elites.

        Returns the raw output ``[K, N, 2 * (obs_dim + 1)]`` (float32 without autograd);
        :meth:`_split` names its parts. Under ``torch.autocast(dtype=torch.bfloat16)`` without
        autograd, the products run on a bfloat16 copy of the weights: faster products on CPUs with
        AMX or AVX512-BF16 (benchmarks/RESULTS.md).
        """
        inference = not torch.is_grad_enabled()
        dtype = cpu_kernels.autocast_dtype(x.device.type) if inference else x.dtype
        if inference and x.device.type == "cpu":
            weights = self._weights(elites_only, dtype, fused=True)
            return cpu_kernels.forward_members(x.to(dtype), weights, self.config.hidden).float()
        h = x.to(dtype)
        weights = self._weights(elites_only, dtype, fused=False)
        for weight, bias in weights[:-1]:
            h = F.silu(torch.baddbmm(bias, h, weight), inplace=inference)  # in place: one less allocation
        weight, bias = weights[-1]
        out = torch.baddbmm(bias, h, weight)
        return out.float() if inference else out

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw output ``[..., 2D]`` -> Gaussian mean ``[..., D]`` and log-variance ``[..., D]``
        (normalised units, soft-clamped to the learned bounds)."""
        d = self.target_dim
        return out[..., :d], _soft_clamp(out[..., d:], self.min_logvar, self.max_logvar)

    def _continue_logits(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Logit that the episode goes on in ``next_obs`` ``[N, obs_dim]`` -> ``[N]``."""
        obs_mean, obs_std = self.input_mean[: self.obs_dim], self.input_std[: self.obs_dim]
        x = (next_obs.float() - obs_mean) / obs_std
        if torch.is_grad_enabled() or x.device.type != "cpu":
            return self.termination_net(x).squeeze(-1)
        *hidden, last = [m for m in self.termination_net if isinstance(m, nn.Linear)]
        with torch.autocast("cpu", enabled=False):  # a small net: float32 whatever the dream's precision
            for layer in hidden:
                x = cpu_kernels.linear(x, layer.weight, layer.bias, silu=True)
            return cpu_kernels.linear(x, last.weight, last.bias, silu=False).squeeze(-1)

    # --- fitting ------------------------------------------------------------------------------------
    @torch.no_grad()
    def adapt_to_data(self, batch: TransitionBatch) -> None:
        """Fit input and target normalisation to a large sample of training transitions."""
        x = torch.cat([batch.obs.float(), action_features(batch.action, self.action_space)], dim=-1)
        delta = batch.next_obs.float() - batch.obs.float()
        y = torch.cat([delta, batch.reward.float().unsqueeze(-1)], dim=-1)
        for data, mean_buf, std_buf in (
            (x, self.input_mean, self.input_std),
            (y, self.target_mean, self.target_std),
        ):
            mean, std = standardisation(data)
            mean_buf.copy_(mean)
            std_buf.copy_(std)

    def loss(self, batch: TransitionBatch | SequenceBatch) -> LossOutput:
        """Sum over members of the Gaussian NLL, the termination BCE, and the log-variance bound term;
        for windows (``sequence_length`` > 1) also the members' open-loop error, see the module doc."""
        total, components, _ = self._loss_terms(batch)
        return LossOutput(total, components)

    def _loss_terms(
        self, batch: TransitionBatch | SequenceBatch
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The loss, its parts, and each member's error ``[members]`` that ranks them as elites: the
        one-step squared error, or the open-loop one for windows."""
        steps = batch.transitions() if isinstance(batch, SequenceBatch) else batch
        members = self.config.members
        x = self._features(steps.obs, steps.action)
        target = self._targets(steps)
        mean, logvar = self._split(self._forward(x.expand(members, -1, -1)))
        # NLL up to constants and a factor 1/2, averaged over rows and dimensions, per member.
        # Summing members (rather than averaging) trains each one as if it were alone.
        sq_err = (mean - target).pow(2)
        row_nll = sq_err * torch.exp(-logvar) + logvar
        if self.config.nll_beta:
            row_nll = row_nll * torch.exp(logvar.detach() * self.config.nll_beta)
        nll = row_nll.mean(dim=(1, 2)).sum()
        logits = self._continue_logits(steps.next_obs)
        goes_on = steps.continue_target()
        weight = continue_loss_weights(goes_on, self.config.termination_positive_weight)
        bce = F.binary_cross_entropy_with_logits(logits, goes_on, weight=weight)
        bound = self.max_logvar.sum() - self.min_logvar.sum()
        total = nll + self.config.termination_weight * bce + self.config.logvar_bound_weight * bound
        components = {
            "nll": nll.item() / members,
            "mse": sq_err.mean().item(),
            "termination_bce": bce.item(),
            "logvar_bound": bound.item(),
        }
        if isinstance(batch, SequenceBatch):
            open_loop = self._open_loop_error(batch)
            total = total + self.config.open_loop_weight * open_loop.sum()
            components["open_loop_mse"] = open_loop.mean().item()
            return total, components, open_loop.detach()
        return total, components, sq_err.detach().mean(dim=(1, 2))

    def _open_loop_error(self, batch: SequenceBatch) -> torch.Tensor:
        """``[members]``: each member's mean squared error along the windows when it feeds its own mean
        prediction back (observations and rewards, in the units of the normalised one-step target)."""
        return self._rollout_error(batch, lambda t, obs: batch.action[:, t])

    def closed_loop_error(
        self,
        batch: SequenceBatch,
        policy: Callable[[torch.Tensor], torch.Tensor],
        truncate: int | None = None,
    ) -> torch.Tensor:
        """``[members]``: like the open-loop error, but ``policy`` chooses every action from the
        member's own imagined observation instead of replaying the logged ones.

        For windows logged by a deterministic ``policy`` the real dynamics would redo the logged
        actions and observations exactly, so this error measures what a dream of that policy gets
        wrong, policy feedback included: a gait that drifts towards a fall in reality and stays
        upright in the dream. ``policy`` maps observations ``[N, obs_dim]`` to actions and must be
        differentiable for training. ``truncate``: gradients flow through at most this many steps
        (the rollout itself is not cut); long chains through a walker's contacts explode."""
        members = self.config.members

        def act(t: int, obs: torch.Tensor) -> torch.Tensor:
            return policy(obs.reshape(-1, self.obs_dim)).reshape(members, obs.shape[1], -1)

        return self._rollout_error(batch, act, truncate)

    def _rollout_error(
        self,
        batch: SequenceBatch,
        act: Callable[[int, torch.Tensor], torch.Tensor],
        truncate: int | None = None,
    ) -> torch.Tensor:
        """``[members]``: each member rolls out its mean prediction from the windows' first real
        observation, taking ``act(t, imagined obs [M, B, obs_dim])`` at step t; its squared error
        against the real observations and rewards, per step and real dimension."""
        members, d = self.config.members, self.obs_dim
        obs = batch.obs[:, 0].float().expand(members, -1, -1)  # [M, B, obs_dim], real at t = 0
        mask = batch.mask.float()
        real = torch.cat([batch.obs[:, 1:].float(), batch.reward.float().unsqueeze(-1)], dim=-1)  # [B, T, D]
        total = obs.new_zeros(members)
        for t in range(batch.horizon):
            if truncate and t and t % truncate == 0:
                obs = obs.detach()
            mean = self._forward(self._features(obs, act(t, obs)))[..., : self.target_dim]
            change = mean * self.target_std + self.target_mean  # [M, B, obs_dim + 1], real units
            obs = obs + change[..., :d]
            predicted = torch.cat([obs, change[..., d:]], dim=-1)
            # Scaled by the one-step target's std: step t's error is then the one-step error at t = 0.
            sq_err = ((predicted - real[:, t]) / self.target_std).pow(2).mean(dim=-1)  # [M, B]
            total = total + (sq_err * mask[:, t]).sum(dim=1)
        return total / mask.sum().clamp(min=1.0)

    @torch.no_grad()
    def validate(self, batch: TransitionBatch | SequenceBatch) -> dict[str, float]:
        """Held-out metrics; also re-picks the elites: the members with the lowest held-out MSE
        (one-step, or along the windows when training open loop)."""
        total, components, member_error = self._loss_terms(batch)
        best = torch.argsort(member_error)[: self.config.elites]
        self.elite_index.copy_(best)
        return {"loss": float(total), **components, "elite_mse": member_error[best].mean().item()}

    # --- the verbs ------------------------------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> State:
        """A state for real observations ``[B, obs_dim]``: no reward yet, certain, continuing."""
        obs = obs.float()
        zeros = obs.new_zeros(obs.shape[0])
        return State(
            {
                "obs": obs,
                "reward": zeros,
                "continue_logits": zeros + _CERTAIN_CONTINUE_LOGIT,
                "uncertainty": zeros,
            }
        )

    def transition(
        self,
        state: State,
        action: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        report_uncertainty: bool = True,
    ) -> State:
        """One imagined step from ``state["obs"]`` ``[B, obs_dim]`` under ``action`` ``[B, *action_shape]``.

        Stochastic: row b uses elite member m_b, drawn uniformly (rows are dealt to members like cards,
        so a batch is split almost evenly; with ``config.propagation`` "tsinf" always elite b mod E),
        and samples its Gaussian, std scaled by ``config.noise_scale``.
        Deterministic: the mean over elites of their means. Either way the continue logit is that of the
        imagined next observation.
        The same ``generator`` state gives the same draws whatever ``report_uncertainty`` is, so the
        two settings give the same predictions.
        """
        obs = state["obs"]
        x = self._features(obs, action)  # [B, in]
        batch, num_elites, d = x.shape[0], self.elite_index.shape[0], self.target_dim

        if deterministic:
            out = self._forward(x.expand(num_elites, -1, -1), elites_only=True)  # [E, B, 2D]
            y = out[..., :d].mean(dim=0)
            uncertainty = self._disagreement(out[..., :d]) if report_uncertainty else None
        else:
            # Deal rows into an [E, C] grid of slots; row b's member is slot // C, each member gets
            # <= C rows. ts1: a random injection rows -> slots, so every row's member is uniform over
            # the elites at each step; tsinf: row b -> slot (b mod E) * C + b // E, member b mod E.
            per_member = -(-batch // num_elites)  # C = ceil(B / E)
            if self.config.propagation == "tsinf":
                rows = torch.arange(batch, device=x.device)
                slot = (rows % num_elites) * per_member + rows // num_elites
            else:
                slot = torch.randperm(num_elites * per_member, generator=generator, device=x.device)[:batch]
            noise = torch.randn((batch, d), generator=generator, device=x.device, dtype=x.dtype)
            if report_uncertainty:
                out = self._forward(x.expand(num_elites, -1, -1), elites_only=True)  # [E, B, 2D]
                uncertainty = self._disagreement(out[..., :d])
                row_out = out[slot // per_member, torch.arange(batch, device=x.device)]  # [B, 2D]
            else:
                # Only each row's own member runs: member e takes the C rows in slots e*C .. (e+1)*C.
                packed = x.new_zeros(num_elites * per_member, x.shape[1]).index_copy_(0, slot, x)
                out = self._forward(packed.view(num_elites, per_member, -1), elites_only=True)
                row_out = out.reshape(num_elites * per_member, -1).index_select(0, slot)  # [B, 2D]
                uncertainty = None
            mean, logvar = self._split(row_out)
            y = torch.addcmul(mean, logvar.mul(0.5).exp_().mul_(self.config.noise_scale), noise)

        y = torch.addcmul(self.target_mean, y, self.target_std)  # back to real units
        next_obs = obs.float() + y[:, : self.obs_dim]
        if uncertainty is None:
            uncertainty = torch.full_like(y[:, 0], float("nan"))
        return State(
            {
                "obs": next_obs,
                "reward": y[:, self.obs_dim],
                "continue_logits": calibrated_continue_logits(self._continue_logits(next_obs), self.config),
                "uncertainty": uncertainty,
            }
        )

    @staticmethod
    def _disagreement(mean: torch.Tensor) -> torch.Tensor:
        """``[E, B, D]`` member means -> ``[B]``: max over members of the L2 distance to their mean."""
        return (mean - mean.mean(dim=0)).norm(dim=-1).amax(dim=0)

    def termination_head(self) -> nn.Module:
        return self.termination_net

    def decode(self, state: State) -> ModelOutput:
        return ModelOutput(
            obs=state["obs"],
            reward=state["reward"],
            continue_logits=state["continue_logits"],
            uncertainty=state["uncertainty"],
        )
