"""Gymnasium spaces as a world model sees them: JSON round trip, flat sizes, action features.

A model is built for one observation space and one action space. Supported:

- observations: a 1-D ``Box`` (vector) or a ``(H, W, C)`` ``uint8`` ``Box`` (image);
- actions: a 1-D ``Box`` (continuous) or a ``Discrete`` (one-hot encoded for the network).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.core.errors import SpaceError


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Describe a supported space as plain JSON (exact: bounds are stored as lists)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise SpaceError(f"unsupported space {space!r}: worldflux-gym handles Box and Discrete spaces")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    if data["type"] == "Box":
        dtype = np.dtype(data["dtype"])
        return spaces.Box(
            low=np.asarray(data["low"], dtype=dtype),
            high=np.asarray(data["high"], dtype=dtype),
            shape=tuple(data["shape"]),
            dtype=dtype,
        )
    if data["type"] == "Discrete":
        return spaces.Discrete(data["n"], start=data.get("start", 0))
    raise SpaceError(f"unknown space type {data['type']!r} in a saved space (expected Box or Discrete)")


def is_image_space(space: spaces.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) == 3
        and space.dtype == np.uint8
        and space.shape[-1] in (1, 3)
    )


def check_observation_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Box) and (len(space.shape) == 1 or is_image_space(space)):
        return
    raise SpaceError(
        f"unsupported observation space {space!r}: expected a 1-D Box (vector observations) or a "
        "(H, W, C) uint8 Box (images). Flatten dict/tuple observations with "
        "gymnasium.wrappers.FlattenObservation first."
    )


def check_action_space(space: spaces.Space) -> None:
    if isinstance(space, spaces.Discrete) or (isinstance(space, spaces.Box) and len(space.shape) == 1):
        return
    raise SpaceError(
        f"unsupported action space {space!r}: expected a 1-D Box (continuous) or a Discrete space"
    )


def observation_dim(space: spaces.Space) -> int:
    """Number of scalars in one observation."""
    return int(np.prod(_shape(space)))


def action_dim(space: spaces.Space) -> int:
    """Width of the action features fed to a network (one-hot width for Discrete)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    return int(np.prod(_shape(space)))


def action_features(action: torch.Tensor, space: spaces.Space) -> torch.Tensor:
    """Turn a batch of actions ``[..., *action_shape]`` into float features ``[..., action_dim]``.

    Discrete actions arrive as integer indices (offset by ``space.start``) and become one-hot vectors.
    """
    if isinstance(space, spaces.Discrete):
        index = action.long() - int(space.start)
        return torch.nn.functional.one_hot(index, int(space.n)).float()
    return action.float()


def stored_action_shape(space: spaces.Space) -> tuple[int, ...]:
    """Shape of one action as stored in a batch: ``()`` for Discrete, the Box shape otherwise."""
    return () if isinstance(space, spaces.Discrete) else _shape(space)


def _shape(space: spaces.Space) -> tuple[int, ...]:
    if space.shape is None:
        raise SpaceError(f"the space {space!r} has no fixed shape")
    return tuple(space.shape)


def spaces_fit(agent_space: spaces.Space, env_space: spaces.Space) -> bool:
    """Whether what acts on ``agent_space`` can act on ``env_space``: the same kind and shape (and
    ``n`` for Discrete, ``nvec`` for MultiDiscrete), as an SB3 policy needs of a space."""
    if type(agent_space) is not type(env_space) or agent_space.shape != env_space.shape:
        return False
    if isinstance(agent_space, spaces.Discrete) and isinstance(env_space, spaces.Discrete):
        return int(agent_space.n) == int(env_space.n) and int(agent_space.start) == int(env_space.start)
    if isinstance(agent_space, spaces.MultiDiscrete) and isinstance(env_space, spaces.MultiDiscrete):
        return np.array_equal(agent_space.nvec, env_space.nvec)
    return True


def describe_space(space: spaces.Space) -> str:
    """A space in a few characters for one-line messages: ``Box(17,)``, ``Discrete(2)``."""
    if isinstance(space, spaces.Box):
        return f"Box{tuple(space.shape)}"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({int(space.n)})"
    return str(space)
