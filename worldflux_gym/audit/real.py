"""The real env, started where the dream started: state setting, start draws and replays.

A dream start is an observation. The real env can be put exactly there when its state can be read
back from the observation:

- ``Pendulum``: ``state = (atan2(sin, cos), thetadot)``;
- ``CartPole``: the observation *is* the state;
- MuJoCo locomotion envs that leave the x position out of the observation (``Walker2d``,
  ``Hopper``, ``HalfCheetah``): ``qpos = (0, obs[:nq-1])``, ``qvel = obs[nq-1:]`` (x does not
  change the dynamics of these envs, so 0 is as good as any).

Other envs are replayed from their own seeded ``reset()``: exact for starts that were drawn from
the same seeded resets (:func:`draw_real_starts`), and reported as not reproduced otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from worldflux_gym.audit.results import AuditConfig, RealComparison, ScenarioResult
from worldflux_gym.audit.stats import bootstrap_ci
from worldflux_gym.core.envs import make_env
from worldflux_gym.core.errors import SpaceError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.spaces import spaces_fit
from worldflux_gym.data.policy import Policy
from worldflux_gym.dream.latent import encode_observations
from worldflux_gym.dream.resolve import ResolvedDream


def set_real_state(env: gym.Env, obs: np.ndarray) -> np.ndarray | None:
    """Put ``env`` (already reset) in the state that ``obs`` describes.

    Returns the env's own observation of its new state (equal to ``obs`` up to float rounding and
    the env's own clipping), or ``None`` when this env's state cannot be set from an observation.
    """
    raw = env.unwrapped
    obs = np.asarray(obs, dtype=np.float64).ravel()
    name = type(raw).__name__
    if name == "PendulumEnv" and obs.size == 3:
        raw.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]], dtype=np.float64)
        return raw._get_obs()
    if name == "CartPoleEnv" and obs.size == 4:
        raw.state = obs.copy()
        raw.steps_beyond_terminated = None
        return np.array(raw.state, dtype=np.float32)
    if hasattr(raw, "set_state") and hasattr(raw, "model") and hasattr(raw, "_get_obs"):
        excludes_x = getattr(raw, "_exclude_current_positions_from_observation", False)
        nq, nv = raw.model.nq, raw.model.nv
        if excludes_x and obs.size == nq - 1 + nv:
            raw.set_state(np.concatenate([[0.0], obs[: nq - 1]]), obs[nq - 1 :])
            return raw._get_obs()
    return None


def can_set_state(env_id: str) -> bool:
    """Whether :func:`set_real_state` supports ``env_id`` (tried on a fresh, reset instance)."""
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=0)
        return set_real_state(env, obs) is not None
    finally:
        env.close()


def draw_real_starts(env_id: str, n: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """``n`` start observations from the real env's ``reset(seed=seed + i)``, and those seeds.

    Drawing each start from its own seed is what lets any env, even one whose state cannot be set,
    replay exactly the starts the dream used.
    """
    env = gym.make(env_id)
    seeds = [int(seed) + i for i in range(n)]
    try:
        obs = np.stack([env.reset(seed=s)[0] for s in seeds])
    finally:
        env.close()
    return obs, seeds


def project_starts(env_id: str, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map perturbed start observations onto states the real env can be in.

    Noise on an observation can leave the set of real observations (Pendulum's ``cos^2 + sin^2``
    is no longer 1). Setting the real state from the observation and reading it back gives the
    nearest real start; rows of an env whose state cannot be set are returned unchanged, with
    ``False`` in the second array.
    """
    env = gym.make(env_id)
    projected = np.array(obs, dtype=np.float32, copy=True)
    ok = np.zeros(len(obs), dtype=bool)
    try:
        env.reset(seed=0)
        for i, row in enumerate(obs):
            real = set_real_state(env, row)
            if real is not None:
                projected[i], ok[i] = real, True
    finally:
        env.close()
    return projected, ok


@dataclass
class RealRollouts:
    """Episodes run in the real env, one per start."""

    returns: np.ndarray  # [N]
    lengths: np.ndarray  # [N]
    start_obs: np.ndarray  # [N, *obs_shape]: the real env's first observation
    state_set: np.ndarray  # [N] bool: the start was set from the dream's start observation
    start_error: np.ndarray  # [N]: max |real start obs - dream start obs| (0 when reproduced)
    method: str


def real_rollouts(
    env_id: str,
    policy: Policy,
    starts: np.ndarray | None,
    seeds: list[int],
    horizon: int | None = None,
    observe: Callable[[np.ndarray], np.ndarray] | None = None,
) -> RealRollouts:
    """Run ``policy`` from each start in a Gymnasium ``SyncVectorEnv`` of ``len(seeds)`` real envs.

    Every env is reset with its seed; when ``starts`` is given and the env supports it, its state
    is then set to the start's (see the module docstring). One batched policy call per step, up to
    ``horizon`` steps (the dream's, so both sides sum rewards over the same number of steps).
    ``observe`` maps real observations to what the agent sees (a latent family's encoder).
    """
    n = len(seeds)
    envs = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=list(seeds))
        state_set = np.zeros(n, dtype=bool)
        if starts is not None:
            for i, sub in enumerate(envs.envs):
                real = set_real_state(sub, starts[i])
                if real is not None:
                    obs[i], state_set[i] = real, True
        start_obs = np.array(obs, copy=True)
        error = (
            np.abs(start_obs.reshape(n, -1) - np.asarray(starts, np.float32).reshape(n, -1)).max(axis=1)
            if starts is not None
            else np.zeros(n)
        )
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        step = 0
        while alive.any() and (horizon is None or step < horizon):
            actions = np.asarray(policy(observe(obs) if observe else obs))
            obs, reward, terminated, truncated, _ = envs.step(actions)
            returns += np.where(alive, reward, 0.0)
            lengths += alive
            alive &= ~(terminated | truncated)  # NEXT_STEP autoreset: rows that ended are ignored
            step += 1
    finally:
        envs.close()
    if starts is None:
        method = "seeded real resets"
    elif state_set.all():
        method = "real state set from the start observation"
    else:
        method = f"state set for {int(state_set.sum())} of {n} starts, seeded resets for the rest"
    return RealRollouts(returns, lengths, start_obs, state_set, error, method)


# --- the audit's replay: dream against real, start by start --------------------------------------
def check_real_env(env_id: str, model: WorldModel) -> None:
    """The real env named for the replay exists and has the spaces the model was fitted for."""
    env = make_env(env_id, "real")
    try:
        if not (
            spaces_fit(env.observation_space, model.observation_space)
            and spaces_fit(env.action_space, model.action_space)
        ):
            raise SpaceError(
                f"real={env_id!r} has spaces {env.observation_space} / {env.action_space}, but the model "
                f"was fitted for {model.observation_space} / {model.action_space}: replay in the env "
                "the model was fitted on (bare --real: the dream's own)"
            )
    finally:
        env.close()


def replay_in_real_env(
    real_id: str,
    setup: ResolvedDream,
    policy: Policy,
    nominal: ScenarioResult,
    starts: np.ndarray,
    seeds: list[int],
    worst_start: np.ndarray | None,
    worst_cases: list[dict[str, Any]],
    notes: list[str],
    config: AuditConfig,
) -> RealComparison:
    """The nominal starts (and the adversarial worst starts) in the real env; the dream-real comparison."""
    model, horizon = setup.model, setup.horizon
    assert horizon is not None  # the audit set it
    observe = None if model.capabilities.decodes_observations else partial(encode_observations, model)
    count = config.real_episodes or len(starts)
    replay = real_rollouts(real_id, policy, starts[:count], seeds[:count], horizon, observe)
    for case in worst_cases:
        if case["scenario"] == "nominal" and case["start"] < count:
            case["real_return"] = float(replay.returns[case["start"]])
    if worst_start is not None:
        if can_set_state(real_id):
            worst = real_rollouts(real_id, policy, worst_start, seeds[: len(worst_start)], horizon, observe)
            for case in worst_cases:
                if case["scenario"] == "adversarial":
                    case["real_return"] = float(worst.returns[case["base_start"]])
        else:
            notes.append(f"{real_id}'s state cannot be set from an observation: worst starts not replayed")
    return compare(real_id, nominal, replay, config)


def compare(env_id: str, dream: ScenarioResult, replay, config: AuditConfig) -> RealComparison:
    """Dream against real episode by episode: the replay holds the first of the dreamed starts."""
    count = len(replay.returns)
    dream_returns = dream.returns[:count]
    gaps = dream_returns - replay.returns
    correlation = None
    if dream_returns.std() > 0 and replay.returns.std() > 0:
        correlation = float(np.corrcoef(dream_returns, replay.returns)[0, 1])
    return RealComparison(
        env_id=env_id,
        method=replay.method,
        dream_returns=dream_returns,
        real_returns=replay.returns,
        dream_lengths=dream.lengths[:count],
        real_lengths=replay.lengths,
        start_reproduced=replay.start_error <= 1e-4,
        real_interval=bootstrap_ci(replay.returns, config.confidence, seed=config.seed),
        gap_interval=bootstrap_ci(gaps, config.confidence, seed=config.seed),
        episode_correlation=correlation,
    )
