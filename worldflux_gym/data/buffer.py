"""Sampling from real episodes: transitions, sequence windows and real start points.

An :class:`EpisodeBuffer` concatenates episodes into flat arrays once, so that a batch is a few
fancy-indexing operations whatever its size. Everything comes back as torch tensors on ``device``.

A buffer can favour its recent data: with ``recent_share`` > 0, that share of every sample
(transitions, windows, start contexts) comes from the steps at index ``recent_from`` onward, the
rest from all steps. In a store's buffer those are the episodes appended after its first
``recent_from`` steps, such as the data a Dyna loop's agent collected on top of a large prior: a
uniform draw would give the agent's own behaviour a few percent of each batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from worldflux_gym.core.batch import SequenceBatch, TransitionBatch
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.validate import check_float, check_int
from worldflux_gym.data.episode import Episode


def check_recent_steps(
    recent_from: int, recent_share: float, train_steps: int, setting: str, data: object
) -> None:
    """Refuse a ``recent_share`` asked of data with no train steps from ``recent_from`` on (a buffer
    would then draw uniformly without a word). ``setting`` names the caller's config, ``data`` the data."""
    if recent_share and recent_from >= train_steps:
        raise ConfigError(
            f"{setting}.recent_from={recent_from} is past the {train_steps} train steps of {data}: no recent "
            f"steps to draw recent_share={recent_share} of each batch from; set recent_from to the train "
            "steps before the new episodes, or recent_share to 0"
        )


class EpisodeBuffer:
    def __init__(
        self,
        episodes: Sequence[Episode],
        device: str | torch.device = "cpu",
        *,
        recent_from: int = 0,
        recent_share: float = 0.0,
    ):
        episodes = [e for e in episodes if len(e) > 0]
        if not episodes:
            raise ValueError("no episode with at least one step to sample from")
        self.recent_from = check_int(recent_from, "recent_from", minimum=0)
        self.recent_share = check_float(recent_share, "recent_share", minimum=0.0, maximum=1.0)
        self.episodes = list(episodes)
        self.device = torch.device(device)
        self.lengths = np.array([len(e) for e in episodes], dtype=np.int64)
        # obs of episode i live at obs_start[i] .. obs_start[i] + lengths[i] (inclusive)
        self.obs_start = np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]])
        self.step_start = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.obs = np.concatenate([e.obs for e in episodes])
        self.action = np.concatenate([e.action for e in episodes])
        self.reward = np.concatenate([e.reward for e in episodes]).astype(np.float32)
        self.terminated = np.concatenate([e.terminated for e in episodes]).astype(bool)
        self.truncated = np.concatenate([e.truncated for e in episodes]).astype(bool)
        # step j belongs to episode step_episode[j], at time step_time[j]
        self.step_episode = np.repeat(np.arange(len(episodes)), self.lengths)
        self.step_time = np.arange(len(self.action)) - self.step_start[self.step_episode]

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.dtype == torch.float64:
            tensor = tensor.float()
        return tensor.to(self.device)

    def transitions(self, steps: np.ndarray) -> TransitionBatch:
        """The transitions with global step indices ``steps``."""
        obs_index = self.obs_start[self.step_episode[steps]] + self.step_time[steps]
        return TransitionBatch(
            obs=self._tensor(self.obs[obs_index]),
            action=self._tensor(self.action[steps]),
            reward=self._tensor(self.reward[steps]),
            terminated=self._tensor(self.terminated[steps]),
            truncated=self._tensor(self.truncated[steps]),
            next_obs=self._tensor(self.obs[obs_index + 1]),
        )

    def _recent(self, batch_size: int) -> int:
        """How many of a sample of ``batch_size`` come from the recent steps (0 when there are none)."""
        if self.recent_share == 0.0 or self.recent_from >= self.num_steps:
            return 0
        return int(round(batch_size * self.recent_share))

    def sample_steps(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Global step indices: uniform over all steps, ``recent_share`` of them over the recent ones."""
        recent = self._recent(batch_size)
        if recent == 0:
            return rng.integers(0, self.num_steps, size=batch_size)
        return np.concatenate(
            [
                rng.integers(self.recent_from, self.num_steps, size=recent),
                rng.integers(0, self.num_steps, size=batch_size - recent),
            ]
        )

    def sample_transitions(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        return self.transitions(self.sample_steps(batch_size, rng))

    def all_transitions(self) -> TransitionBatch:
        return self.transitions(np.arange(self.num_steps))

    def sample_sequences(
        self, batch_size: int, length: int, rng: np.random.Generator, *, run_past_end: bool = False
    ) -> SequenceBatch:
        """Windows of ``length`` steps inside single episodes, uniformly over steps (see
        :meth:`sample_steps`).

        A window starts at a uniformly drawn step. Windows that would run past the episode's end are
        shifted back, so they hold ``length`` real steps where the episode has them; with
        ``run_past_end`` they stay where they start and are padded instead, which puts an episode's
        last step at every position of a window. Episodes shorter than ``length`` are padded either way
        (``mask`` False, last obs repeated).
        """
        return self.sequences(self.sample_steps(batch_size, rng), length, run_past_end)

    def sequences(self, first: np.ndarray, length: int, run_past_end: bool = False) -> SequenceBatch:
        """The windows of ``length`` steps that start at the global steps ``first`` (shifted back
        unless ``run_past_end``, and padded, as in :meth:`sample_sequences`)."""
        episode = self.step_episode[first]
        start = self.step_time[first]
        if not run_past_end:
            start = np.minimum(start, np.maximum(self.lengths[episode] - length, 0))
        offsets = np.arange(length)
        t = start[:, None] + offsets[None, :]  # [B, L] time steps
        mask = t < self.lengths[episode][:, None]
        t_step = np.minimum(t, self.lengths[episode][:, None] - 1)
        steps = self.step_start[episode][:, None] + t_step
        t_obs = np.minimum(np.concatenate([t, t[:, -1:] + 1], axis=1), self.lengths[episode][:, None])
        obs_index = self.obs_start[episode][:, None] + t_obs
        return SequenceBatch(
            obs=self._tensor(self.obs[obs_index]),
            action=self._tensor(self.action[steps]),
            reward=self._tensor(np.where(mask, self.reward[steps], 0.0).astype(np.float32)),
            terminated=self._tensor(self.terminated[steps] & mask),
            truncated=self._tensor(self.truncated[steps] & mask),
            mask=self._tensor(mask),
            is_first=self._tensor(start == 0),
        )

    def initial_observations(self) -> torch.Tensor:
        """The first observation of every episode ``[N, *obs_shape]`` (real starts)."""
        return self._tensor(self.obs[self.obs_start])

    def sample_contexts(
        self, batch_size: int, context: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real mid-episode start points with their history, for branched starts.

        Returns ``obs`` ``[B, context+1, ...]`` and ``action`` ``[B, context, ...]``, drawn from
        episodes with at least ``context`` steps, uniformly over episodes (``recent_share`` of them
        over the episodes that start at or after ``recent_from``); the dream starts after
        ``obs[:, -1]``, which is never a terminal observation.
        """
        eligible = np.flatnonzero(self.lengths >= context + 1)
        if len(eligible) == 0:
            raise ValueError(f"no episode is longer than the context window of {context} steps")
        recent_eligible = eligible[self.step_start[eligible] >= self.recent_from]
        recent = self._recent(batch_size) if len(recent_eligible) else 0
        episode = rng.choice(eligible, size=batch_size - recent)
        if recent:
            episode = np.concatenate([rng.choice(recent_eligible, size=recent), episode])
        # the last context obs is o_{start+context} with start+context <= length-1 (not terminal)
        start = rng.integers(0, self.lengths[episode] - context)
        offsets = np.arange(context + 1)
        obs_index = self.obs_start[episode][:, None] + start[:, None] + offsets[None, :]
        steps = self.step_start[episode][:, None] + start[:, None] + offsets[None, :-1]
        return self._tensor(self.obs[obs_index]), self._tensor(self.action[steps])
