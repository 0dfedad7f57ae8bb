"""A small but real family used by the contract tests: a deterministic one-step MLP.

It predicts the observation change, the reward and the continue logit from ``(o_t, a_t)``, stores
them in the state after the action, and trains with MSE/BCE. Registered as ``tiny-mlp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from worldflux_gym.core import (
    Capabilities,
    LossOutput,
    ModelOutput,
    Preset,
    State,
    TransitionBatch,
    WorldModel,
    register_family,
)
from worldflux_gym.core.spaces import action_dim, action_features, observation_dim


@dataclass
class TinyConfig:
    hidden: int = 32
    layers: int = 2


@register_family(
    "tiny-mlp",
    presets={
        "ci": Preset({"hidden": 16}, "test", "two 16-unit layers"),
        "wide": Preset({"hidden": 64, "layers": 3}, "test", "three 64-unit layers"),
    },
)
class TinyMLPModel(WorldModel):
    config_class = TinyConfig
    capabilities = Capabilities(
        decodes_observations=True,
        predicts_reward=True,
        predicts_termination=True,
        reports_uncertainty=False,
        recurrent=False,
    )

    def __init__(self, config, observation_space, action_space):
        super().__init__(config, observation_space, action_space)
        self.obs_dim = observation_dim(observation_space)
        width = self.obs_dim + action_dim(action_space)
        layers: list[nn.Module] = []
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        layers.append(nn.Linear(width, self.obs_dim + 2))
        self.net = nn.Sequential(*layers)

    def _predict(self, obs, action):
        x = torch.cat([obs.float(), action_features(action, self.action_space)], dim=-1)
        out = self.net(x)
        return obs.float() + out[:, : self.obs_dim], out[:, self.obs_dim], out[:, self.obs_dim + 1]

    def encode(self, obs):
        obs = obs.float()
        zeros = obs.new_zeros(obs.shape[0])
        return State({"obs": obs, "reward": zeros, "continue_logits": zeros + 10.0})

    def transition(self, state, action, *, deterministic=False, generator=None, report_uncertainty=True):
        next_obs, reward, cont = self._predict(state["obs"], action)
        return State({"obs": next_obs, "reward": reward, "continue_logits": cont})

    def decode(self, state):
        return ModelOutput(obs=state["obs"], reward=state["reward"], continue_logits=state["continue_logits"])

    def loss(self, batch: TransitionBatch) -> LossOutput:
        next_obs, reward, cont = self._predict(batch.obs, batch.action)
        obs_loss = (next_obs - batch.next_obs.float()).pow(2).mean()
        reward_loss = (reward - batch.reward.float()).pow(2).mean()
        cont_loss = nn.functional.binary_cross_entropy_with_logits(cont, batch.continue_target())
        total = obs_loss + reward_loss + cont_loss
        return LossOutput(
            total, {"obs": obs_loss.item(), "reward": reward_loss.item(), "continue": cont_loss.item()}
        )
