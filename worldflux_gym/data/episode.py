"""One real episode, stored as the alignment convention of ``core/batch.py`` says.

``obs`` holds ``T + 1`` observations (the final one included); ``action``, ``reward``,
``terminated`` and ``truncated`` hold ``T`` entries, entry ``t`` describing the step from ``o_t``
to ``o_{t+1}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    obs: np.ndarray  # [T+1, *obs_shape]
    action: np.ndarray  # [T, *action_shape]
    reward: np.ndarray  # [T] float32: r_{t+1}, received after action[t]
    terminated: np.ndarray  # [T] bool: o_{t+1} is a real terminal state (only the last entry may be true)
    truncated: np.ndarray  # [T] bool: the episode was cut after step t (time limit, or collection ended)

    def __post_init__(self) -> None:
        steps = len(self.action)
        if len(self.obs) != steps + 1:
            raise ValueError(
                f"an episode of {steps} steps needs {steps + 1} observations, got {len(self.obs)}"
            )
        for name in ("reward", "terminated", "truncated"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"episode {name} has {len(getattr(self, name))} entries for {steps} steps")
        if steps and (self.terminated[:-1].any() or self.truncated[:-1].any()):
            raise ValueError("only the last step of an episode can be terminated or truncated")

    def __len__(self) -> int:
        return len(self.action)

    @property
    def ended(self) -> bool:
        """True when the episode reached a real termination or a truncation (it is complete)."""
        return bool(len(self) and (self.terminated[-1] or self.truncated[-1]))

    @property
    def episode_return(self) -> float:
        return float(self.reward.sum())


_EPISODE_ARRAYS = ("obs", "action", "reward", "terminated", "truncated")


def episodes_to_bytes(episodes: list[Episode]) -> bytes:
    """Episodes as one safetensors file (arrays ``<i>/obs`` ... for episode ``i``); nothing pickled."""
    from safetensors.numpy import save

    arrays = {
        f"{i}/{name}": np.ascontiguousarray(getattr(episode, name))
        for i, episode in enumerate(episodes)
        for name in _EPISODE_ARRAYS
    }
    return save(arrays, metadata={"episodes": str(len(episodes))})


def episodes_from_bytes(data: bytes) -> list[Episode]:
    """The episodes :func:`episodes_to_bytes` wrote, in their order."""
    from safetensors.numpy import load

    arrays = load(data)
    count = len(arrays) // len(_EPISODE_ARRAYS)
    return [Episode(**{name: arrays[f"{i}/{name}"] for name in _EPISODE_ARRAYS}) for i in range(count)]
