"""MPPI planning in the TD-MPC2 latent space, usable as a policy for a batch of observations.

For every observation the planner optimises a distribution over action sequences of ``horizon``
steps. Each iteration it samples ``num_samples`` sequences (``num_policy_samples`` of them rolled out
by the policy prior, the rest from a Gaussian around the current mean), scores each by

    G = sum_t gamma^t * alive_t * R(z_t, a_t)  +  gamma^H * alive_H * Q(z_H, pi(z_H))

(``alive_t`` is the product of the predicted continue probabilities, so plans that end the episode
lose their future), keeps the ``num_elites`` best and refits the mean and standard deviation to them
with weights ``exp(temperature * (G - max G))``. The action returned is the first action of an elite
sequence drawn with those weights (the best one when ``deterministic``).

Discrete action spaces are planned the same way with a categorical distribution per step in place
of the Gaussian and no policy prior (the value at the horizon is the max over actions of Q).

Not done: warm-starting from the previous step's plan (TD-MPC2 shifts the last mean by one step);
each call plans from scratch, which keeps the planner stateless under vectorised resets.
"""

from __future__ import annotations

import numpy as np
import torch

from worldflux_gym.models.tdmpc2.model import TDMPC2Model


class TDMPC2Planner:
    """``TDMPC2Planner(model).act(obs)``: obs ``[B, obs_dim]`` (or one ``[obs_dim]``) -> env actions.

    Arguments left ``None`` take the model config's ``plan_*`` values. ``seed`` makes the sampling
    reproducible.
    """

    def __init__(
        self,
        model: TDMPC2Model,
        *,
        horizon: int | None = None,
        iterations: int | None = None,
        num_samples: int | None = None,
        num_elites: int | None = None,
        num_policy_samples: int | None = None,
        temperature: float | None = None,
        min_std: float | None = None,
        max_std: float | None = None,
        seed: int | None = None,
    ):
        c = model.config
        self.model = model
        self.horizon = horizon or c.plan_horizon
        self.iterations = iterations or c.plan_iterations
        self.num_samples = num_samples or c.plan_samples
        self.num_elites = min(num_elites or c.plan_elites, self.num_samples)
        policy_samples = c.plan_policy_samples if num_policy_samples is None else num_policy_samples
        self.num_policy_samples = 0 if model.discrete else min(policy_samples, self.num_samples - 1)
        self.temperature = temperature if temperature is not None else c.plan_temperature
        self.min_std = min_std if min_std is not None else c.plan_min_std
        self.max_std = max_std if max_std is not None else c.plan_max_std
        self.generator = torch.Generator(device=model.device)
        # without a seed, draw one from torch's global RNG: torch.manual_seed then reproduces the plans
        self.generator.manual_seed(int(seed) if seed is not None else int(torch.randint(2**62, ())))

    # --- public API --------------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self, obs: np.ndarray | torch.Tensor, *, deterministic: bool = False
    ) -> np.ndarray | torch.Tensor:
        """Plan from real observations; returns actions in the env's units, numpy in -> numpy out."""
        as_numpy = not isinstance(obs, torch.Tensor)
        obs_t = torch.as_tensor(np.asarray(obs) if as_numpy else obs, device=self.model.device).float()
        single = obs_t.dim() == 1
        if single:
            obs_t = obs_t.unsqueeze(0)
        was_training = self.model.training
        self.model.eval()  # no dropout in the Q heads while planning
        try:
            z = self.model.encode_latent(obs_t)
            actions = (
                self.plan_discrete(z, deterministic)
                if self.model.discrete
                else self.plan_box(z, deterministic)
            )
        finally:
            self.model.train(was_training)
        if single:
            actions = actions[0]
        if as_numpy:
            dtype = np.int64 if self.model.discrete else self.model.action_space.dtype
            return actions.cpu().numpy().astype(dtype)
        return actions

    # --- Box actions: Gaussian MPPI with policy-prior samples ---------------------------------
    def plan_box(self, z: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Latents ``[B, L]`` -> env actions ``[B, *action_shape]``."""
        model, g = self.model, self.generator
        B, A = z.shape[0], model.action_dim
        H, N, K, P = self.horizon, self.num_samples, self.num_elites, self.num_policy_samples
        policy_actions = z.new_zeros(B, 0, H, A)
        if P > 0:  # sequences proposed by the policy prior, rolled out in the model
            zp, steps = z.repeat_interleave(P, 0), []
            for t in range(H):
                a, _ = model.pi(zp, generator=g)
                steps.append(a)
                if t < H - 1:
                    zp = model.dynamics(torch.cat([zp, a], -1))
            policy_actions = torch.stack(steps, 1).view(B, P, H, A)

        mean, std = z.new_zeros(B, H, A), z.new_full((B, H, A), self.max_std)
        z_rows = z.repeat_interleave(N, 0)  # [B*N, L]: every candidate of env b starts from z_b
        for _ in range(self.iterations):
            noise = torch.randn(B, N - P, H, A, generator=g, device=z.device)
            sampled = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1)
            candidates = torch.cat([policy_actions, sampled], 1)  # [B, N, H, A]
            values = self.estimate_value(z_rows, candidates.reshape(B * N, H, A)).view(B, N)
            elite_values, index = torch.nan_to_num(values, nan=-torch.inf).topk(K, dim=1)
            elites = candidates.gather(1, index[:, :, None, None].expand(B, K, H, A))  # [B, K, H, A]
            score = self._scores(elite_values)
            mean = (score[:, :, None, None] * elites).sum(1)
            var = (score[:, :, None, None] * (elites - mean.unsqueeze(1)).pow(2)).sum(1)
            std = var.sqrt().clamp(self.min_std, self.max_std)
        choice = self._choose(score, deterministic)
        first = elites[torch.arange(B, device=z.device), choice, 0]  # [B, A]
        return model.features_to_action(first)

    # --- Discrete actions: the same loop over categorical distributions ------------------------
    def plan_discrete(self, z: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """Latents ``[B, L]`` -> action indices ``[B]`` (offset by the space's ``start``)."""
        model, g = self.model, self.generator
        B, H, N, K, n = z.shape[0], self.horizon, self.num_samples, self.num_elites, model.action_dim
        probs = z.new_full((B, H, n), 1.0 / n)
        z_rows = z.repeat_interleave(N, 0)
        for _ in range(self.iterations):
            index = torch.multinomial(probs.view(B * H, n), N, replacement=True, generator=g)
            index = index.view(B, H, N).transpose(1, 2)  # [B, N, H]
            candidates = torch.nn.functional.one_hot(index, n).float()
            values = self.estimate_value(z_rows, candidates.view(B * N, H, n)).view(B, N)
            elite_values, top = values.topk(K, dim=1)
            elites = index.gather(1, top.unsqueeze(-1).expand(B, K, H))  # [B, K, H]
            score = self._scores(elite_values)
            counts = (score[:, :, None, None] * torch.nn.functional.one_hot(elites, n).float()).sum(1)
            # keep a little mass everywhere so that no action is ruled out after one iteration
            probs = 0.9 * counts + 0.1 / n
        choice = self._choose(score, deterministic)
        first = elites[torch.arange(B, device=z.device), choice, 0]
        return first + int(model.action_space.start)

    # --- shared pieces -------------------------------------------------------------------------
    def estimate_value(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Discounted model return of action features ``[M, H, A]`` from latents ``[M, L]`` -> ``[M]``."""
        model = self.model
        gamma = model.config.discount
        total = z.new_zeros(z.shape[0])
        alive = z.new_ones(z.shape[0])
        discount = 1.0
        for t in range(actions.shape[1]):
            z, reward, continue_logits = model.step_latent(z, actions[:, t])
            total = total + discount * alive * reward
            alive = alive * torch.sigmoid(continue_logits)
            discount *= gamma
        terminal = model.state_value(z, reduce="mean", generator=self.generator)
        return total + discount * alive * terminal

    def _scores(self, elite_values: torch.Tensor) -> torch.Tensor:
        """MPPI weights ``[B, K]`` (sum to 1 per row)."""
        score = torch.exp(self.temperature * (elite_values - elite_values.max(1, keepdim=True).values))
        return score / score.sum(1, keepdim=True)

    def _choose(self, score: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return score.argmax(1)
        return torch.multinomial(score, 1, generator=self.generator).squeeze(1)
