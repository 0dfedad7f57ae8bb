"""Dreamed episodes from given starts, and the uncertainty level that counts as "unsure".

Every dreamed episode of the audit comes from :func:`dream_rollouts`: one :class:`DreamBatch` of
``N`` rows, one per start, stepped as a tensor batch with one batched policy call per step. Rows
that ended are masked out (the batch's next-step autoreset restarts them, and what they do after
is ignored), so the arrays hold exactly one episode per start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.policy import Policy
from worldflux_gym.dream.core import Autoreset, DreamBatch
from worldflux_gym.dream.starts import Start, StartSource, as_model_tensor


class FixedStarts(StartSource):
    """Hands out the given start observations in order (cycling): row ``i`` of a reset gets start ``i``."""

    def __init__(self, obs: np.ndarray | torch.Tensor, device: torch.device):
        self.obs = as_model_tensor(obs, device)
        self.next = 0

    def seed(self, seed: int) -> None:
        self.next = 0  # a seeded reset starts again from the first start

    def sample(self, n: int) -> Start:
        index = (self.next + torch.arange(n, device=self.obs.device)) % len(self.obs)
        self.next += n
        return Start(self.obs[index])


@dataclass
class DreamRollouts:
    """One dreamed episode per start; step arrays are ``[T, N]`` with ``alive`` marking real steps."""

    rewards: np.ndarray  # [T, N] float64, 0 after an episode's end
    uncertainty: np.ndarray | None  # [T, N], NaN after the end; None: the family reports none
    alive: np.ndarray  # [T, N] bool: step t belongs to episode n
    terminated: np.ndarray  # [N] bool: the model ended the episode (not the horizon)
    obs: np.ndarray  # [T+1, N, *obs_shape]: what the agent saw; frozen after the end
    actions: np.ndarray  # [T, N, *action_shape]: the actions taken (after any action noise)

    @property
    def returns(self) -> np.ndarray:
        return self.rewards.sum(axis=0)

    @property
    def lengths(self) -> np.ndarray:
        return self.alive.sum(axis=0)


def perturb_actions(
    actions: np.ndarray, space: spaces.Space, scale: float, rng: np.random.Generator
) -> np.ndarray:
    """Action noise: Gaussian with std ``scale`` x half the Box's range (clipped to the bounds), or,
    for ``Discrete``, a uniformly random action with probability ``scale``."""
    if scale <= 0:
        return actions
    if isinstance(space, spaces.Discrete):
        replace = rng.random(actions.shape) < scale
        random = rng.integers(space.start, space.start + space.n, size=actions.shape)
        return np.where(replace, random, actions).astype(actions.dtype)
    half_range = (space.high - space.low) / 2.0
    noisy = actions + scale * half_range * rng.standard_normal(actions.shape)
    return np.clip(noisy, space.low, space.high).astype(np.float32)


def dream_rollouts(
    model: WorldModel,
    policy: Policy,
    starts: np.ndarray,
    horizon: int,
    *,
    seed: int = 0,
    action_noise: float = 0.0,
    deterministic: bool = False,
    report_uncertainty: bool = True,
    keep_obs: bool = True,
) -> DreamRollouts:
    """Dream one episode of at most ``horizon`` steps from each row of ``starts`` ``[N, *obs_shape]``.

    The dream is the one agents practise in (:class:`DreamBatch`): stochastic transitions and
    sampled terminations unless ``deterministic``; actions outside a Box are clipped. Uncertainty
    is asked for when the model reports it and ``report_uncertainty`` is on (every ensemble
    member runs: about ``elites`` times the work of a plain dream step; dreamer and tdmpc2 run
    their small uncertainty heads).
    """
    n = len(starts)
    wants_uncertainty = report_uncertainty and model.capabilities.reports_uncertainty
    batch = DreamBatch(
        model,
        n,
        starts=FixedStarts(starts, model.device),
        max_episode_steps=horizon,
        deterministic=deterministic,
        report_uncertainty=wants_uncertainty,
        clip_actions=True,
        autoreset=Autoreset.NEXT_STEP,
    )
    rng = np.random.default_rng(seed)
    obs = batch.reset(seed=seed).cpu().numpy()
    rewards = np.zeros((horizon, n))
    uncertainty = np.full((horizon, n), np.nan) if wants_uncertainty else None
    alive = np.zeros((horizon, n), dtype=bool)
    terminated = np.zeros(n, dtype=bool)
    seen = [obs] if keep_obs else []
    taken = []
    running = np.ones(n, dtype=bool)
    steps = 0
    for t in range(horizon):
        actions = perturb_actions(np.asarray(policy(obs)), batch.action_space, action_noise, rng)
        result = batch.step(batch.check_actions(actions))
        alive[t] = running
        rewards[t] = np.where(running, result.reward.cpu().numpy(), 0.0)
        if uncertainty is not None and result.uncertainty is not None:
            uncertainty[t] = np.where(running, result.uncertainty.cpu().numpy(), np.nan)
        step_terminated = result.terminated.cpu().numpy()
        terminated |= running & step_terminated
        next_obs = result.obs.cpu().numpy()
        if keep_obs:
            seen.append(np.where(running.reshape(-1, *[1] * (next_obs.ndim - 1)), next_obs, seen[-1]))
            taken.append(actions)
        running &= ~(step_terminated | result.truncated.cpu().numpy())
        obs = next_obs
        steps = t + 1
        if not running.any():
            break
    batch.close()
    return DreamRollouts(
        rewards=rewards[:steps],
        uncertainty=None if uncertainty is None else uncertainty[:steps],
        alive=alive[:steps],
        terminated=terminated,
        obs=np.stack(seen) if keep_obs else np.zeros((0,)),
        actions=np.stack(taken) if keep_obs else np.zeros((0,)),
    )


# --- the "unsure" threshold -------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """The model's uncertainty on real transitions, and the level above which a step is "unsure".

    ``threshold`` is the ``quantile`` of the model's one-step uncertainty on real ``(o_t, a_t)``
    pairs (held-out episodes when the checkpoint has them). By construction a share
    ``1 - quantile`` of real, in-distribution steps lies above it; a dream that spends much more
    of its time above it has left the data the model knows.
    """

    threshold: float
    quantile: float
    transitions: int
    source: str
    reward_floor: float  # the lowest real reward in the same data (for shares of return, see scenarios.py)
    real_quantiles: dict[str, float]
    reward_ceiling: float = float("inf")  # the highest real reward in the same data

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "quantile": self.quantile,
            "transitions": self.transitions,
            "source": self.source,
            "reward_floor": self.reward_floor,
            "reward_ceiling": self.reward_ceiling,
            "real_uncertainty_quantiles": self.real_quantiles,
        }


def calibration_buffer(
    checkpoint: str | Path | None, real_env: str | None, steps: int = 3000, seed: int = 0
) -> tuple[EpisodeBuffer, str]:
    """Real data to calibrate on: the held-out episodes of the store the checkpoint was fitted on
    (the one its ``trainer_state.json`` or ``closed_loop.json`` names, else ``CHECKPOINT/data``),
    else that store's training episodes, else ``steps`` fresh random-action steps of the real env
    (the data shipped models are fitted on).
    """
    from worldflux_gym.data import EpisodeStore, collect_episodes
    from worldflux_gym.data.store import is_store
    from worldflux_gym.training.run_dir import RunDirectory

    candidates = []
    if checkpoint is not None:
        run = RunDirectory(checkpoint)
        store_dir = run.recorded_store()  # a fit's, or a closed-loop fine-tune's
        candidates += [store_dir] if store_dir else []
        candidates.append(run.data_dir)
    for directory in candidates:
        if not is_store(directory):
            continue
        store = EpisodeStore(directory)
        for split, what in (("validation", "held-out"), ("train", "training")):
            if store.num_episodes(split):
                return store.buffer(split), f"the {what} episodes the model was fitted with ({directory})"
    if real_env is None:
        raise ValueError(
            "no data to calibrate the uncertainty on: give the real env or a checkpoint with data"
        )
    episodes = collect_episodes(real_env, steps, seed=seed, progress=False)
    return EpisodeBuffer(episodes), f"{steps} fresh random-action steps of {real_env} (seed {seed})"


@torch.inference_mode()
def calibrate(
    model: WorldModel,
    buffer: EpisodeBuffer,
    source: str = "real transitions",
    quantile: float = 0.99,
    max_transitions: int = 5000,
    seed: int = 0,
) -> Calibration | None:
    """The uncertainty of ``model`` on real transitions of ``buffer``; ``None`` if it reports none.

    Each transition is predicted the way a dream step is: from the state of ``o_t`` (after a
    burn-in window for recurrent families), under the real ``a_t``.
    """
    if not model.capabilities.reports_uncertainty:
        return None
    rng = np.random.default_rng(seed)
    n = min(max_transitions, buffer.num_steps)
    if model.capabilities.recurrent:
        obs, action = buffer.sample_contexts(n, 8, rng)
        state = model.observe(obs[:, :-1].to(model.device), action[:, :-1].to(model.device))
        action = action[:, -1]
        rewards = buffer.reward
    else:
        batch = buffer.transitions(rng.choice(buffer.num_steps, size=n, replace=False))
        state, action, rewards = model.encode(batch.obs.to(model.device)), batch.action, buffer.reward
    out = model.decode(
        model.transition(state, action.to(model.device), deterministic=True, report_uncertainty=True)
    )
    values = out.uncertainty.float().cpu().numpy().ravel()
    return Calibration(
        threshold=float(np.quantile(values, quantile)),
        quantile=quantile,
        transitions=int(values.size),
        source=source,
        reward_floor=float(np.min(rewards)),
        reward_ceiling=float(np.max(rewards)),
        real_quantiles={f"q{int(q * 100)}": float(np.quantile(values, q)) for q in (0.5, 0.9, 0.99)},
    )
