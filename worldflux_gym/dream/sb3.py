"""``DreamSB3VecEnv``: the batched dream behind stable-baselines3's own ``VecEnv`` API.

SB3 does not take a Gymnasium ``VectorEnv``; its ``VecEnv`` has a 4-tuple ``step``, resets ended
envs within the same step, and reports the last observation of an ended episode in
``infos[i]["terminal_observation"]`` and time limits in ``infos[i]["TimeLimit.truncated"]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_seed
from worldflux_gym.dream.core import Autoreset, DreamBatch


class DreamSB3VecEnv(VecEnv):
    """``num_envs`` dreams as an SB3 ``VecEnv``: PPO, A2C, SAC ... ``learn()`` on it unchanged.

    One ``step_wait`` is one batched model step (:class:`~worldflux_gym.dream.core.DreamBatch`,
    same-step autoreset). The only per-env Python work is building the ``infos`` list; envs that
    did not end get an empty dict, envs that ended get ``terminal_observation``,
    ``TimeLimit.truncated`` (truncated and not terminated, SB3's convention) and ``episode``
    (``r``, ``l``, ``t``, as SB3's ``Monitor`` writes it, so ``ep_rew_mean`` is logged).

    ``max_episode_steps`` (the horizon) should be set: without it only the model's terminations
    end episodes. Other options are those of ``DreamBatch``.
    """

    def __init__(self, model: WorldModel | str | Path, num_envs: int = 1, **options: Any):
        self.dream = DreamBatch(model, num_envs, autoreset=Autoreset.SAME_STEP, **options)
        self.render_mode = None  # read by VecEnv.__init__ through get_attr
        super().__init__(self.dream.num_envs, self.dream.observation_space, self.dream.action_space)
        self._obs_dtype = self.observation_space.dtype
        self._actions: np.ndarray | None = None
        self._start_time = time.time()

    def _numpy_obs(self, obs) -> np.ndarray:
        return obs.cpu().numpy().astype(self._obs_dtype, copy=False)

    def reset(self) -> VecEnvObs:
        # SB3 passes seeds through seed(), which stores them for the next reset: the first seeds the batch
        seed = self._seeds[0]
        if seed is not None:
            seed = check_seed(seed, "seed (VecEnv.seed)")
        if seed is None and self.dream.state is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        obs = self.dream.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        return self._numpy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async(actions)")
        actions, self._actions = self._actions, None
        result = self.dream.step(self.dream.check_actions(actions))
        dones_t = result.terminated | result.truncated
        obs = self._numpy_obs(result.obs)
        rewards = result.reward.cpu().numpy()
        dones = dones_t.cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(dones)
        if len(ended):
            # same-step autoreset always fills these three
            assert result.final_obs is not None and result.episode_return is not None
            assert result.episode_length is not None
            final = self._numpy_obs(result.final_obs[torch.as_tensor(ended, device=result.obs.device)])
            time_limit = (result.truncated & ~result.terminated).cpu().numpy()[ended]
            returns = result.episode_return.cpu().numpy()[ended]
            lengths = result.episode_length.cpu().numpy()[ended]
            elapsed = round(time.time() - self._start_time, 6)
            for j, i in enumerate(ended):
                infos[i] = {
                    "terminal_observation": final[j],
                    "TimeLimit.truncated": bool(time_limit[j]),
                    "episode": {"r": float(returns[j]), "l": int(lengths[j]), "t": elapsed},
                }
        return obs, rewards, dones, infos

    def close(self) -> None:
        self.dream.close()

    # --- attribute access: one dream holds every env, so attributes are shared ----------------
    def _count(self, indices: VecEnvIndices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs):
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in range(self._count(indices))]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
