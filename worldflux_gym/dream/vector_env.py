"""``DreamVectorEnv``: ``N`` dreams as one Gymnasium ``VectorEnv``, stepped as one tensor batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_seed
from worldflux_gym.dream.core import Autoreset, DreamBatch, StepResult
from worldflux_gym.dream.render import attach_renderer


class DreamVectorEnv(VectorEnv):
    """``num_envs`` copies of a dream env whose ``step()`` is one batched model call.

    Spaces, rewards, starts and episode ends are those of :class:`~worldflux_gym.dream.DreamEnv`,
    batched: ``single_observation_space`` / ``single_action_space`` are the dream env's and
    ``observation_space`` / ``action_space`` their batched forms (``gymnasium.vector.utils.batch_space``).

    **Autoreset** (``autoreset_mode``, also in ``metadata["autoreset_mode"]``), all three of
    Gymnasium 1.x's modes:

    - ``AutoresetMode.NEXT_STEP`` (default): an env that ended is reset by the next ``step()``,
      which ignores its action and returns its start observation with reward 0 and no end flags;
    - ``AutoresetMode.SAME_STEP``: ``step()`` resets ended envs at once; their last observation is
      in ``info["final_obs"]`` (and ``info["final_info"]``) with the masks ``_final_obs`` /
      ``_final_info``, as Gymnasium's ``SyncVectorEnv`` does;
    - ``AutoresetMode.DISABLED``: the caller resets ended envs with
      ``reset(options={"reset_mask": mask})``; stepping one before that raises.

    **Output**: numpy arrays on the host (observations in the space's dtype, rewards float64,
    flags bool), or, with ``tensor_output=True``, torch tensors left on the model's device
    (observations float32, or uint8 for images); infos follow the same choice. ``info`` holds
    ``uncertainty`` (when computed) and ``halted`` (MOReL halting), each with its ``_`` mask.

    Gymnasium's ``vectorization_mode="async"`` (one dream per subprocess) works too, also after the
    parent has dreamed: importing worldflux-gym gives forked children one torch thread
    (:mod:`worldflux_gym.core.device`); the batched env is the fast way all the same.

    ``reset(seed=s)`` seeds the whole batch (model sampling, termination draws and starts) from
    ``s``; a list of seeds is combined into one. The same seed gives the same episodes.

    Registered ids build one with ``gym.make_vec``:

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import worldflux_gym
    >>> gym.register_envs(worldflux_gym)
    >>> vec = gym.make_vec("WorldFlux/Ensemble-Pendulum-v0", num_envs=256)
    >>> obs, info = vec.reset(seed=0)
    >>> obs, rewards, terminated, truncated, info = vec.step(np.zeros((256, 1), np.float32))
    >>> obs.shape, rewards.shape
    ((256, 3), (256,))
    """

    def __init__(
        self,
        model: WorldModel | str | Path,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        tensor_output: bool = False,
        render_mode: str | None = None,
        render_options: dict[str, Any] | None = None,
        **options: Any,
    ):
        mode = AutoresetMode(autoreset_mode)
        self.dream = DreamBatch(model, num_envs, autoreset=Autoreset(mode.value), **options)
        self.model = self.dream.model
        self.num_envs = self.dream.num_envs
        self.single_observation_space = self.dream.observation_space
        self.single_action_space = self.dream.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.render_mode = render_mode
        self.tensor_output = bool(tensor_output)
        self._obs_dtype = self.single_observation_space.dtype
        # rendering is dream.render's: render() gives one frame per env
        self._renderer = attach_renderer(self, render_mode, render_options)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | torch.Tensor, dict[str, Any]]:
        if isinstance(seed, (list, tuple)):
            given = [check_seed(s, f"seed[{i}]") for i, s in enumerate(seed) if s is not None]
            if len(seed) != self.num_envs:
                raise ConfigError(f"reset() got {len(seed)} seeds for {self.num_envs} envs")
            seed = int(np.random.SeedSequence(given).generate_state(1)[0]) if given else None
        elif seed is not None:
            seed = check_seed(seed)
        super().reset(seed=seed)  # seeds self.np_random, Gymnasium's convention
        if seed is None and self.dream.state is None:
            seed = int(self.np_random.integers(2**31))
        mask = (options or {}).get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ConfigError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), got "
                    f"{mask.dtype} {mask.shape}"
                )
        obs = self.dream.reset(seed=seed, mask=mask)
        return self._out_obs(obs), {}

    def step(self, actions: np.ndarray | torch.Tensor) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        result = self.dream.step(self.dream.check_actions(actions))
        info = self._info(result)
        if self.tensor_output:
            return result.obs, result.reward, result.terminated, result.truncated, info
        return (
            self._out_obs(result.obs),
            result.reward.cpu().numpy().astype(np.float64),
            result.terminated.cpu().numpy(),
            result.truncated.cpu().numpy(),
            info,
        )

    def _out_obs(self, obs: torch.Tensor) -> np.ndarray | torch.Tensor:
        if self.tensor_output:
            return obs
        return obs.cpu().numpy().astype(self._obs_dtype, copy=False)

    def _out(self, value: torch.Tensor) -> np.ndarray | torch.Tensor:
        return value if self.tensor_output else value.cpu().numpy()

    def _info(self, result: StepResult) -> dict[str, Any]:
        info: dict[str, Any] = {}
        stepped = ~result.reset  # envs reset by this step report no step info
        if result.uncertainty is not None:
            info["uncertainty"], info["_uncertainty"] = self._out(result.uncertainty), self._out(stepped)
        if result.halted is not None:
            info["halted"], info["_halted"] = self._out(result.halted), self._out(stepped)
        if result.final_obs is not None:
            ended = result.terminated | result.truncated
            final_info = {k: v for k, v in info.items()}
            if self.tensor_output:
                info["final_obs"] = result.final_obs
            else:
                # Gymnasium's layout: an object array holding the final obs of the envs that ended
                final = result.final_obs.cpu().numpy().astype(self._obs_dtype, copy=False)
                info["final_obs"] = np.full(self.num_envs, None, dtype=object)
                for i in np.flatnonzero(ended.cpu().numpy()):
                    info["final_obs"][i] = final[i]
            info["_final_obs"] = self._out(ended)
            info["final_info"], info["_final_info"] = final_info, self._out(ended)
        return info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One frame per env (``rgb_array``), or a grid of the first 16 in a window (``human``)."""
        if self._renderer is None:
            return None
        return self._renderer.render_batch()

    def close_extras(self, **kwargs: Any) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self.dream.close()
