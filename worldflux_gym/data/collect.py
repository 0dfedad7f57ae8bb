"""Collecting real episodes from any Gymnasium env id through Gymnasium's vector API."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from tqdm.auto import tqdm

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.data.episode import Episode

Policy = Callable[[np.ndarray], np.ndarray]  # batch of observations -> batch of actions


def make_real_vector_env(env_id: str, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    try:
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
            **kwargs,
        )
    except gym.error.Error as err:
        raise ConfigError(
            f"cannot make the Gymnasium env {env_id!r}: {err}. Check the id (e.g. 'Walker2d-v5', "
            "'Pendulum-v1', 'CartPole-v1') and that its extra is installed."
        ) from err


class _EpisodeBuilder:
    def __init__(self, first_obs: np.ndarray):
        self.obs, self.action, self.reward, self.terminated, self.truncated = [first_obs], [], [], [], []

    def add(self, action, reward, next_obs, terminated, truncated) -> None:
        self.action.append(action)
        self.reward.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.obs.append(next_obs)

    def build(self, cut: bool = False) -> Episode:
        truncated = np.array(self.truncated, dtype=bool)
        if cut and len(truncated):
            truncated[-1] = truncated[-1] or not self.terminated[-1]
        return Episode(
            obs=np.stack(self.obs),
            action=np.stack(self.action) if self.action else np.zeros((0,), np.float32),
            reward=np.asarray(self.reward, dtype=np.float32),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=truncated,
        )


def iter_episodes(
    env_id: str,
    steps: int,
    policy: Policy | None = None,
    seed: int = 0,
    num_envs: int = 1,
    progress: bool = True,
    env_kwargs: dict | None = None,
) -> Iterator[Episode]:
    """Yield episodes as they finish, until ``steps`` environment steps have been taken.

    Episodes still running when the budget is spent are yielded last, marked truncated at their
    final step (the collection cut them). ``policy`` maps a batch of observations to a batch of
    actions; ``None`` takes uniformly random actions (seeded).
    """
    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    envs = make_real_vector_env(env_id, num_envs, **(env_kwargs or {}))
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    builders = [_EpisodeBuilder(obs[i]) for i in range(num_envs)]
    restarting = np.zeros(num_envs, dtype=bool)  # NEXT_STEP autoreset: this step only resets
    taken = 0
    bar = tqdm(total=steps, desc=f"collect {env_id}", unit="step", disable=not progress)
    try:
        while taken < steps:
            actions = envs.action_space.sample() if policy is None else np.asarray(policy(obs))
            next_obs, reward, terminated, truncated, _ = envs.step(actions)
            for i in range(num_envs):
                if restarting[i]:
                    builders[i] = _EpisodeBuilder(next_obs[i])
                    continue
                builders[i].add(actions[i], reward[i], next_obs[i], terminated[i], truncated[i])
                taken += 1
                if terminated[i] or truncated[i]:
                    yield builders[i].build()
            restarting = terminated | truncated
            obs = next_obs
            bar.update(min(taken, steps) - bar.n)
        for i in range(num_envs):
            if not restarting[i] and builders[i].action:
                yield builders[i].build(cut=True)
    finally:
        bar.close()
        envs.close()


def collect_episodes(env_id: str, steps: int, **kwargs) -> list[Episode]:
    """All episodes of :func:`iter_episodes` as a list (see there for the arguments)."""
    return list(iter_episodes(env_id, steps, **kwargs))
