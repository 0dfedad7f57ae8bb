"""What the audit accepts as an agent: an SB3 ``.zip``, an SB3 model, or any batch callable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from worldflux_gym.core.errors import ConfigError

BatchPolicy = Callable[[np.ndarray], np.ndarray]  # [N, *obs_shape] -> [N, *action_shape]

Agent = str | Path | BaseAlgorithm | BatchPolicy


def agent_name(agent: Any) -> str:
    """A short label for tables: the file stem of a ``.zip``, else the callable's or class's name."""
    if isinstance(agent, (str, Path)):
        return Path(agent).stem
    if isinstance(agent, BaseAlgorithm):
        return type(agent).__name__
    return getattr(agent, "__name__", type(agent).__name__)


def as_policy(
    agent: Agent,
    deterministic: bool = True,
    *,
    observation_space: Any = None,
    action_space: Any = None,
    where: str = "the dream",
    hint: str = "use it in the env it was trained for",
) -> BatchPolicy:
    """A batch policy for ``agent``.

    - a path: a stable-baselines3 ``.zip`` (loaded with :func:`worldflux_gym.agents.load_agent`,
      which reads the algorithm from the sidecar or the zip; SB3 unpickles parts of it: audit only
      agents you trust);
    - an SB3 model: its ``predict`` (``deterministic`` by default: the policy's mean action, the
      behaviour one deploys);
    - any other callable: called as is on a batch of observations.

    With ``observation_space`` and ``action_space`` (those of ``where``), an SB3 agent whose spaces
    do not fit is refused (:class:`~worldflux_gym.core.errors.AgentSpaceError`).
    """
    label = str(agent) if isinstance(agent, (str, Path)) else agent_name(agent)
    if isinstance(agent, (str, Path)):
        from worldflux_gym.agents import load_agent

        agent = load_agent(agent, device="cpu")
    if isinstance(agent, BaseAlgorithm):
        model = agent
        if observation_space is not None and action_space is not None:
            from worldflux_gym.agents.evaluate import check_agent_spaces

            check_agent_spaces(
                model, observation_space, action_space, agent_label=label, env_label=where, hint=hint
            )

        def policy(obs: np.ndarray) -> np.ndarray:
            action, _ = model.predict(obs, deterministic=deterministic)
            return action

        policy.__name__ = type(model).__name__
        return policy
    if callable(agent):
        return agent
    raise ConfigError(
        f"an agent is a stable-baselines3 .zip, an SB3 model or a callable from a batch of observations to "
        f"a batch of actions; got {type(agent).__name__}"
    )
