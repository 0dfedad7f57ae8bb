"""Collecting real episodes from any Gymnasium env id through Gymnasium's vector API.

A policy is random actions (``None``), any callable from a batch of observations to a batch of
actions, or a stable-baselines3 model saved as ``.zip`` (:func:`~worldflux_gym.data.policy.
load_sb3_policy`; an SB3 zip is code that SB3's loader unpickles: collect only with agents you trust). With
``image_size`` the observations are the env's own rendered frames, resampled to a square
``image_size x image_size`` uint8 image (the pixel setting of DreamerV3).

:func:`collect_to_store` is idempotent: ``steps`` is the total a collection job (a policy and a
seed) should hold in the store, and a rerun after any interruption finishes the job without storing
an episode twice.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import AddRenderObservation
from tqdm.auto import tqdm

from worldflux_gym.core.errors import ConfigError, DuplicateEpisodeError
from worldflux_gym.core.validate import check_float, check_int
from worldflux_gym.data.episode import Episode
from worldflux_gym.data.policy import Policy, load_sb3_policy

if TYPE_CHECKING:
    from worldflux_gym.data.store import EpisodeStore


# --- image observations ------------------------------------------------------------------------
def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """Resample an ``(H, W, C)`` uint8 frame to ``(size, size, C)`` with antialiased bilinear filtering.

    A real resampler: every output pixel averages the input pixels it covers (``np.resize`` would
    tile the flat buffer instead, and plain bilinear without antialiasing would alias thin lines).
    """
    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(
        image, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class ResizeFrame(gym.ObservationWrapper):
    """Resample image observations to ``size x size`` (see :func:`resize_frame`)."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        channels = env.observation_space.shape[-1]
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, channels), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return resize_frame(observation, self.size)


def image_wrappers(image_size: int) -> list[Callable[[gym.Env], gym.Env]]:
    """Wrappers that replace an env's observation by its rendered ``rgb_array`` frame, resized."""
    if image_size <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    return [partial(AddRenderObservation, render_only=True), partial(ResizeFrame, size=image_size)]


def make_real_vector_env(
    env_id: str, num_envs: int, image_size: int | None = None, **kwargs
) -> gym.vector.VectorEnv:
    """The real env ``env_id`` as a Gymnasium vector env with next-step autoreset.

    Image collection with several envs runs each in its own process: two MuJoCo renderers in one
    process draw into each other's GL context.
    """
    if num_envs < 1:
        raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
    wrappers = None
    mode = "sync"
    if image_size is not None:
        kwargs.setdefault("render_mode", "rgb_array")
        wrappers = image_wrappers(image_size)
        mode = "async" if num_envs > 1 else "sync"
    try:
        return gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs={"autoreset_mode": AutoresetMode.NEXT_STEP},
            wrappers=wrappers,
            **kwargs,
        )
    except gym.error.Error as err:
        raise ConfigError(
            f"cannot make the Gymnasium env {env_id!r}: {err}. Check the id (e.g. 'Walker2d-v5', "
            "'Pendulum-v1', 'CartPole-v1') and that its extra is installed."
        ) from err


# --- policies --------------------------------------------------------------------------------------
def _bounded_box(action_space: gym.Space, policy: str) -> gym.spaces.Box:
    if not isinstance(action_space, gym.spaces.Box) or not action_space.is_bounded("both"):
        raise ConfigError(
            f"{policy} needs a bounded Box action space, got {action_space}; collect a discrete env's "
            "data with random actions (policy=None) or an agent"
        )
    return action_space


def scaled_random_policy(action_space: gym.spaces.Box, scale: float, seed: int = 0) -> Policy:
    """Uniform random Box actions shrunk towards the middle of the box by ``scale`` (0..1).

    Small scales keep a walker up far longer than full-range noise (Walker2d-v5: ~116 steps at
    scale 0 against ~22 at scale 1), so data mixed over scales holds long episodes as well as falls.
    """
    action_space = _bounded_box(action_space, "scaled_random_policy")
    scale = check_float(scale, "scale", minimum=0.0, maximum=1.0)
    rng = np.random.default_rng(seed)
    mid = (action_space.high + action_space.low) / 2
    half = (action_space.high - action_space.low) / 2

    def policy(obs: np.ndarray) -> np.ndarray:
        noise = rng.uniform(-1.0, 1.0, size=(obs.shape[0], *action_space.shape))
        return (mid + scale * half * noise).astype(action_space.dtype)

    return policy


DEFAULT_HOLD = (10, 100)  # steps a held corner lasts, shortest and longest


def held_corner_policy(
    action_space: gym.spaces.Box, hold: tuple[int, int] = DEFAULT_HOLD, seed: int = 0
) -> Policy:
    """Random corners of the action box (every dimension at its low or high bound), each held for a
    uniform ``hold[0]``..``hold[1]`` steps, independently in each env of a batch.

    An agent trained in a dream often drives its actions to the bounds and keeps them there; uniform
    random actions almost never visit those corners for long, so a model fitted on them can get a
    held corner's slow drift wrong over tens of steps, and the agent exploits it.
    """
    action_space = _bounded_box(action_space, "held_corner_policy")
    if len(hold) != 2 or check_int(hold[0], "hold[0]", minimum=1) > check_int(hold[1], "hold[1]", minimum=1):
        raise ConfigError(f"hold must be (shortest, longest) steps with shortest <= longest, got {hold}")
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high
    action: np.ndarray | None = None
    left = np.zeros(0, dtype=np.int64)

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal action, left
        if action is None:
            action = np.empty((obs.shape[0], *action_space.shape), dtype=action_space.dtype)
            left = np.zeros(obs.shape[0], dtype=np.int64)
        new = left <= 0
        upper = rng.random(size=(int(new.sum()), *action_space.shape)) < 0.5
        action[new] = np.where(upper, high, low)
        left[new] = rng.integers(hold[0], hold[1] + 1, size=int(new.sum()))
        left -= 1
        return action.copy()

    return policy


# --- collection ------------------------------------------------------------------------------------
class _EpisodeBuilder:
    def __init__(self, first_obs: np.ndarray):
        self.obs, self.action, self.reward, self.terminated, self.truncated = [first_obs], [], [], [], []

    def add(self, action, reward, next_obs, terminated, truncated) -> None:
        self.action.append(action)
        self.reward.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.obs.append(next_obs)

    def build(self, cut: bool = False) -> Episode:
        truncated = np.array(self.truncated, dtype=bool)
        if cut and len(truncated):
            truncated[-1] = truncated[-1] or not self.terminated[-1]
        return Episode(
            obs=np.stack(self.obs),
            action=np.stack(self.action) if self.action else np.zeros((0,), np.float32),
            reward=np.asarray(self.reward, dtype=np.float32),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=truncated,
        )


def _resolve_policy(policy: Policy | str | Path | None, envs: gym.vector.VectorEnv, algo: str | None):
    if isinstance(policy, str | Path):
        return load_sb3_policy(policy, algo, envs.single_observation_space, envs.single_action_space)
    return policy


def _vector_episodes(
    envs: gym.vector.VectorEnv, steps: int, policy: Policy | None, seed: int, progress: bool, desc: str
) -> Iterator[Episode]:
    """Step ``envs`` (next-step autoreset) for exactly ``steps`` env steps, yielding episodes as they
    end; the ones still running at the end are yielded last, cut (marked truncated)."""
    num_envs = envs.num_envs
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    builders: list[_EpisodeBuilder | None] = [_EpisodeBuilder(obs[i]) for i in range(num_envs)]
    restarting = np.zeros(num_envs, dtype=bool)  # NEXT_STEP autoreset: this step only resets
    taken = 0
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    try:
        while taken < steps:
            actions = envs.action_space.sample() if policy is None else np.asarray(policy(obs))
            next_obs, reward, terminated, truncated, _ = envs.step(actions)
            for i in range(num_envs):
                if restarting[i]:
                    builders[i] = _EpisodeBuilder(next_obs[i])
                    continue
                if taken == steps:  # the budget is spent: the other envs' last steps are not kept
                    continue
                builders[i].add(actions[i], reward[i], next_obs[i], terminated[i], truncated[i])
                taken += 1
                if terminated[i] or truncated[i]:
                    yield builders[i].build()
                    builders[i] = None
            restarting = terminated | truncated
            obs = next_obs
            bar.update(taken - bar.n)
        for builder in builders:
            if builder is not None and builder.action:
                yield builder.build(cut=True)
    finally:
        bar.close()


def iter_episodes(
    env_id: str,
    steps: int,
    policy: Policy | str | Path | None = None,
    seed: int = 0,
    num_envs: int = 1,
    progress: bool = True,
    env_kwargs: dict | None = None,
    image_size: int | None = None,
    algo: str | None = None,
) -> Iterator[Episode]:
    """Yield episodes as they finish, until ``steps`` environment steps have been taken.

    Episodes still running when the budget is spent are yielded last, marked truncated at their
    final step (the collection cut them). ``policy`` maps a batch of observations to a batch of
    actions, or is the path of a stable-baselines3 ``.zip`` (``algo`` names its algorithm when it
    cannot be detected); ``None`` takes uniformly random actions (seeded). ``image_size`` makes the
    observations rendered frames of that size.
    """
    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    envs = make_real_vector_env(env_id, num_envs, image_size=image_size, **(env_kwargs or {}))
    try:
        yield from _vector_episodes(
            envs, steps, _resolve_policy(policy, envs, algo), seed, progress, f"collect {env_id}"
        )
    finally:
        envs.close()


def collect_episodes(env_id: str, steps: int, **kwargs) -> list[Episode]:
    """All episodes of :func:`iter_episodes` as a list (see there for the arguments)."""
    return list(iter_episodes(env_id, steps, **kwargs))


def job_name(policy: Policy | str | Path | None) -> str:
    """The name under which a collection with ``policy`` is recorded in a store: ``"random"``,
    ``"sb3:<sha256 of the zip, 16 hex>"`` for a saved agent (the same file wherever it lies), or
    ``"callable:<module>.<qualname>"`` for a function (pass ``job=`` to name one yourself)."""
    if policy is None:
        return "random"
    if isinstance(policy, str | Path):
        path = Path(policy)
        if not path.is_file():  # loading it will say so
            return f"sb3:{path}"
        return "sb3:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    name = getattr(policy, "__qualname__", None) or type(policy).__qualname__
    return f"callable:{getattr(policy, '__module__', None) or type(policy).__module__}.{name}"


def continuation_seed(seed: int, number: int) -> int:
    """The reset seed of a collection job (started with ``seed``) that resumes at episode ``number``:
    ``seed`` itself for a fresh job, and for a resumed one a seed derived from both (never one of
    the seeds a job started with another ``seed`` uses), so no stored episode is replayed."""
    if number == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(number)]).generate_state(1)[0])


def collect_to_store(
    env_id: str,
    steps: int,
    directory: str | Path,
    policy: Policy | str | Path | None = None,
    seed: int = 0,
    num_envs: int = 1,
    image_size: int | None = None,
    algo: str | None = None,
    validation_fraction: float = 0.1,
    progress: bool = True,
    env_kwargs: dict | None = None,
    job: str | None = None,
) -> EpisodeStore:
    """Collect into the episode store at ``directory`` (created, or extended) until it holds
    ``steps`` env steps of this collection job; rerun after an interruption, it finishes the job.

    A job is the policy (:func:`job_name`, or ``job`` to name it) with its ``seed``: ``steps`` is
    the job's total, not an amount to add, so rerunning the same call never collects twice, and
    another policy or seed is another job adding its own ``steps``. A resumed job continues from
    the episodes the store holds (the next episode number, and a reset seed derived from it, see
    :func:`continuation_seed`), and the store refuses an episode it already holds, so no episode
    is ever stored twice (episodes a rerun reproduces exactly count as collected). Each episode is
    on disk as soon as it ends, so an interruption loses only the episodes still running. The
    collection holds the store's writer lock: a second writer is refused at once. An existing
    store must hold the same env with the same spaces.
    """
    from worldflux_gym.data.store import EpisodeKey, EpisodeStore

    if steps <= 0:
        raise ConfigError(f"steps must be positive, got {steps}")
    job = job or job_name(policy)
    envs = make_real_vector_env(env_id, num_envs, image_size=image_size, **(env_kwargs or {}))
    try:
        store = EpisodeStore.create(
            directory,
            env_id,
            envs.single_observation_space,
            envs.single_action_space,
            validation_fraction=validation_fraction,
            exist_ok=True,
            metadata={"image_size": image_size} if image_size else None,
        )  # the writer lock is ours from here on
        with store:
            have, number = store.job_progress(job, seed)
            if have < steps:
                episodes = _vector_episodes(
                    envs,
                    steps - have,
                    _resolve_policy(policy, envs, algo),
                    continuation_seed(seed, number),
                    progress,
                    f"collect {env_id}",
                )
                for episode in episodes:
                    with contextlib.suppress(DuplicateEpisodeError):  # held already: it counts as done
                        store.append(episode, EpisodeKey(job, int(seed), number))
                    number += 1
    finally:
        envs.close()
    return store
