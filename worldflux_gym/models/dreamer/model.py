"""The ``dreamer`` family: a DreamerV3 world model (RSSM + heads), without the actor-critic.

State: ``{"deter": [B, D], "stoch": [B, S, K]}`` (``stoch`` is one-hot). Verbs:

- ``initial_state(B)``: the learned starting GRU state and its prior's mode;
- ``encode(obs)``: the posterior from the initial state, with no action before it;
- ``update(state, a, o')``: GRU step under ``a``, then the posterior given ``o'``;
- ``transition(state, a)``: GRU step under ``a``, then a sample (or the mode) of the prior;
- ``decode(state)``: observation mean (real units), expected reward, continue logits and, with
  uncertainty heads, the uncertainty of the step that led to the state.

Uncertainty (Plan2Explore): ``uncertainty_heads`` small MLPs each predict the next GRU state
``deter_{t+1}`` from ``(deter_t, stoch_t, a_t)``. They train in :meth:`loss` beside the world model
on its own posterior states, with their inputs and targets detached, so they do not change what
the world model learns. Where the data were they agree; a step from a state or under an action the
data never showed makes them disagree. (A deterministic target, rather than the next observation's
embedding or stochastic latent, leaves no noise for the heads to disagree about on the data: on
Pendulum, actions 4x the data's raised the disagreement 2.8x over held-out steps with this target,
1.6x with the embedding's.) ``transition`` stores that disagreement (the variance across heads,
averaged over the ``deter`` features, in squared ``deter`` units) as ``state["uncertainty"]``, or
NaN ("not measured") with ``report_uncertainty=False``, which skips the heads. States made from real
observations (``encode``, ``update``, ``observe``) carry 0. A model with ``uncertainty_heads=0``
(checkpoints saved before the heads existed) has none of this and reports no uncertainty;
``training.fit_uncertainty_heads`` gives it heads without refitting the world model.

Alignment (``core/batch.py``): with a window ``o_0..o_T`` and ``a_0..a_{T-1}`` the posterior
state ``s_{t+1}``, which has seen ``a_t`` and ``o_{t+1}``, is trained to predict ``reward[:, t]``
and ``continue_target()[:, t]``. The reward therefore depends on the action actually taken: the
action goes through the GRU before any head sees the state.

Training windows that start mid-episode (``is_first`` False) are filtered from the initial state
as if they began there. That is exactly how a dream starts from a burned-in real context window,
so the model is trained for the use it gets; the first steps of such windows simply carry less
history than DreamerV3's replay-carried states would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional as F

from worldflux_gym.core.batch import SequenceBatch, TransitionBatch
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import Capabilities, WorldModel
from worldflux_gym.core.outputs import LossOutput, ModelOutput
from worldflux_gym.core.registry import Preset, register_family
from worldflux_gym.core.spaces import action_dim, action_features, is_image_space, observation_dim
from worldflux_gym.core.state import State
from worldflux_gym.models.common import (
    DisagreementHeads,
    TwoHotSymlog,
    calibrated_continue_logits,
    check_terminal_weight,
    continue_loss_weights,
    disagreement,
    standardisation,
    symexp,
    symlog,
)
from worldflux_gym.models.dreamer.networks import MLP, ConvDecoder, ConvEncoder, StateLinear, StateMLP
from worldflux_gym.models.dreamer.rssm import RSSM


@dataclass
class DreamerConfig:
    deter: int = 512  # GRU state size
    stoch: int = 32  # number of categorical latents
    classes: int = 32  # classes per latent
    hidden: int = 512  # width of every MLP layer
    layers: int = 2  # hidden layers of the encoder, decoder and heads
    cnn_depth: int = 32  # channels of the first conv layer (image observations only)
    reward_bins: int = 255  # two-hot bins of the reward head
    unimix: float = 0.01  # uniform mix-in of the latent categoricals
    free_nats: float = 1.0  # KL below this is not penalised (free bits)
    dyn_scale: float = 0.5  # weight of KL(sg(post) || prior): trains the prior
    rep_scale: float = 0.1  # weight of KL(post || sg(prior)): regularises the posterior
    sequence_length: int = 64  # training window length T
    batch_size: int = 16  # windows per update (DreamerV3: 16 windows of 64 steps)
    learning_rate: float = 1e-4  # the trainer's default (DreamerV3 uses 1e-4 for the world model)
    grad_clip: float = 100.0  # max global gradient norm for the trainer
    # Weight of a terminal step against a non-terminal one in the continue BCE (as the ensemble's):
    # terminations are rare in data from agents that stay up, and at 1 the continue head can learn
    # "never ends" and stay there.
    termination_positive_weight: float = 1.0
    # correct the continue logits for that weight (models.common.calibrated_continue_logits)
    calibrate_terminations: bool = True
    # Vector observations enter the encoder, and are regressed by the decoder, standardised per
    # dimension (statistics fitted to the data by adapt_to_data) instead of in symlog, so that a
    # dimension with a small range weighs as much in the decoder loss as one with a large range.
    # Off by default: it lowers the open-loop error but ranked unseen walkers worse
    # (benchmarks/RESULTS.md, "How sharp a calibrated end rule is").
    normalize_observations: bool = False
    uncertainty_heads: int = 5  # Plan2Explore heads whose disagreement is the uncertainty; 0: none
    uncertainty_hidden: int = 64  # width of the heads' two hidden layers

    # A checkpoint saved before the heads existed has no `uncertainty_heads`: it has no heads (not the
    # preset's default). core/checkpoint.py fills fields missing from a saved config from this.
    checkpoint_defaults: ClassVar[dict[str, Any]] = {"uncertainty_heads": 0, "calibrate_terminations": False}

    def __post_init__(self) -> None:
        for name in (
            "deter",
            "stoch",
            "classes",
            "hidden",
            "layers",
            "cnn_depth",
            "sequence_length",
            "batch_size",
            "uncertainty_hidden",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"dreamer config {name} must be positive, got {getattr(self, name)}")
        if self.reward_bins < 2:
            raise ConfigError(f"dreamer config reward_bins must be at least 2, got {self.reward_bins}")
        if not 0.0 <= self.unimix < 1.0:
            raise ConfigError(f"dreamer config unimix must be in [0, 1), got {self.unimix}")
        check_terminal_weight("dreamer", self.termination_positive_weight)
        if self.uncertainty_heads < 0 or self.uncertainty_heads == 1:
            raise ConfigError(
                "dreamer config uncertainty_heads must be 0 (none) or at least 2 (a disagreement needs "
                f"two), got {self.uncertainty_heads}"
            )


PRESETS = {
    "ci": Preset(
        {
            "deter": 64,
            "stoch": 8,
            "classes": 8,
            "hidden": 64,
            "layers": 2,
            "cnn_depth": 8,
            "reward_bins": 63,
            "sequence_length": 16,
            "batch_size": 32,
            "learning_rate": 3e-3,
            "uncertainty_hidden": 32,
        },
        "test",
        "tiny RSSM (deter 64, 8x8 stoch, 64 hidden) for tests",
    ),
    "small": Preset(
        {
            "deter": 256,
            "stoch": 32,
            "classes": 32,
            "hidden": 256,
            "layers": 2,
            "cnn_depth": 16,
            "sequence_length": 32,
            "learning_rate": 3e-4,
        },
        "experimental",
        "CPU-sized RSSM (deter 256, 32x32 stoch, 2x256 MLPs) for proprioceptive control",
    ),
    "default": Preset(
        {
            "deter": 512,
            "stoch": 32,
            "classes": 32,
            "hidden": 512,
            "layers": 2,
            "cnn_depth": 32,
            "sequence_length": 64,
            "learning_rate": 1e-4,
        },
        "experimental",
        "DreamerV3 small-scale RSSM (deter 512, 32x32 stoch, 2x512 MLPs)",
    ),
}


def _masked_mean(value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (value * mask).sum() / mask.sum().clamp_min(1.0)


@register_family("dreamer", presets=PRESETS)
class DreamerModel(WorldModel):
    config_class = DreamerConfig
    capabilities = Capabilities(
        decodes_observations=True,
        predicts_reward=True,
        predicts_termination=True,
        reports_uncertainty=True,  # with uncertainty heads (the presets); see __init__
        recurrent=True,
    )
    batch_type = SequenceBatch

    def __init__(self, config: DreamerConfig, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__(config, observation_space, action_space)
        c = config
        self.is_image = is_image_space(observation_space)
        if self.is_image:
            shape = tuple(int(s) for s in observation_space.shape)
            self.encoder = ConvEncoder(shape, c.cnn_depth)
            embed_dim = self.encoder.outputs
        else:
            self.encoder = MLP(observation_dim(observation_space), c.hidden, c.layers)
            embed_dim = c.hidden
        self.standardises = c.normalize_observations and not self.is_image
        if self.standardises:
            self.register_buffer("obs_mean", torch.zeros(observation_dim(observation_space)))
            self.register_buffer("obs_std", torch.ones(observation_dim(observation_space)))
        self.rssm = RSSM(c.deter, c.stoch, c.classes, c.hidden, action_dim(action_space), embed_dim, c.unimix)
        # Every head reads the full state [deter, stoch].
        state_sizes = (c.deter, c.stoch, c.classes)
        if self.is_image:
            self.decoder = ConvDecoder(*state_sizes, shape, c.cnn_depth)
        else:
            self.decoder = StateMLP(*state_sizes, c.hidden, c.layers, observation_dim(observation_space))
        self.reward_head = StateMLP(*state_sizes, c.hidden, c.layers, c.reward_bins, zero_output=True)
        self.continue_head = StateMLP(*state_sizes, c.hidden, c.layers, 1)
        self.twohot = TwoHotSymlog(c.reward_bins)
        self.uncertainty_net: DisagreementHeads | None = None  # Plan2Explore heads, see the module doc
        if c.uncertainty_heads:
            width = c.uncertainty_heads * c.uncertainty_hidden  # every head's first layer in one
            inputs = c.deter + action_dim(action_space)  # [deter, action], then the one-hot stoch
            first = StateLinear(inputs, c.stoch, c.classes, width)
            self.uncertainty_net = DisagreementHeads(
                first, inputs, c.uncertainty_heads, c.uncertainty_hidden, c.deter
            )
        else:  # an instance's own capabilities: the io contract (and a checkpoint's fingerprint) follow
            self.capabilities = dataclasses.replace(type(self).capabilities, reports_uncertainty=False)

    # --- observation and action transforms ----------------------------------------------------
    def _embed(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations ``[N, *obs_shape]`` -> embeddings ``[N, E]`` (vectors enter as the decoder
        regresses them)."""
        if self.is_image:
            return self.encoder(obs)
        return self.encoder(self._obs_target(obs))

    def _obs_target(self, obs: torch.Tensor) -> torch.Tensor:
        """What the decoder regresses: ``obs/255 - 0.5`` for images; vectors standardised
        (``normalize_observations``) or in symlog."""
        if self.is_image:
            return obs.float() / 255.0 - 0.5
        if self.standardises:
            return (obs.float() - self.obs_mean) / self.obs_std
        return symlog(obs.float())

    def _obs_mean(self, prediction: torch.Tensor) -> torch.Tensor:
        """Decoder output -> observation in real units (0..255 floats for images)."""
        if self.is_image:
            return ((prediction + 0.5) * 255.0).clamp(0.0, 255.0)
        if self.standardises:
            return prediction * self.obs_std + self.obs_mean
        return symexp(prediction)

    @torch.no_grad()
    def adapt_to_data(self, batch: TransitionBatch) -> None:
        """Fit the observation standardisation (``normalize_observations``) to a large sample."""
        if self.standardises:
            mean, std = standardisation(torch.cat([batch.obs, batch.next_obs]).to(self.obs_mean.device))
            self.obs_mean.copy_(mean)
            self.obs_std.copy_(std)

    def _action(self, action: torch.Tensor) -> torch.Tensor:
        return action_features(action.to(self.device), self.action_space)

    @staticmethod
    def features(state: State) -> torch.Tensor:
        """``[B, D + S*K]``: what every head reads."""
        return torch.cat([state["deter"], state["stoch"].flatten(-2)], dim=-1)

    def _state(
        self, deter: torch.Tensor, stoch: torch.Tensor, uncertainty: torch.Tensor | None = None
    ) -> State:
        """A state; with uncertainty heads it carries ``uncertainty`` ``[B]`` (0: a real observation)."""
        if self.uncertainty_net is None:
            return State({"deter": deter, "stoch": stoch})
        if uncertainty is None:
            uncertainty = deter.new_zeros(deter.shape[0])
        return State({"deter": deter, "stoch": stoch, "uncertainty": uncertainty})

    def head_predictions(
        self, deter: torch.Tensor, stoch: torch.Tensor, action_feat: torch.Tensor
    ) -> torch.Tensor:
        """The uncertainty heads' predictions ``[heads, N, D]`` of ``deter_{t+1}`` from ``deter_t``
        ``[N, D]``, ``stoch_t`` ``[N, S, K]`` and action features ``[N, A]``."""
        if self.uncertainty_net is None:
            raise RuntimeError("this dreamer model has no uncertainty heads (uncertainty_heads=0)")
        return self.uncertainty_net(torch.cat([deter, action_feat], dim=-1), stoch)

    # --- the verbs ------------------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> State:
        """The learned starting GRU state with the mode of its prior, before any observation."""
        deter = self.rssm.initial_deter_state(batch_size).contiguous()
        stoch = self.rssm.sample(self.rssm.prior(deter), deterministic=True)
        return self._state(deter, stoch)

    def encode(
        self, obs: torch.Tensor, *, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> State:
        """Posterior for ``obs`` ``[B, *obs_shape]`` from the initial state, no action before it.

        Uses the posterior's mode by default so that a burn-in is reproducible without a generator.
        """
        deter = self.rssm.initial_deter_state(obs.shape[0]).contiguous()
        post = self.rssm.posterior(deter, self._embed(obs.to(self.device)))
        return self._state(deter, self.rssm.sample(post, deterministic, generator))

    def update(
        self,
        state: State,
        action: torch.Tensor,
        obs: torch.Tensor,
        *,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> State:
        """Posterior step: the GRU takes ``action``, then ``stoch`` is inferred from ``obs``."""
        return self._posterior_step(
            state, self._action(action), self._embed(obs.to(self.device)), deterministic, generator
        )

    def _posterior_step(self, state, action_feat, embed, deterministic, generator) -> State:
        deter = self.rssm.recur(state["deter"], state["stoch"], action_feat)
        post = self.rssm.posterior(deter, embed)
        return self._state(deter, self.rssm.sample(post, deterministic, generator))

    def observe(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        *,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> State:
        """Burn in ``obs`` ``[B, T+1, ...]`` and ``action`` ``[B, T, ...]``; the state after ``o_T``.

        Same result as ``encode`` + ``update`` per step, but every observation is embedded in one
        batched call, leaving only the GRU in the time loop.
        """
        obs = obs.to(self.device)
        embed = self._embed(obs)
        actions = self._action(action)
        deter = self.rssm.initial_deter_state(obs.shape[0]).contiguous()
        post = self.rssm.posterior(deter, embed[:, 0])
        state = self._state(deter, self.rssm.sample(post, deterministic, generator))
        for t in range(actions.shape[1]):
            state = self._posterior_step(state, actions[:, t], embed[:, t + 1], deterministic, generator)
        return state

    def transition(
        self,
        state: State,
        action: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        report_uncertainty: bool = True,
    ) -> State:
        """Prior step: GRU under ``action`` ``[B, *action_shape]``, then sample (or mode of) the prior.

        With uncertainty heads the new state's ``uncertainty`` is their disagreement on this step,
        or NaN when ``report_uncertainty`` is off (the heads are skipped; the step is the same).
        """
        action_feat = self._action(action)
        deter = self.rssm.recur(state["deter"], state["stoch"], action_feat)
        stoch = self.rssm.sample(self.rssm.prior(deter), deterministic, generator)
        if self.uncertainty_net is None:
            return State({"deter": deter, "stoch": stoch})
        if report_uncertainty:
            uncertainty = disagreement(
                self.head_predictions(state["deter"], state["stoch"], action_feat).float()
            )
        else:
            uncertainty = torch.full_like(deter[:, 0], float("nan"))
        return self._state(deter, stoch, uncertainty)

    def termination_head(self) -> nn.Module:
        return self.continue_head

    def decode(self, state: State) -> ModelOutput:
        """Observation mean ``[B, *obs_shape]``, expected reward ``[B]``, continue logits ``[B]``."""
        deter, stoch = state["deter"], state["stoch"]
        return ModelOutput(
            obs=self._obs_mean(self.decoder(deter, stoch)),
            reward=self.twohot.mean(self.reward_head(deter, stoch)),
            continue_logits=calibrated_continue_logits(
                self.continue_head(deter, stoch).squeeze(-1), self.config
            ),
            uncertainty=state.tensors.get("uncertainty"),
        )

    # --- training -------------------------------------------------------------------------------
    def loss(self, batch: SequenceBatch) -> LossOutput:
        """DreamerV3's world-model loss on windows ``obs`` ``[B, T+1, ...]``, ``action`` ``[B, T, ...]``.

        ``pred`` (decoder MSE of :meth:`_obs_target` summed over observation dims, two-hot reward
        cross-entropy, continue BCE on terminations only) + ``dyn_scale * max(free, KL(sg(q) || p))`` +
        ``rep_scale * max(free, KL(q || sg(p)))``. Padded steps (``mask`` False) are left out.
        """
        batch = self._check_batch(batch)
        B, T = batch.reward.shape
        embed, actions, deter, post, stoch = self._filter(batch)
        prior = self.rssm.prior(deter)

        # Step 0 (o_0) is always real; step t+1 is real where mask[:, t] is.
        valid = torch.cat([batch.mask.new_ones(B, 1), batch.mask], dim=1).float()  # [B, T+1]
        step = batch.mask.float()  # [B, T]

        error = (self.decoder(deter, stoch) - self._obs_target(batch.obs)).pow(2)
        obs_loss = _masked_mean(error.flatten(2).sum(-1), valid)
        # s_{t+1} (index 1:) has seen a_t and o_{t+1}: it owns reward[:, t] and continue[:, t].
        after = deter[:, 1:], stoch[:, 1:]
        reward_loss = _masked_mean(self.twohot.loss(self.reward_head(*after), batch.reward.float()), step)
        goes_on = batch.continue_target()
        weight = continue_loss_weights(goes_on, self.config.termination_positive_weight)
        continue_loss = _masked_mean(
            F.binary_cross_entropy_with_logits(
                self.continue_head(*after).squeeze(-1), goes_on, weight=weight, reduction="none"
            ),
            step,
        )
        # KL balancing: the prior moves toward the posterior faster than the reverse; free bits
        # stop pushing once the KL is below `free_nats` so the representation is not collapsed.
        kl_dyn = self.rssm.kl(post.detach(), prior)
        kl_rep = self.rssm.kl(post, prior.detach())
        dyn_loss = _masked_mean(kl_dyn.clamp_min(self.config.free_nats), valid)
        rep_loss = _masked_mean(kl_rep.clamp_min(self.config.free_nats), valid)

        total = (
            obs_loss
            + reward_loss
            + continue_loss
            + self.config.dyn_scale * dyn_loss
            + self.config.rep_scale * rep_loss
        )
        components = {
            "obs": obs_loss.item(),
            "reward": reward_loss.item(),
            "continue": continue_loss.item(),
            "kl": _masked_mean(kl_dyn, valid).item(),
            "dyn": dyn_loss.item(),
            "rep": rep_loss.item(),
        }
        if self.uncertainty_net is not None:
            heads_loss = self._heads_loss(deter, stoch, actions, step)
            total = total + heads_loss
            components["uncertainty_heads"] = heads_loss.item()
        return LossOutput(total, components)

    def uncertainty_head_loss(self, batch: SequenceBatch) -> torch.Tensor:
        """The uncertainty heads' loss alone, on a frozen world model (``fit_uncertainty_heads``):
        the window is filtered without gradients, only the heads' weights get any."""
        batch = self._check_batch(batch)
        with torch.no_grad():
            _, actions, deter, _, stoch = self._filter(batch)
        return self._heads_loss(deter, stoch, actions, batch.mask.float())

    def _heads_loss(self, deter, stoch, actions, step) -> torch.Tensor:
        """The heads predict ``deter_{t+1}`` from the posterior state ``(deter_t, stoch_t)`` and
        ``a_t``; inputs and targets detached: the heads learn from the world model, never teach it."""
        deter, stoch, actions = deter.detach(), stoch.detach(), actions.detach()
        x = torch.cat([deter[:, :-1], actions], dim=-1).flatten(0, 1)
        return self.uncertainty_net.fit_loss(
            deter[:, 1:].flatten(0, 1), step.flatten(), x, stoch[:, :-1].flatten(0, 1)
        )

    def _check_batch(self, batch: SequenceBatch) -> SequenceBatch:
        if not isinstance(batch, SequenceBatch):
            raise TypeError(
                f"the dreamer family trains on SequenceBatch windows, got {type(batch).__name__}; "
                "sample them with EpisodeBuffer.sample_sequences(batch, model.sequence_length, rng)"
            )
        return batch.to(self.device)

    def _filter(self, batch: SequenceBatch):
        """Embeddings ``[B, T+1, E]``, action features ``[B, T, A]``, and the window filtered with
        posterior samples (straight-through): ``deter`` ``[B, T+1, D]``, posterior ``[B, T+1, S, K]``
        and its samples ``stoch`` ``[B, T+1, S, K]``."""
        B, T = batch.reward.shape
        embed = self._embed(batch.obs)  # [B, T+1, E]
        actions = self._action(batch.action)  # [B, T, A]
        # The prior does not feed back into the filter, so the caller computes it once for all steps.
        deter = self.rssm.initial_deter_state(B)
        post = self.rssm.posterior(deter, embed[:, 0])
        stoch = self.rssm.sample(post)
        deters, posts, stochs = [deter], [post], [stoch]
        for t in range(T):
            deter = self.rssm.recur(deter, stoch, actions[:, t])
            post = self.rssm.posterior(deter, embed[:, t + 1])
            stoch = self.rssm.sample(post)
            deters.append(deter)
            posts.append(post)
            stochs.append(stoch)
        return embed, actions, torch.stack(deters, 1), torch.stack(posts, 1), torch.stack(stochs, 1)
