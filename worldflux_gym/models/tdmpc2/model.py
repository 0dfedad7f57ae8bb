"""TD-MPC2 (Hansen, Su & Wang, 2024) as a worldflux-gym family: an implicit, decoder-free world model.

Components (every MLP is ``Linear -> LayerNorm -> Mish``, see ``networks.py``):

- encoder ``h(o) -> z``: a SimNorm latent ``[B, latent_dim]`` in [0, 1];
- dynamics ``d(z_t, a_t) -> z_{t+1}``: deterministic, SimNorm output;
- reward ``R(z_t, a_t)``: logits over two-hot symlog bins, the reward *after* ``a_t``;
- termination ``C(z_t, a_t)``: logit that the episode goes on after ``a_t`` (real terminations only);
- ``num_q`` Q functions ``Q_i(z_t, a_t)`` (two-hot logits, dropout) with Polyak-averaged targets;
- a policy prior ``pi(z)``: squashed Gaussian trained with a max-entropy objective, used by the
  MPPI planner (``planner.py``) and for the TD targets;
- ``uncertainty_heads`` one-step predictors ``z_{t+1} ~ f_k(z_t, a_t)`` (Plan2Explore) whose
  disagreement is the model's uncertainty, see below.

It decodes no observations by default: the dream env's observation space is the latent
``Box(0, 1, (latent_dim,))`` and an observation wrapper encodes the real env's observations with
:meth:`TDMPC2Model.encode`. With ``observation_decoder`` a decoder ``o ~ g(z)`` is fitted beside the
model on *detached* encoder latents (standardised observations, MSE): the representation learns
exactly what it learns without one, and the dream shows observations in the real env's space, so an
agent trained on the real env acts in it (and an agent trained in it acts in the real env) unwrapped.

Alignment (``core/batch.py``): with ``obs`` o_0..o_T and ``action`` a_0..a_{T-1}, ``reward[:, t]`` is
the target of ``R(z_t, a_t)`` and ``continue_target()[:, t]`` the target of ``C(z_t, a_t)``. Both
predictions are stored in the state returned by ``transition`` (the state after the action).

Training: :meth:`loss` takes a ``SequenceBatch`` and sums the paper's terms: the multi-step latent
consistency loss (rollout from ``h(o_0)`` compared with ``h(o_t)``) and the reward and value
cross-entropies on the rolled-out latents, each weighted by ``rho**t`` over the horizon; the termination
BCE on encoded latents (see the comment in ``loss`` for why); and the policy loss. Padded steps
(``batch.mask`` False) weigh nothing anywhere. The policy
loss only reaches the policy's weights (latents and Q weights are detached), so one optimizer over all
parameters is correct. Target Q networks are Polyak-averaged at the start of every ``loss`` call made
with gradients enabled in training mode (i.e. once per optimizer step, one step behind, which is
equivalent to updating right after the step); validation calls (``no_grad``) leave them alone.

Uncertainty: the heads regress the encoder's latent of the real next observation ``h(o_{t+1})`` from
``(h(o_t), a_t)``, in :meth:`loss` with inputs and targets detached (they learn from the model and
change nothing in it). Trained on the same data from different initialisations, they agree where the
data were and disagree elsewhere: a latent the encoder never produced (an imagined rollout that
drifted) or an action never taken there. ``transition`` stores their disagreement (the variance across
heads, averaged over the latent's features) as ``state["uncertainty"]``, or NaN ("not measured") with
``report_uncertainty=False``, which skips the heads; encoded states carry 0. (The Q ensemble's
disagreement measures value uncertainty, not model error, and is not used.) A model with
``uncertainty_heads=0`` (checkpoints saved before the heads existed) reports no uncertainty;
``training.fit_uncertainty_heads`` gives it heads without refitting the world model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn
from torch.func import functional_call

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
from worldflux_gym.core.spaces import action_dim, is_image_space, observation_dim
from worldflux_gym.models.common import (
    DisagreementHeads,
    TwoHotSymlog,
    calibrated_continue_logits,
    check_terminal_weight,
    continue_loss_weights,
    disagreement,
)
from worldflux_gym.models.tdmpc2.networks import QEnsemble, SimNorm, mlp, squashed_gaussian

# Logit of "the episode goes on" for a state that has just been encoded (no step taken yet).
_CONTINUE_LOGIT_AT_START = 10.0


@dataclass
class TDMPC2Config:
    # sizes (the paper's 5M model: latent 512, mlp 512, encoder 256, 5 Qs)
    latent_dim: int = 512
    simnorm_dim: int = 8  # SimNorm group size
    enc_dim: int = 256
    enc_layers: int = 1  # hidden layers of the encoder
    mlp_dim: int = 512
    mlp_layers: int = 2  # hidden layers of dynamics, reward, termination, Q and policy
    num_q: int = 5
    q_dropout: float = 0.01
    num_bins: int = 101
    vmin: float = -10.0  # symlog range of the reward/value bins
    vmax: float = 10.0
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    # optimisation (the Trainer reads these fields when its own are left unset)
    batch_size: int = 256  # windows per update
    learning_rate: float = 3e-4
    grad_clip: float = 20.0
    # objective
    sequence_length: int = 3  # horizon H of the consistency loss (T of the SequenceBatch)
    rho: float = 0.5  # temporal discount of the per-step losses
    discount: float = 0.99  # RL discount of the TD targets
    tau: float = 0.01  # Polyak rate of the target Q networks
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    termination_coef: float = 1.0
    # Weight of a terminal step against a non-terminal one in the continue BCE (as the other
    # families'): terminations are rare in data from agents that stay up.
    termination_positive_weight: float = 1.0
    # correct the continue logits for that weight (models.common.calibrated_continue_logits)
    calibrate_terminations: bool = True
    entropy_coef: float = 1e-4
    scale_tau: float = 0.01  # EMA rate of the running Q scale that normalises the policy loss
    # MPPI planner defaults (TDMPC2Planner reads them; arguments override)
    plan_horizon: int = 3
    plan_iterations: int = 6
    plan_samples: int = 512
    plan_elites: int = 64
    plan_policy_samples: int = 24
    plan_temperature: float = 0.5
    plan_min_std: float = 0.05
    plan_max_std: float = 2.0
    # uncertainty: Plan2Explore heads whose disagreement is the model's uncertainty; 0: none
    uncertainty_heads: int = 5
    uncertainty_hidden: int = 64  # width of the heads' two hidden layers
    # decode observations from the latent (see the module docstring); the dream then shows them
    observation_decoder: bool = False

    # A checkpoint saved before the heads existed has no `uncertainty_heads`: it has no heads (not the
    # preset's default). core/checkpoint.py fills fields missing from a saved config from this.
    checkpoint_defaults: ClassVar[dict[str, Any]] = {"uncertainty_heads": 0, "calibrate_terminations": False}

    def __post_init__(self) -> None:
        check_terminal_weight("tdmpc2", self.termination_positive_weight)
        if self.uncertainty_heads < 0 or self.uncertainty_heads == 1:
            raise ConfigError(
                "tdmpc2 config uncertainty_heads must be 0 (none) or at least 2 (a disagreement needs "
                f"two), got {self.uncertainty_heads}"
            )
        if self.uncertainty_hidden < 1:
            raise ConfigError(
                f"tdmpc2 config uncertainty_hidden must be positive, got {self.uncertainty_hidden}"
            )


_SHAPES = "Walker2d-v5 spaces (17-D observation, 6-D action)"


@register_family(
    "tdmpc2",
    presets={
        "ci": Preset(
            {
                "latent_dim": 32,
                "enc_dim": 64,
                "mlp_dim": 64,
                "num_bins": 51,
                "batch_size": 64,
                "learning_rate": 1e-3,
                "plan_samples": 64,
                "plan_elites": 8,
                "plan_policy_samples": 8,
                "plan_iterations": 3,
                "uncertainty_hidden": 32,
            },
            "test",
            "tiny TD-MPC2 for tests: latent 32, MLPs 64, 5 Qs",
        ),
        "small": Preset(
            {"latent_dim": 128, "enc_dim": 128, "mlp_dim": 256},
            "experimental",
            "~1M-parameter TD-MPC2 for CPU: latent 128, MLPs 256, 5 Qs",
        ),
        "default": Preset(
            {},
            "experimental",
            "the paper's ~5M configuration: latent 512, MLPs 512, encoder 256, 5 Qs",
        ),
    },
)
class TDMPC2Model(WorldModel):
    """TD-MPC2 world model; see the module docstring. ``latent_dim`` is the dream observation size."""

    config_class = TDMPC2Config
    capabilities = Capabilities(
        decodes_observations=False,  # with an observation_decoder it does; see __init__
        predicts_reward=True,
        predicts_termination=True,
        reports_uncertainty=True,  # with uncertainty heads (the presets); see __init__
        recurrent=False,
    )
    batch_type = SequenceBatch

    def __init__(self, config: TDMPC2Config, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(config, observation_space, action_space)
        if is_image_space(observation_space):
            raise SpaceError(
                "the tdmpc2 family handles vector observations only (no convolutional encoder yet); "
                "use the dreamer family for images"
            )
        if config.latent_dim % config.simnorm_dim:
            raise ConfigError(
                f"latent_dim ({config.latent_dim}) must be a multiple of simnorm_dim ({config.simnorm_dim})"
            )
        self.latent_dim = config.latent_dim
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.obs_dim = observation_dim(observation_space)
        self.action_dim = action_dim(action_space)
        latent, hidden = config.latent_dim, [config.mlp_dim] * config.mlp_layers
        za = latent + self.action_dim

        # Observation normalisation, fitted by adapt_to_data (buffers: saved with the weights).
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))
        # Box actions are rescaled to [-1, 1] inside the model (the policy's tanh range).
        if not self.discrete:
            low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise SpaceError(f"tdmpc2 needs a bounded Box action space, got {action_space!r}")
            self.register_buffer("action_center", torch.tensor((high + low) / 2, dtype=torch.float32), False)
            self.register_buffer("action_half", torch.tensor((high - low) / 2, dtype=torch.float32), False)

        self.encoder = mlp(
            self.obs_dim, [config.enc_dim] * config.enc_layers, latent, output=SimNorm(config.simnorm_dim)
        )
        self.dynamics = mlp(za, hidden, latent, output=SimNorm(config.simnorm_dim))
        self.reward_head = mlp(za, hidden, config.num_bins)
        self.continue_head = mlp(za, hidden, 1)
        self.q = QEnsemble(config.num_q, za, hidden, config.num_bins, config.q_dropout)
        # A policy prior only makes sense for continuous actions; Discrete actions are maximised exactly.
        self.policy = None if self.discrete else mlp(latent, hidden, 2 * self.action_dim)
        self.two_hot = TwoHotSymlog(config.num_bins, config.vmin, config.vmax)
        with torch.no_grad():  # start the reward head at zero, like the Q heads
            self.reward_head[-1].weight.zero_()
            self.reward_head[-1].bias.zero_()

        # Target Q networks: buffers (not parameters: no gradients, not counted, but saved).
        self._target_names = {
            name: "target_q__" + name.replace(".", "__") for name, _ in self.q.named_parameters()
        }
        for name, param in self.q.named_parameters():
            self.register_buffer(self._target_names[name], param.detach().clone())
        # Running scale of Q values (5th-95th percentile range) that normalises the policy objective.
        self.register_buffer("q_scale", torch.ones(()))
        self.uncertainty_net: DisagreementHeads | None = None  # Plan2Explore heads, see the module doc
        if config.uncertainty_heads:
            # every head's first layer in one
            first = torch.nn.Linear(za, config.uncertainty_heads * config.uncertainty_hidden)
            self.uncertainty_net = DisagreementHeads(
                first, za, config.uncertainty_heads, config.uncertainty_hidden, latent
            )
        self.observation_decoder: nn.Module | None = None
        if config.observation_decoder:
            self.observation_decoder = mlp(latent, hidden, self.obs_dim)
        # an instance's own capabilities: the io contract (and a checkpoint's fingerprint) follow
        self.capabilities = dataclasses.replace(
            type(self).capabilities,
            reports_uncertainty=self.uncertainty_net is not None,
            decodes_observations=self.observation_decoder is not None,
        )

    # --- actions --------------------------------------------------------------------------------
    def action_to_features(self, action: torch.Tensor) -> torch.Tensor:
        """Env actions ``[..., *action_shape]`` -> network features ``[..., action_dim]``.

        Box actions are rescaled to [-1, 1]; Discrete indices become one-hot vectors.
        """
        if self.discrete:
            index = action.long() - int(self.action_space.start)
            return F.one_hot(index, self.action_dim).float()
        return (action.float() - self.action_center) / self.action_half

    def features_to_action(self, features: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`action_to_features` for Box actions: [-1, 1] -> the env's bounds."""
        return self.action_center + self.action_half * features.clamp(-1.0, 1.0)

    # --- networks on latents --------------------------------------------------------------------
    def encode_latent(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations ``[..., obs_dim]`` -> SimNorm latents ``[..., latent_dim]``."""
        return self.encoder((obs.float() - self.obs_mean) / self.obs_std)

    def pi(
        self, z: torch.Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy prior: latents ``[..., L]`` -> features in [-1, 1] ``[..., A]``, log-prob ``[...]``."""
        if self.policy is None:
            raise NotImplementedError("the tdmpc2 policy prior exists for Box action spaces only")
        mean, raw_log_std = self.policy(z).chunk(2, dim=-1)
        c = self.config
        # a smooth squash of log std into [log_std_min, log_std_max]
        log_std = c.log_std_min + 0.5 * (c.log_std_max - c.log_std_min) * (torch.tanh(raw_log_std) + 1)
        return squashed_gaussian(mean, log_std, deterministic=deterministic, generator=generator)

    def q_logits(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        *,
        target: bool = False,
        heads: torch.Tensor | None = None,
        frozen: bool = False,
    ) -> torch.Tensor:
        """Q logits ``[E, N, num_bins]`` for latents ``[N, L]`` and action features ``[N, A]``.

        ``heads`` picks a subset of members (only those are computed, ``E = len(heads)``);
        ``target`` uses the Polyak-averaged weights; ``frozen`` the online weights, detached.
        """
        x = torch.cat([z, a], dim=-1)
        if not (target or frozen) and heads is None:
            return self.q(x)
        if target:
            weights = {name: getattr(self, buffer) for name, buffer in self._target_names.items()}
        else:
            weights = {name: p.detach() if frozen else p for name, p in self.q.named_parameters()}
        if heads is not None:  # every Q weight has the member as its leading dimension
            weights = {name: w[heads] for name, w in weights.items()}
        return functional_call(self.q, weights, (x,))

    def q_value(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        *,
        target: bool = False,
        frozen: bool = False,
        reduce: str = "min",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Q value ``[N]`` of two randomly chosen heads: their ``"min"`` or their ``"mean"``."""
        device = generator.device if generator is not None else torch.device("cpu")
        heads = torch.randperm(self.config.num_q, generator=generator, device=device)[:2].to(z.device)
        logits = self.q_logits(z, a, target=target, frozen=frozen, heads=heads)
        values = self.two_hot.mean(logits)  # [2, N]
        return values.min(0).values if reduce == "min" else values.mean(0)

    def state_value(self, z: torch.Tensor, *, target: bool = False, reduce: str = "min", generator=None):
        """V(z) ``[N]``: Q at the policy's action (Box), or the best action exactly (Discrete)."""
        if self.discrete:
            n, k = z.shape[0], self.action_dim
            actions = torch.eye(k, device=z.device).repeat(n, 1)  # every one-hot for every row
            q = self.q_value(
                z.repeat_interleave(k, 0), actions, target=target, reduce=reduce, generator=generator
            )
            return q.view(n, k).max(-1).values
        a, _ = self.pi(z, generator=generator)
        return self.q_value(z, a, target=target, reduce=reduce, generator=generator)

    def step_latent(
        self, z: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step on latents and action features: ``(z_next [N, L], reward [N], continue_logits [N])``."""
        x = torch.cat([z, a], dim=-1)
        continue_logits = calibrated_continue_logits(self.continue_head(x).squeeze(-1), self.config)
        return self.dynamics(x), self.two_hot.mean(self.reward_head(x)), continue_logits

    def head_predictions(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The uncertainty heads' predictions ``[heads, N, L]`` of ``z_{t+1}`` from latents ``[N, L]``
        and action features ``[N, A]``."""
        if self.uncertainty_net is None:
            raise RuntimeError("this tdmpc2 model has no uncertainty heads (uncertainty_heads=0)")
        return self.uncertainty_net(torch.cat([z, a], dim=-1))

    # --- the contract verbs ---------------------------------------------------------------------
    def encode(self, obs: torch.Tensor) -> State:
        z = self.encode_latent(obs)
        zeros = z.new_zeros(z.shape[0])
        tensors = {"latent": z, "reward": zeros, "continue_logits": zeros + _CONTINUE_LOGIT_AT_START}
        if self.uncertainty_net is not None:
            tensors["uncertainty"] = zeros  # a real observation
        return State(tensors)

    def transition(
        self,
        state: State,
        action: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        report_uncertainty: bool = True,
    ) -> State:
        """Deterministic latent step; reward and continue logits are ``R, C(z_t, a_t)`` of ``action``.

        With uncertainty heads the new state's ``uncertainty`` is their disagreement on this step,
        or NaN when ``report_uncertainty`` is off (the heads are skipped; the step is the same).
        """
        a = self.action_to_features(action)
        z, reward, cont = self.step_latent(state["latent"], a)
        tensors = {"latent": z, "reward": reward, "continue_logits": cont}
        if self.uncertainty_net is not None:
            if report_uncertainty:
                tensors["uncertainty"] = disagreement(self.head_predictions(state["latent"], a).float())
            else:
                tensors["uncertainty"] = torch.full_like(reward, float("nan"))
        return State(tensors)

    def termination_head(self) -> nn.Module:
        return self.continue_head

    def decode(self, state: State) -> ModelOutput:
        obs = None
        if self.observation_decoder is not None:
            z = state["latent"]
            obs = self.observation_decoder(z) * self.obs_std + self.obs_mean
            obs = obs.view(*z.shape[:-1], *self.observation_space.shape)
        return ModelOutput(
            obs=obs,
            reward=state["reward"],
            continue_logits=state["continue_logits"],
            uncertainty=state.tensors.get("uncertainty"),
            extras={"latent": state["latent"]},
        )

    def adapt_to_data(self, batch: TransitionBatch) -> None:
        """Fit the observation normalisation to a large sample of training data."""
        obs = torch.cat([batch.obs, batch.next_obs]).float().to(self.obs_mean.device)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp_min(1e-3))

    # --- training -------------------------------------------------------------------------------
    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak-average the target Q networks towards the online ones (rate ``tau``)."""
        for name, param in self.q.named_parameters():
            getattr(self, self._target_names[name]).lerp_(param, self.config.tau)

    def loss(self, batch: SequenceBatch | TransitionBatch) -> LossOutput:
        """The TD-MPC2 objective on windows ``obs [B, T+1, D]``, ``action [B, T, ...]``, ``reward [B, T]``."""
        if isinstance(batch, TransitionBatch):  # a one-step window
            batch = _as_sequence(batch)
        c = self.config
        updating = self.training and torch.is_grad_enabled()
        if updating:
            self.update_targets()
        B, T = batch.reward.shape
        action = self.action_to_features(batch.action)  # [B, T, A]
        mask = batch.mask.float()  # [B, T]: padded steps past an episode's end weigh nothing
        rho = c.rho ** torch.arange(T, device=mask.device, dtype=torch.float32)
        weight = rho * mask  # [B, T]

        # Targets: the encoder's latents of the real next observations, without gradient.
        with torch.no_grad():
            z_target = self.encode_latent(batch.obs[:, 1:])  # [B, T, L]

        # Multi-step latent rollout from h(o_0) with the real actions.
        z_encoded = self.encode_latent(batch.obs[:, :-1])  # [B, T, L]: h(o_t), where a_t was taken
        z = z_encoded[:, 0]
        zs = [z]
        for t in range(T):
            z = self.dynamics(torch.cat([z, action[:, t]], dim=-1))
            zs.append(z)
        z_all = torch.stack(zs, dim=1)  # [B, T+1, L]
        z_taken = z_all[:, :-1]  # latents in which a_t was taken
        consistency = _weighted_mean((z_all[:, 1:] - z_target).pow(2).mean(-1), weight)

        x = torch.cat([z_taken, action], dim=-1)  # [B, T, L+A]
        reward_loss = _weighted_mean(self.two_hot.loss(self.reward_head(x), batch.reward), weight)
        # The termination head learns on encoded latents h(o_t), not rolled-out ones, so that it judges
        # states rather than where a step sits in its window.
        continue_logits = self.continue_head(torch.cat([z_encoded, action], -1)).squeeze(-1)
        # Only real terminations end an episode: continue_target() counts truncation as going on.
        goes_on = batch.continue_target()
        terminal_weight = continue_loss_weights(goes_on, c.termination_positive_weight)
        continue_loss = _weighted_mean(
            F.binary_cross_entropy_with_logits(
                continue_logits, goes_on, weight=terminal_weight, reduction="none"
            ),
            mask,
        )

        # TD targets r + gamma * continue * min(two random target Qs at pi(z')), z' the real next latent.
        with torch.no_grad():
            next_value = self.state_value(z_target.reshape(B * T, -1), target=True).view(B, T)
            td_target = batch.reward + c.discount * batch.continue_target() * next_value
        q_logits = self.q(x.reshape(B * T, -1)).view(c.num_q, B, T, -1)
        value_ce = self.two_hot.loss(q_logits, td_target.expand(c.num_q, B, T)).sum(0)
        value_loss = _weighted_mean(value_ce, weight)

        model_loss = (
            c.consistency_coef * consistency
            + c.reward_coef * reward_loss
            + c.value_coef * value_loss
            + c.termination_coef * continue_loss
        )
        policy_loss, policy_entropy = self._policy_loss(z_all.detach(), batch.mask, rho, updating)
        total = model_loss + policy_loss
        components = {
            "consistency": consistency.item(),
            "reward": reward_loss.item(),
            "value": value_loss.item(),
            "continue": continue_loss.item(),
            "policy": policy_loss.item(),
            "policy_entropy": policy_entropy,
            "q_scale": self.q_scale.item(),
        }
        if self.uncertainty_net is not None:
            heads_loss = self._heads_loss(z_encoded, action, z_target, mask)
            total = total + heads_loss
            components["uncertainty_heads"] = heads_loss.item()
        if self.observation_decoder is not None:
            # every real observation of the window: h(o_0) and the targets' h(o_{t+1})
            z_seen = torch.cat([z_encoded[:, :1], z_target], dim=1)  # [B, T+1, L]
            seen = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
            decoder_loss = self._decoder_loss(z_seen, batch.obs, seen)
            total = total + decoder_loss
            components["decoder"] = decoder_loss.item()
        return LossOutput(total, components)

    def _decoder_loss(self, z: torch.Tensor, obs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """MSE of the decoder on detached latents ``[B, N, L]`` against the standardised observations."""
        assert self.observation_decoder is not None
        target = (obs.float().flatten(2) - self.obs_mean) / self.obs_std
        error = (self.observation_decoder(z.detach()) - target).pow(2).mean(-1)
        return _weighted_mean(error, weight)

    def uncertainty_head_loss(self, batch: SequenceBatch | TransitionBatch) -> torch.Tensor:
        """The uncertainty heads' loss alone, on a frozen world model (``fit_uncertainty_heads``):
        the latents are encoded without gradients, only the heads' weights get any."""
        if isinstance(batch, TransitionBatch):
            batch = _as_sequence(batch)
        with torch.no_grad():
            z = self.encode_latent(batch.obs)  # [B, T+1, L]
            action = self.action_to_features(batch.action)
        return self._heads_loss(z[:, :-1], action, z[:, 1:], batch.mask.float())

    def _heads_loss(self, z: torch.Tensor, action: torch.Tensor, z_next: torch.Tensor, mask: torch.Tensor):
        """The heads predict ``h(o_{t+1})`` from ``(h(o_t), a_t)`` (``[B, T, ...]`` each), every real
        step alike; inputs and targets detached: the heads learn from the model, never teach it."""
        x = torch.cat([z, action], dim=-1).detach().flatten(0, 1)
        return self.uncertainty_net.fit_loss(z_next.detach().flatten(0, 1), mask.flatten(), x)

    def _policy_loss(
        self, z: torch.Tensor, mask: torch.Tensor, rho: torch.Tensor, update_scale: bool
    ) -> tuple[torch.Tensor, float]:
        """Max-entropy policy objective on detached latents ``[B, T+1, L]``; reaches only ``pi``'s weights."""
        if self.policy is None:
            return z.new_zeros(()), 0.0
        B, T1, L = z.shape
        # z_0 is always valid, z_{t+1} is valid when step t is
        valid = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).float()
        weight = torch.cat([rho, rho[-1:] * self.config.rho]) * valid
        a, log_prob = self.pi(z.reshape(B * T1, L))
        # Q with detached weights, so the policy gradient does not move the critics.
        q = self.q_value(z.reshape(B * T1, L), a, frozen=True, reduce="mean")
        if update_scale:
            with torch.no_grad():
                spread = torch.quantile(q.detach(), 0.95) - torch.quantile(q.detach(), 0.05)
                self.q_scale.lerp_(spread.clamp_min(1.0), self.config.scale_tau)
        objective = self.config.entropy_coef * log_prob - q / self.q_scale  # [B * (T+1)]
        return _weighted_mean(objective.view(B, T1), weight), float(
            _weighted_mean(-log_prob.detach().view(B, T1), valid)
        )

    @torch.no_grad()
    def validate(self, batch: SequenceBatch | TransitionBatch) -> dict[str, float]:
        """Held-out loss parts plus the open-loop latent error against the persistence baseline."""
        if isinstance(batch, TransitionBatch):
            batch = _as_sequence(batch)
        out = self.loss(batch)
        metrics = {"loss": float(out.loss), **out.components}
        z = self.encode_latent(batch.obs[:, 0])
        z0 = z
        action = self.action_to_features(batch.action)
        mask = batch.mask.float()
        z_real = self.encode_latent(batch.obs[:, 1:])
        model_err, still_err = [], []
        for t in range(batch.horizon):
            z = self.dynamics(torch.cat([z, action[:, t]], -1))
            model_err.append((z - z_real[:, t]).pow(2).sum(-1))
            still_err.append((z0 - z_real[:, t]).pow(2).sum(-1))
        metrics["latent_error"] = float(_weighted_mean(torch.stack(model_err, 1), mask))
        metrics["latent_error_persistence"] = float(_weighted_mean(torch.stack(still_err, 1), mask))
        return metrics


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (x * weight).sum() / weight.sum().clamp_min(1e-8)


def _as_sequence(batch: TransitionBatch) -> SequenceBatch:
    """A batch of single transitions as one-step windows."""
    n = len(batch)
    return SequenceBatch(
        obs=torch.stack([batch.obs, batch.next_obs], dim=1),
        action=batch.action.unsqueeze(1),
        reward=batch.reward.unsqueeze(1),
        terminated=batch.terminated.unsqueeze(1),
        truncated=batch.truncated.unsqueeze(1),
        mask=torch.ones(n, 1, dtype=torch.bool, device=batch.reward.device),
        is_first=torch.zeros(n, dtype=torch.bool, device=batch.reward.device),
    )
