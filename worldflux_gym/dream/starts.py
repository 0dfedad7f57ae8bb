"""Where dreams start: real starting points, never made-up states.

Three sources, all drawing from real data:

- :class:`RealResetStarts`: the real env's own ``reset()`` (the default of every registered id, so a
  dream has the real start distribution). One real env is made once and reset again and again.
- :class:`BankStarts`: a bank of real initial observations (``starts.safetensors`` beside a
  checkpoint, or an array), drawn uniformly with replacement. Fast, and no simulator needed.
- :class:`BranchedStarts`: real mid-episode context windows from training data (MBPO/DIAMOND
  "branched" rollouts); recurrent models burn the window in with ``model.observe``.

The bank file is safetensors (nothing is unpickled) with the tensors ``initial_obs``
``[K, *obs_shape]`` and, optionally, ``context_obs`` ``[K, T+1, *obs_shape]`` and
``context_action`` ``[K, T, *action_shape]``; write it with :func:`save_starts`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from worldflux_gym.core.checkpoint import atomic_write_files
from worldflux_gym.core.envs import make_env
from worldflux_gym.core.errors import CheckpointError, ConfigError
from worldflux_gym.data.buffer import EpisodeBuffer

STARTS_FILE = "starts.safetensors"


@dataclass
class Start:
    """``n`` real start points: the observation to start after and, for branched starts, its history."""

    obs: torch.Tensor  # [n, *obs_shape]
    context_obs: torch.Tensor | None = None  # [n, T+1, *obs_shape]; context_obs[:, -1] == obs
    context_action: torch.Tensor | None = None  # [n, T, *action_shape]


def as_model_tensor(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Real data as the models take it (the same rule as ``EpisodeBuffer``): float64 becomes float32."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    return tensor.to(device)


class StartSource(ABC):
    """Draws real start points; ``seed`` makes the draws reproducible."""

    @abstractmethod
    def seed(self, seed: int) -> None: ...

    @abstractmethod
    def sample(self, n: int) -> Start: ...

    def close(self) -> None:  # noqa: B027  (most sources hold nothing to release)
        """Release what the source holds (a real env)."""


class RealResetStarts(StartSource):
    """Starts from the real env's own ``reset()``.

    Resets are drawn in blocks and each one is used once, so that a batch of ``n`` autoresets costs
    one Python loop over real resets rather than one per dream step; the distribution is exactly the
    real env's. ``seed(s)`` reseeds the real env (its next reset is ``reset(seed=s)``).
    """

    def __init__(self, env: str | gym.Env, device: torch.device, block: int = 64):
        self.env = make_env(env, "real_env") if isinstance(env, str) else env
        self.device = device
        self.block = max(1, int(block))
        space = self.env.observation_space
        self._pool = np.zeros((0, *(space.shape or ())), space.dtype)
        self._next = 0
        self._seed: int | None = None

    def seed(self, seed: int) -> None:
        self._seed = int(seed)
        self._pool, self._next = self._pool[:0], 0

    def _refill(self, n: int) -> None:
        fresh = []
        for _ in range(max(n, self.block)):
            obs, _ = self.env.reset(seed=self._seed)
            self._seed = None  # only the first reset after seed() is seeded; later ones continue its RNG
            fresh.append(obs)
        self._pool = np.concatenate([self._pool[self._next :], np.stack(fresh)])
        self._next = 0

    def sample(self, n: int) -> Start:
        if len(self._pool) - self._next < n:
            self._refill(n - (len(self._pool) - self._next))
        obs = self._pool[self._next : self._next + n]
        self._next += n
        return Start(as_model_tensor(obs, self.device))

    def close(self) -> None:
        self.env.close()


class BankStarts(StartSource):
    """Starts drawn uniformly, with replacement, from a bank of real initial observations."""

    def __init__(self, initial_obs: np.ndarray | torch.Tensor, device: torch.device):
        self.obs = as_model_tensor(initial_obs, device)
        if len(self.obs) == 0:
            raise ConfigError("the bank of start observations is empty")
        self.rng = np.random.default_rng()

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> Start:
        index = torch.as_tensor(self.rng.integers(0, len(self.obs), size=n), device=self.obs.device)
        return Start(self.obs.index_select(0, index))


class BranchedStarts(StartSource):
    """Real mid-episode start points with ``context`` steps of history, from training data.

    The data is an :class:`EpisodeBuffer` (sampled with ``sample_contexts``) or stored context
    windows (``context_obs`` / ``context_action`` from a ``starts.safetensors`` bank).
    """

    def __init__(
        self,
        data: EpisodeBuffer | tuple[torch.Tensor, torch.Tensor],
        device: torch.device,
        context: int = 8,
    ):
        self.device = device
        self.context = int(context)
        if self.context < 0:
            raise ConfigError(f"the context window must be >= 0 steps, got {context}")
        self.buffer = data if isinstance(data, EpisodeBuffer) else None
        if not isinstance(data, EpisodeBuffer):
            obs, action = data
            self.obs, self.action = as_model_tensor(obs, device), as_model_tensor(action, device)
            if self.obs.shape[1] - 1 < self.context:
                raise ConfigError(
                    f"the stored context windows hold {self.obs.shape[1] - 1} steps, fewer than the "
                    f"{self.context} asked for"
                )
            # keep the last `context` steps of each stored window
            self.obs = self.obs[:, self.obs.shape[1] - 1 - self.context :]
            self.action = self.action[:, self.action.shape[1] - self.context :]
        self.rng = np.random.default_rng()

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> Start:
        if self.buffer is not None:
            obs, action = self.buffer.sample_contexts(n, self.context, self.rng)
            obs, action = obs.to(self.device), action.to(self.device)
        else:
            index = torch.as_tensor(self.rng.integers(0, len(self.obs), size=n), device=self.device)
            obs, action = self.obs[index], self.action[index]
        return Start(obs[:, -1], obs, action)


# --- the starts.safetensors bank -------------------------------------------------------------
def save_starts(
    directory: str | Path,
    initial_obs: np.ndarray | torch.Tensor,
    context_obs: np.ndarray | torch.Tensor | None = None,
    context_action: np.ndarray | torch.Tensor | None = None,
) -> Path:
    """Write a bank of real starts as ``directory/starts.safetensors`` (atomically)."""
    tensors = {"initial_obs": torch.as_tensor(np.asarray(initial_obs)).contiguous()}
    if (context_obs is None) != (context_action is None):
        raise ConfigError("context_obs and context_action go together: pass both or neither")
    if context_obs is not None:
        tensors["context_obs"] = torch.as_tensor(np.asarray(context_obs)).contiguous()
        tensors["context_action"] = torch.as_tensor(np.asarray(context_action)).contiguous()
    atomic_write_files(directory, {STARTS_FILE: save_safetensors_bytes(tensors)})
    return Path(directory) / STARTS_FILE


def load_starts(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a bank of starts (a ``starts.safetensors`` file, or the checkpoint directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / STARTS_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no bank of real starts at {path}; write one with worldflux_gym.dream.save_starts(DIR, "
            "initial_obs) or use starts='reset' with the real env"
        )
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except SafetensorError as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if "initial_obs" not in tensors:
        raise CheckpointError(f"{path} holds no 'initial_obs' tensor (it has {sorted(tensors)})")
    return tensors
