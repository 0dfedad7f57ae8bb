"""Evaluating an agent in the real env: the only return that counts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from worldflux_gym.core.envs import make_env
from worldflux_gym.core.errors import AgentSpaceError, ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_positive_int, check_seed
from worldflux_gym.data.policy import check_agent_spaces, load_sb3_agent, read_sidecar


@dataclass(frozen=True)
class Evaluation:
    env_id: str
    episodes: int
    mean_return: float
    std_return: float
    mean_length: float
    returns: list[float]

    def summary(self) -> str:
        return (
            f"{self.env_id}: return {self.mean_return:.1f} +- {self.std_return:.1f} over {self.episodes} "
            f"episodes (mean length {self.mean_length:.0f})"
        )


def load_agent(agent_path: str | Path, algo: str | None = None, device: str = "auto") -> BaseAlgorithm:
    """Load an SB3 agent saved as ``.zip`` (:func:`~worldflux_gym.data.policy.load_sb3_agent`: the
    algorithm from ``algo``, the sidecar or the zip). SB3's loader unpickles parts of the zip: load
    only agents you trust."""
    return load_sb3_agent(
        agent_path,
        algo,
        device,
        what="agent",
        hint=f"train one with `worldflux-gym train-agent DREAM_ID --out {Path(agent_path)}`",
    )


def make_real_env_for_agent(agent_path: str | Path, env_id: str | None, **make_kwargs) -> gym.Env:
    """The real env an agent is evaluated in, with the observation wrapper it was trained behind.

    Agents trained in a latent dream (a family that decodes no observations) see the model's
    encoding of the real observation; the sidecar records which checkpoint encodes it.
    """
    meta = read_sidecar(agent_path)
    env_id = env_id or meta.get("real_env")
    if not env_id:
        raise ConfigError(f"name the real env to evaluate {agent_path} in, e.g. --env Walker2d-v5")
    env = make_env(env_id, "env_id", **make_kwargs)
    if meta.get("observation") == "latent":
        from worldflux_gym.core.checkpoint import from_pretrained
        from worldflux_gym.dream import EncodeObservation

        env = EncodeObservation(env, from_pretrained(meta["checkpoint"], device="cpu"))
    return env


def evaluate_agent(
    agent: str | Path | BaseAlgorithm,
    env_id: str | None = None,
    episodes: int = 10,
    seed: int = 0,
    deterministic: bool = True,
    algo: str | None = None,
    encoder: WorldModel | None = None,
) -> Evaluation:
    """Run ``agent`` for ``episodes`` real episodes (seeded) and report the return.

    ``agent`` is an SB3 ``.zip`` (its real env and observation wrapper are read from the ``.json``
    that :func:`train_agent` writes beside it) or a loaded SB3 model (then name ``env_id``, and pass
    the ``encoder`` model whose latents it acts on, if it was trained in a latent dream).
    Actions are deterministic by default.

    >>> from stable_baselines3 import PPO
    >>> from worldflux_gym.agents import evaluate_agent
    >>> untrained = PPO("MlpPolicy", "Pendulum-v1", device="cpu", seed=0)
    >>> result = evaluate_agent(untrained, "Pendulum-v1", episodes=2)
    >>> result.episodes, len(result.returns)
    (2, 2)
    >>> print(result.summary())  # doctest: +ELLIPSIS
    Pendulum-v1: return ... over 2 episodes (mean length 200)
    """
    episodes = check_positive_int(episodes, "episodes")
    seed = check_seed(seed)
    if isinstance(agent, BaseAlgorithm):
        if env_id is None:
            raise ConfigError("name the real env id to evaluate an in-memory agent in")
        model, env = agent, make_env(env_id, "env_id")
        if encoder is not None:
            from worldflux_gym.dream import EncodeObservation

            env = EncodeObservation(env, encoder)
    else:
        model, env = load_agent(agent, algo=algo), make_real_env_for_agent(agent, env_id)
    trained_in = read_sidecar(agent).get("real_env") if not isinstance(agent, BaseAlgorithm) else None
    try:
        check_agent_spaces(
            model,
            env.observation_space,
            env.action_space,
            agent_label=str(agent) if not isinstance(agent, BaseAlgorithm) else type(agent).__name__,
            env_label=f"the env {env.spec.id if env.spec else env_id}",
            hint=f"evaluate it in {trained_in} (--env {trained_in})"
            if trained_in
            else "evaluate it in the env it was trained for (--env ID)",
        )
    except AgentSpaceError:
        env.close()
        raise
    env = Monitor(env)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    episode_returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
    )
    env.close()
    returns = np.asarray(episode_returns, dtype=np.float64)
    return Evaluation(
        env_id=env.spec.id if env.spec else str(env_id),
        episodes=episodes,
        mean_return=float(returns.mean()),
        std_return=float(returns.std()),
        mean_length=float(np.mean(lengths)),
        returns=[float(r) for r in returns],
    )


def evaluation_json(evaluation: Evaluation) -> str:
    return json.dumps(asdict(evaluation), indent=2)
