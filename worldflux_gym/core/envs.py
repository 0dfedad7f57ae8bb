"""Making the real Gymnasium env a user named, with one clear error when the id is unknown."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from worldflux_gym.core.errors import UnknownEnvError


def make_env(env_id: str, name: str = "env id", **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)``; an unknown id (or one whose extra is missing) raises
    :class:`~worldflux_gym.core.errors.UnknownEnvError` naming the option (``name``: ``"--env"``)."""
    if not isinstance(env_id, str) or not env_id:
        raise UnknownEnvError(f"{name} must be a Gymnasium env id such as 'Walker2d-v5', got {env_id!r}")
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise UnknownEnvError(
            f"{name} {env_id!r} is not an env Gymnasium can make ({err}); check the id (e.g. "
            "'Walker2d-v5', 'Pendulum-v1', 'CartPole-v1') and that its extra is installed"
        ) from err


def check_env_id(env_id: str, name: str = "env id") -> str:
    """``env_id`` is registered with Gymnasium (checked without making the env)."""
    if not isinstance(env_id, str) or not env_id:
        raise UnknownEnvError(f"{name} must be a Gymnasium env id such as 'Walker2d-v5', got {env_id!r}")
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise UnknownEnvError(
            f"{name} {env_id!r} is not a registered Gymnasium env ({err}); check the id (e.g. "
            "'Walker2d-v5', 'Pendulum-v1', 'CartPole-v1')"
        ) from err
    return env_id
