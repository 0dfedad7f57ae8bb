"""``DreamEnv``: one Gymnasium env whose ``step()`` runs a world model instead of a simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_seed
from worldflux_gym.dream.core import Autoreset, DreamBatch
from worldflux_gym.dream.render import attach_renderer


class DreamEnv(gym.Env):
    """A learned world model as a Gymnasium environment (the ``N = 1`` case of :class:`DreamBatch`).

    **Action space**: the real env's (the space the model was fitted for): a 1-D ``Box`` or a
    ``Discrete``. Actions are checked: a wrong shape or dtype, NaN/inf or a value outside the space
    raises :class:`~worldflux_gym.dream.ActionError` (``clip_actions=True`` clips Box actions).

    **Observation space**: the real env's when the family decodes observations (Dreamer,
    ensemble); otherwise the model's latent ``Box`` (TD-MPC2: ``[0, 1]^latent_dim``), and
    :class:`~worldflux_gym.dream.EncodeObservation` gives the real env the same space. Returned
    observations are clipped to the space's finite bounds, as a real env's would be.

    **Rewards**: the model's predicted reward for the state after the action, minus
    ``uncertainty_penalty * uncertainty`` (MOPO) when asked; ``-halt_penalty`` on a MOReL halt.

    **Starting state**: a real start point (``starts``): the real env's own ``reset()`` (default),
    a bank of real initial observations, or a real mid-episode context from training data
    ("branched", burned in through ``model.observe`` for recurrent models).

    **Episode end**: ``terminated`` is drawn from the model's termination probability
    (Bernoulli, with a ``torch.Generator`` seeded by ``reset(seed=...)``; thresholded at 0.5 when
    ``deterministic``), or set by a MOReL halt when ``uncertainty > halt_threshold``.
    ``truncated`` comes from the horizon ``max_episode_steps`` (for registered ids, Gymnasium's
    ``TimeLimit`` applies the spec's horizon). Stepping after the end without ``reset()`` raises.

    **Info**: ``uncertainty`` (when ``report_uncertainty`` or a penalty/halt is on) and ``halted``.
    The same seed gives the same episode for the same actions. NaN or inf from the model raises
    :class:`~worldflux_gym.dream.ModelDivergenceError` instead of leaving ``step()``.

    **Rendering** (:mod:`worldflux_gym.dream.render`): ``render_mode="rgb_array"`` returns the
    dream's frame (pixel models: the decoded image; state models: the real simulator put in the
    predicted state), ``"human"`` shows it in a pygame window; latent models cannot be drawn.
    ``render_options``: ``width``, ``height``, ``shadows``, ``reflections``, ``antialias``, ``track``.
    ``metadata["render_modes"]`` is empty for latent models (nothing to draw).

    Args: ``model`` (a fitted model or a checkpoint directory) and the options of
    :class:`~worldflux_gym.dream.core.DreamBatch` (``docs/dream-options.md``).

    Registered ids build one with ``gym.make``; ``checkpoint=DIR`` swaps in any fitted run:

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import worldflux_gym
    >>> gym.register_envs(worldflux_gym)
    >>> env = gym.make("WorldFlux/Ensemble-Pendulum-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.array([0.5], np.float32))
    >>> obs.shape, sorted(info)  # an ensemble reports its disagreement
    ((3,), ['uncertainty'])
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 30}

    def __init__(
        self,
        model: WorldModel | str | Path,
        *,
        render_mode: str | None = None,
        render_options: dict[str, Any] | None = None,
        **options: Any,
    ):
        # a single env never autoresets: after the end, the caller resets (Gymnasium's contract)
        self.dream = DreamBatch(model, 1, autoreset=Autoreset.DISABLED, **options)
        self.model = self.dream.model
        self.observation_space = self.dream.observation_space
        self.action_space = self.dream.action_space
        self.render_mode = render_mode
        self._obs_dtype = self.observation_space.dtype
        if not self.dream.decodes:
            # a latent dream cannot be drawn: say so in the metadata Gymnasium's checker reads
            self.metadata = {**self.metadata, "render_modes": []}
        # rendering is dream.render's; render_options: width, height, shadows, ...
        self._renderer = attach_renderer(self, render_mode, render_options)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            seed = check_seed(seed)  # before Gymnasium's own seeding, which fails on large ints
        super().reset(seed=seed)
        if seed is None and self.dream.state is None:
            # first reset without a seed: draw one from Gymnasium's np_random so runs still differ
            seed = int(self.np_random.integers(2**31))
        obs = self.dream.reset(seed=seed)
        if self.render_mode == "human":
            self.render()
        return self._numpy_obs(obs[0]), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.dream._check_open()
        result = self.dream.step(self.dream.check_actions(action, batched=False))
        info: dict[str, Any] = {}
        if result.uncertainty is not None:
            info["uncertainty"] = float(result.uncertainty[0])
        if result.halted is not None:
            info["halted"] = bool(result.halted[0])
        if self.render_mode == "human":
            self.render()
        return (
            self._numpy_obs(result.obs[0]),
            float(result.reward[0]),
            bool(result.terminated[0]),
            bool(result.truncated[0]),
            info,
        )

    def _numpy_obs(self, obs: torch.Tensor) -> np.ndarray:
        return obs.cpu().numpy().astype(self._obs_dtype, copy=False)

    def render(self) -> np.ndarray | None:
        """The dream's current frame (see :mod:`worldflux_gym.dream.render`); ``None`` without a mode."""
        if self._renderer is None:
            gym.logger.warn("render() without a render_mode: make the env with render_mode='rgb_array'")
            return None
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self.dream.close()
        super().close()
