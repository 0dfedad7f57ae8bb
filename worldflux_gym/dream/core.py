"""The batched dream: ``N`` copies of one world model stepped as one tensor batch.

This is the single implementation of the stepping logic. :class:`~worldflux_gym.dream.DreamEnv` is
its ``N = 1`` case, :class:`~worldflux_gym.dream.DreamVectorEnv` and
:class:`~worldflux_gym.dream.DreamSB3VecEnv` wrap it for Gymnasium's and stable-baselines3's vector
APIs. Everything here works on tensors on the model's device; converting to numpy is the caller's
choice.

One step of the batch is: check the actions, one ``transition`` + ``decode`` under
``torch.inference_mode()``, then reward (optionally minus a MOPO uncertainty penalty), termination
(sampled from ``termination_prob`` with a seeded ``torch.Generator``, or thresholded at 0.5 when
``deterministic``), MOReL halting on high uncertainty, and the horizon as truncation. Rows that
ended are reset from real start points (``starts.py``) according to the autoreset mode.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.core.checkpoint import read_metadata
from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.envs import make_env
from worldflux_gym.core.errors import ConfigError, SpaceError, WorldFluxError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.spaces import is_image_space
from worldflux_gym.core.state import State
from worldflux_gym.core.validate import (
    check_float,
    check_int,
    check_optional_positive_int,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.dream.latent import latent_observation_space, latent_of, same_space
from worldflux_gym.dream.resolve import checkpoint_dir_of, load_model
from worldflux_gym.dream.starts import (
    STARTS_FILE,
    BankStarts,
    BranchedStarts,
    RealResetStarts,
    Start,
    StartSource,
    as_model_tensor,
    load_starts,
)
from worldflux_gym.models.ensemble.model import EnsembleModel


# --- memory ------------------------------------------------------------------------------------
def batch_bytes_estimate(model: WorldModel, num_envs: int) -> int:
    """A rough upper bound of the bytes ``num_envs`` dreams of ``model`` hold and compute with.

    Per row: the model's state and one forward pass's activations (one float per output unit of
    every weight matrix, members included), twice over for temporaries, plus observation buffers."""
    obs = torch.zeros((1, *model.observation_space.shape), device=model.device)
    with torch.inference_mode():
        state_floats = sum(t.numel() for t in model.encode(obs).tensors.values())
    activations = sum(p.shape[:-1].numel() for p in model.parameters() if p.dim() >= 2)
    obs_floats = int(np.prod(model.observation_space.shape or (1,)))
    return int(num_envs) * 4 * (2 * (state_floats + activations) + 8 * obs_floats)


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (CUDA: free device memory; CPU: the system's available memory), or
    ``None`` where the platform does not say."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_batch_fits(model: WorldModel, num_envs: int) -> None:
    """Refuse a batch that cannot fit in the device's memory, before anything of its size is built."""
    needed, free = batch_bytes_estimate(model, num_envs), available_memory_bytes(model.device)
    if free is not None and needed > free:
        most = max(1, num_envs * free // max(needed, 1))
        raise ConfigError(
            f"num_envs={num_envs:,} needs about {needed / 2**30:.1f} GiB for the {model.family!r} model on "
            f"{model.device}, but only {free / 2**30:.1f} GiB is free; use at most about {most:,} envs"
        )


# --- errors ------------------------------------------------------------------------------------
class ActionError(WorldFluxError, ValueError):
    """An action of the wrong shape or dtype, not finite, or outside the action space."""


class ModelDivergenceError(WorldFluxError, FloatingPointError):
    """The world model produced NaN or inf: the dream left the region the model was trained on."""


class DreamResetNeeded(WorldFluxError, gym.error.ResetNeeded):
    """``step()`` before ``reset()``, or after the episode ended (without autoreset)."""


class DreamClosedError(WorldFluxError, gym.error.ClosedEnvironmentError):
    """``step()`` or ``reset()`` after ``close()``."""


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Autoreset(str, Enum):
    """How rows that ended are restarted (the names of ``gymnasium.vector.AutoresetMode``)."""

    NEXT_STEP = "NextStep"  # the next step() resets the row and ignores its action (Gymnasium default)
    SAME_STEP = "SameStep"  # step() resets at once and returns the final obs separately (SB3 style)
    DISABLED = "Disabled"  # the caller resets rows explicitly; stepping an ended row is an error


@dataclass
class StepResult:
    """One batched step, all tensors ``[N, ...]`` on the model's device."""

    obs: torch.Tensor  # the observation to act on next (a start obs for rows reset by this step)
    reward: torch.Tensor  # float32
    terminated: torch.Tensor  # bool
    truncated: torch.Tensor  # bool
    uncertainty: torch.Tensor | None  # float32, None when not computed
    halted: torch.Tensor | None  # bool: MOReL halt (terminated because uncertainty > threshold)
    reset: torch.Tensor  # bool: rows that were reset in this step (NEXT_STEP) instead of stepped
    final_obs: torch.Tensor | None = None  # SAME_STEP: the last obs of rows that ended (all rows)
    episode_return: torch.Tensor | None = None  # the return of the episode each row is in (or ended)
    episode_length: torch.Tensor | None = None


class DreamBatch:
    """``num_envs`` dreams in one tensor batch. See the module docstring for what a step does.

    Args:
        model: a fitted :class:`WorldModel` or a checkpoint directory.
        num_envs: batch size ``N``.
        starts: ``"reset"`` (the real env's resets; needs ``real_env``), ``"bank"`` (the
            checkpoint's ``starts.safetensors`` or ``start_bank``), ``"branched"`` (context windows
            from ``buffer`` or the bank; ``context`` steps of burn-in), or a :class:`StartSource`.
        real_env: the real env id (or env) the model was fitted on; its spaces must match the model's.
        max_episode_steps: the horizon; reaching it sets ``truncated``. ``None``: no horizon.
        deterministic: take the model's mean transition and threshold termination at 0.5.
        termination_odds: multiply the odds that a dreamed step ends by this factor (1: the model's
            own probability, the best estimate of a real episode's length). Above 1 the dream ends
            episodes more readily where the model is unsure whether they end, so an agent trained
            in it cannot learn to linger in states the model only half knows to be terminal.
        noise_scale: ensembles only: dream with this scale of the members' sampled noise instead of
            the checkpoint's own (the model is shared, not changed).
        report_uncertainty: ask the model for its uncertainty (all ensemble members: up to 7x the
            work; dreamer and tdmpc2: their uncertainty heads, see ``benchmarks/bench_uncertainty.py``).
            ``None``: on for one env when the model reports it, off for batches.
        uncertainty_penalty: MOPO's lambda: reward - lambda * uncertainty.
        halt_threshold / halt_penalty: MOReL: uncertainty above the threshold terminates the
            episode with reward ``-halt_penalty``.
        clip_actions: clip out-of-bounds Box actions instead of raising.
        autoreset: how ended rows restart (:class:`Autoreset`).
        precision: ``"float32"``, or ``"bfloat16"`` to run the model's products in bfloat16 under
            ``torch.autocast``: for CPUs with AMX or AVX512-BF16 and recent GPUs (speed-ups and the
            change in error: ``benchmarks/RESULTS.md``). Outputs stay float32.
    """

    def __init__(
        self,
        model: WorldModel | str | Path,
        num_envs: int = 1,
        *,
        starts: str | StartSource = "reset",
        real_env: str | gym.Env | None = None,
        start_bank: np.ndarray | torch.Tensor | str | Path | None = None,
        buffer: EpisodeBuffer | None = None,
        context: int = 8,
        max_episode_steps: int | None = None,
        deterministic: bool = False,
        termination_odds: float = 1.0,
        noise_scale: float | None = None,
        report_uncertainty: bool | None = None,
        uncertainty_penalty: float = 0.0,
        halt_threshold: float | None = None,
        halt_penalty: float = 100.0,
        clip_actions: bool = False,
        autoreset: Autoreset | str = Autoreset.NEXT_STEP,
        precision: str = "float32",
        device: str | torch.device = "auto",
        **unknown: Any,
    ):
        if unknown:  # gym.make passes any keyword through: name the typo, not Python's TypeError
            raise ConfigError(
                f"unknown dream option(s) {sorted(unknown)}; the options are {sorted(DREAM_OPTIONS)} "
                "(docs/dream-options.md)"
            )
        # every option is checked here, where it is given, not by the numpy or torch error it would
        # cause later (a float num_envs silently rounded, a NaN threshold that never halts ...)
        num_envs = check_positive_int(num_envs, "num_envs")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        max_episode_steps = check_optional_positive_int(max_episode_steps, "max_episode_steps")
        context = check_int(context, "context", minimum=0)
        uncertainty_penalty = check_float(uncertainty_penalty, "uncertainty_penalty", minimum=0.0)
        if halt_threshold is not None:
            halt_threshold = check_float(halt_threshold, "halt_threshold", minimum=0.0)
        halt_penalty = check_float(halt_penalty, "halt_penalty", minimum=0.0)
        termination_odds = check_positive_float(termination_odds, "termination_odds")
        device = resolve_device(device)
        self.checkpoint = checkpoint_dir_of(model)  # its start bank and real env id come from there
        self.model = load_model(model, device)
        self.device = self.model.device
        if noise_scale is not None:
            if not isinstance(self.model, EnsembleModel):
                raise ConfigError(
                    f"noise_scale scales the sampled noise of ensemble models; this {self.model.family!r} "
                    "model has none: drop the option"
                )
            self.model = self.model.with_noise_scale(noise_scale)
        check_batch_fits(self.model, int(num_envs))
        caps = self.model.capabilities
        if not caps.predicts_reward:
            raise ConfigError(
                f"the {self.model.family!r} model predicts no reward: it cannot drive a dream env"
            )
        if report_uncertainty is None:
            report_uncertainty = caps.reports_uncertainty and num_envs == 1
        wants_uncertainty = report_uncertainty or uncertainty_penalty != 0.0 or halt_threshold is not None
        if wants_uncertainty and not caps.reports_uncertainty:
            raise ConfigError(
                f"this {self.model.family!r} model reports no uncertainty, so report_uncertainty, "
                "uncertainty_penalty and halt_threshold are not available; use an ensemble, or a dreamer "
                "or tdmpc2 model with uncertainty heads (their presets have them; a checkpoint saved "
                "without them gains them with worldflux_gym.training.fit_uncertainty_heads)"
            )
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.deterministic = bool(deterministic)
        self.termination_odds = termination_odds
        self.report_uncertainty = bool(wants_uncertainty)
        self.uncertainty_penalty = uncertainty_penalty
        self.halt_threshold = halt_threshold
        self.halt_penalty = halt_penalty
        self.clip_actions = bool(clip_actions)
        self.autoreset = Autoreset(autoreset)
        self.precision = PRECISIONS[precision]

        self.action_space = self.model.action_space
        self.decodes = caps.decodes_observations
        if self.decodes:
            self.observation_space = self.model.observation_space
        else:
            self.observation_space = latent_observation_space(self.model)
        self._image = is_image_space(self.observation_space)
        # finite bounds as tensors: returned observations are kept inside the space, like a real env's
        low = np.broadcast_to(self.observation_space.low, self.observation_space.shape).astype(np.float32)
        high = np.broadcast_to(self.observation_space.high, self.observation_space.shape).astype(np.float32)
        self._obs_low = torch.as_tensor(low, device=self.device)
        self._obs_high = torch.as_tensor(high, device=self.device)
        self._bounded = bool(np.isfinite(low).any() or np.isfinite(high).any())
        self._discrete = isinstance(self.action_space, spaces.Discrete)
        if not self._discrete:
            self._act_low, self._act_high = self.action_space.low, self.action_space.high
            self._act_low_t = torch.as_tensor(self.action_space.low, device=self.device)
            self._act_high_t = torch.as_tensor(self.action_space.high, device=self.device)
            self._act_bounded = bool(np.isfinite(self._act_low).all() and np.isfinite(self._act_high).all())

        self.real_env_id = self._real_env_id(real_env)
        self.starts = self._make_starts(starts, real_env, start_bank, buffer, context)

        self.generator = torch.Generator(device=self.device)
        self.state: State | None = None
        self.obs: torch.Tensor | None = None
        self.elapsed = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.returns = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        self.ended = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.closed = False

    # --- construction helpers ------------------------------------------------------------------
    def _real_env_id(self, real_env: str | gym.Env | None) -> str | None:
        if isinstance(real_env, gym.Env):
            return real_env.spec.id if real_env.spec else None
        if real_env is None and self.checkpoint is not None:
            metadata = read_metadata(self.checkpoint)
            real_env = metadata.get("env_id") or metadata.get("real_env")
        return real_env

    def _make_starts(self, starts, real_env, start_bank, buffer, context) -> StartSource:
        if isinstance(starts, StartSource):
            return starts
        if starts == "reset":
            env = real_env if isinstance(real_env, gym.Env) else self.real_env_id
            if env is None:
                raise ConfigError(
                    "starts='reset' needs the real env the model was fitted on: pass real_env='Walker2d-v5' "
                    "(for example), or use starts='bank' (a bank of real start observations) or "
                    "starts='branched' with buffer=EpisodeBuffer(...)"
                )
            source = RealResetStarts(env, self.device, block=min(1024, max(16, self.num_envs)))
            self._check_real_spaces(source.env)
            return source
        # other starts need no real env, but a given one still has to match the model's spaces
        if isinstance(real_env, gym.Env):
            self._check_real_spaces(real_env)
        elif self.real_env_id is not None:
            probe = make_env(self.real_env_id, "real_env")
            self._check_real_spaces(probe)
            probe.close()
        if starts == "bank":
            return BankStarts(self._bank(start_bank)["initial_obs"], self.device)
        if starts == "branched":
            if buffer is not None:
                return BranchedStarts(buffer, self.device, context)
            bank = self._bank(start_bank)
            if "context_obs" not in bank:
                raise ConfigError(
                    "starts='branched' needs training data: pass buffer=EpisodeBuffer(episodes), or a "
                    "starts.safetensors bank that holds context_obs and context_action"
                )
            return BranchedStarts((bank["context_obs"], bank["context_action"]), self.device, context)
        raise ConfigError(f"unknown starts {starts!r}: use 'reset', 'bank', 'branched' or a StartSource")

    def _bank(self, start_bank) -> dict[str, torch.Tensor]:
        if start_bank is None:
            if self.checkpoint is None:
                raise ConfigError(
                    f"starts='bank' needs start_bank=ARRAY or a checkpoint directory with {STARTS_FILE}"
                )
            bank, source = load_starts(self.checkpoint), f"the start bank of {self.checkpoint}"
        elif isinstance(start_bank, (str, Path)):
            bank, source = load_starts(start_bank), f"the start bank {start_bank}"
        else:
            bank, source = {"initial_obs": as_model_tensor(start_bank, self.device)}, "start_bank"
        self._check_bank(bank, source)
        return bank

    def _check_bank(self, bank: dict[str, torch.Tensor], source: str) -> None:
        """Start observations are real observations of the env the model was fitted on: their shape
        is the model's observation shape (a bank of another env fails here, not as a tensor error)."""
        obs_shape = tuple(self.model.observation_space.shape)
        act_shape = tuple(self.action_space.shape)
        expected = {
            "initial_obs": (1, obs_shape, "observations"),
            "context_obs": (2, obs_shape, "observations"),
            "context_action": (2, act_shape, "actions"),
        }
        for key, (batch_dims, shape, what) in expected.items():
            if key not in bank:
                continue
            got = tuple(bank[key].shape)
            if len(got) != batch_dims + len(shape) or got[batch_dims:] != shape:
                rows = "[K, " if batch_dims == 1 else "[K, T, "
                raise SpaceError(
                    f"{source}: {key} has shape {got}, but the model's {what} have shape {shape}: give "
                    f"real {what} of the env it was fitted on, shape {rows}{', '.join(map(str, shape))}]"
                )

    def _check_real_spaces(self, env: gym.Env) -> None:
        if not same_space(env.action_space, self.action_space) or (
            self.decodes and not same_space(env.observation_space, self.observation_space)
        ):
            raise SpaceError(
                f"the real env {self.real_env_id!r} has spaces {env.observation_space} / {env.action_space} "
                f"but the model was fitted for {self.model.observation_space} / {self.action_space}: "
                "this checkpoint belongs to another env; fit one with "
                "`worldflux-gym fit REAL_ENV --model FAMILY:PRESET --out DIR`"
            )

    # --- seeding and starting ------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        """Seed every source of randomness: the model's sampling, termination and the starts."""
        seed = check_seed(seed)
        self.generator.manual_seed(seed)
        self.starts.seed(seed)

    def _observation(self, state: State, decoded: torch.Tensor | None) -> torch.Tensor:
        return decoded if self.decodes else latent_of(self.model, state)

    def _start_states(self, n: int) -> tuple[State, torch.Tensor]:
        start: Start = self.starts.sample(n)
        if start.context_obs is not None and self.model.capabilities.recurrent:
            state = self.model.observe(start.context_obs, start.context_action)  # burn-in
        else:
            state = self.model.encode(start.obs)
        obs = start.obs.float() if self.decodes else latent_of(self.model, state)
        return state, obs

    def reset(self, seed: int | None = None, mask: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Start every row (or the rows in ``mask``) from real start points; returns the observations."""
        self._check_open()
        if seed is not None:
            self.seed(seed)
        with torch.inference_mode():
            if mask is None or self.state is None:
                if mask is not None:
                    raise DreamResetNeeded("a partial reset (reset_mask) needs a full reset() first")
                self.state, self.obs = self._start_states(self.num_envs)
                self.elapsed.zero_()
                self.returns.zero_()
                self.ended.zero_()
            else:
                rows = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
                self._reset_rows(torch.nonzero(rows.to(self.device)).flatten())
            return self._to_space(self.obs)

    def _reset_rows(self, rows: torch.Tensor) -> None:
        """Replace rows ``rows`` (indices) of the state and observation with fresh starts."""
        state, obs = self._start_states(len(rows))
        self.state = State(
            {k: v.index_copy(0, rows, state[k].to(v.dtype)) for k, v in self.state.tensors.items()},
            self.state.meta,
        )
        self.obs = self.obs.index_copy(0, rows, obs)
        self.elapsed.index_fill_(0, rows, 0)
        self.returns.index_fill_(0, rows, 0.0)
        self.ended.index_fill_(0, rows, False)

    # --- actions -------------------------------------------------------------------------------
    def check_actions(self, actions: Any, batched: bool = True) -> torch.Tensor:
        """Validate a batch of actions (``[N, *shape]``; ``[*shape]`` when not ``batched``).

        Returns them as a tensor on the model's device. Raises :class:`ActionError` on a wrong
        shape or dtype, NaN/inf, or values outside the space (Box values are clipped instead when
        ``clip_actions``).
        """
        space = self.action_space
        single = () if self._discrete else tuple(space.shape)
        shape = (self.num_envs, *single) if batched else single
        is_tensor = isinstance(actions, torch.Tensor)
        if not is_tensor:
            try:
                actions = np.asarray(actions)
            except (TypeError, ValueError) as err:
                raise ActionError(f"the action {actions!r} is not an array: {err}") from err
        if tuple(actions.shape) != shape:
            raise ActionError(
                f"actions must have shape {shape} ({self.num_envs if batched else 1} action(s) in {space}), "
                f"got {tuple(actions.shape)}"
            )
        kind = _dtype_kind(actions)
        if self._discrete:
            if kind not in "iu":
                raise ActionError(f"Discrete actions must be integers, got dtype {actions.dtype}")
            low, high = int(space.start), int(space.start + space.n - 1)
            bad = (actions < low) | (actions > high)
            if bool(bad.any()):
                raise ActionError(f"actions {_examples(actions, bad)} are outside {space} ({low}..{high})")
            tensor = torch.as_tensor(actions, device=self.device).long()
            return tensor if batched else tensor.reshape(1)
        if kind != "f":
            raise ActionError(f"Box actions must be floating point, got dtype {actions.dtype}")
        if is_tensor:
            tensor = actions.to(self.device, torch.float32)
            inside = (tensor >= self._act_low_t) & (tensor <= self._act_high_t)
        else:
            inside = (actions >= self._act_low) & (actions <= self._act_high)
            tensor = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        # NaN compares false, and so does inf within finite bounds: one pass checks both on the
        # usual bounded Box; an unbounded one needs the finiteness check of its own.
        if self._act_bounded and bool(inside.all()):
            return tensor if batched else tensor.unsqueeze(0)
        finite = torch.isfinite(actions) if is_tensor else np.isfinite(actions)
        if not bool(finite.all()):
            raise ActionError(f"actions must be finite, got {_examples(actions, ~finite)}")
        outside = ~inside
        if bool(outside.any()):
            if not self.clip_actions:
                raise ActionError(
                    f"actions {_examples(actions, outside)} are outside {space}; pass clip_actions=True to "
                    "clip them to the bounds instead"
                )
            tensor = torch.clamp(tensor, self._act_low_t, self._act_high_t)
        return tensor if batched else tensor.unsqueeze(0)

    # --- stepping ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise DreamClosedError("this dream env is closed; make a new one")

    def step(self, actions: torch.Tensor) -> StepResult:
        """Step all rows with checked ``actions`` (from :meth:`check_actions`)."""
        self._check_open()
        if self.state is None:
            raise DreamResetNeeded("call reset() before step()")
        with torch.inference_mode():
            reset_now = None
            if self.autoreset is Autoreset.NEXT_STEP:
                reset_now = self.ended.clone()
            elif self.autoreset is Autoreset.DISABLED and bool(self.ended.any()):
                rows = torch.nonzero(self.ended).flatten().tolist()
                raise DreamResetNeeded(
                    f"the episode of env(s) {rows[:8]} ended; call reset() (a vector env: "
                    "reset(options={'reset_mask': mask})) before stepping them again"
                )
            with torch.autocast(self.device.type, self.precision, enabled=self.precision != torch.float32):
                state = self.model.transition(
                    self.state,
                    actions,
                    deterministic=self.deterministic,
                    generator=self.generator,
                    report_uncertainty=self.report_uncertainty,
                )
                out = self.model.decode(state)
            obs = self._observation(state, out.obs)
            if obs.is_floating_point():
                obs = obs.float()
            reward = out.reward.reshape(self.num_envs).float()
            uncertainty = None
            if self.report_uncertainty and out.uncertainty is not None:
                uncertainty = out.uncertainty.reshape(self.num_envs).float()
                reward = reward - self.uncertainty_penalty * uncertainty
            term_prob = None
            if out.continue_logits is not None:
                # the odds of ending times k are its log-odds (minus the continue logit) plus log k,
                # taken from the model's logits: no round trip through a probability that float32
                # has already rounded to 0 or 1
                end_logits = -out.continue_logits.reshape(self.num_envs).float()
                if self.termination_odds != 1.0:
                    end_logits = end_logits + math.log(self.termination_odds)
                term_prob = torch.sigmoid(end_logits)
            self._check_finite(obs, reward, term_prob, uncertainty, skip=reset_now)

            if term_prob is None:
                terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            elif self.deterministic:
                terminated = term_prob > 0.5
            else:
                draw = torch.rand(self.num_envs, generator=self.generator, device=self.device)
                terminated = draw < term_prob
            halted = None
            if self.halt_threshold is not None and uncertainty is not None:
                halted = uncertainty > self.halt_threshold
                terminated = terminated | halted
                reward = torch.where(halted, torch.full_like(reward, -self.halt_penalty), reward)
            self.elapsed += 1
            if self.max_episode_steps is None:
                truncated = torch.zeros_like(terminated)
            else:
                truncated = self.elapsed >= self.max_episode_steps

            self.state, self.obs = state, obs
            self.returns += reward
            length = self.elapsed.clone()
            episode_return = self.returns.clone()
            ended = terminated | truncated
            self.ended = ended
            result = StepResult(
                obs, reward, terminated, truncated, uncertainty, halted, torch.zeros_like(ended),
                episode_return=episode_return, episode_length=length,
            )  # fmt: skip
            if reset_now is not None and bool(reset_now.any()):
                self._apply_next_step_reset(result, reset_now)
            elif self.autoreset is Autoreset.SAME_STEP and bool(ended.any()):
                result.final_obs = self._to_space(obs)
                self._reset_rows(torch.nonzero(ended).flatten())
                result.obs = self.obs
            result.obs = self._to_space(result.obs)
            return result

    def _apply_next_step_reset(self, result: StepResult, rows_mask: torch.Tensor) -> None:
        """NEXT_STEP autoreset: rows that ended last step start again now; their action is ignored."""
        self._reset_rows(torch.nonzero(rows_mask).flatten())
        result.obs = self.obs
        result.reward = result.reward.masked_fill(rows_mask, 0.0)
        result.terminated = result.terminated & ~rows_mask
        result.truncated = result.truncated & ~rows_mask
        if result.uncertainty is not None:
            result.uncertainty = result.uncertainty.masked_fill(rows_mask, 0.0)
        if result.halted is not None:
            result.halted = result.halted & ~rows_mask
        result.reset = rows_mask
        self.ended = self.ended & ~rows_mask

    def _check_finite(
        self,
        obs: torch.Tensor,
        reward: torch.Tensor,
        term_prob: torch.Tensor | None,
        uncertainty: torch.Tensor | None,
        skip: torch.Tensor | None = None,
    ) -> None:
        # No NaN or inf ever leaves step() silently. Fast path: one sum and one host sync; a sum is
        # finite only if every term is (it can also overflow, which the exact check below sorts out).
        parts = [t for t in (obs, reward, term_prob, uncertainty) if t is not None]
        if bool(torch.isfinite(sum(t.float().sum() for t in parts))):
            return
        finite = torch.isfinite(obs.reshape(self.num_envs, -1)).all(dim=1)
        for part in parts[1:]:
            finite &= torch.isfinite(part)
        if skip is not None:
            finite |= skip  # rows being reset (NEXT_STEP): their stepped values are thrown away
        if not bool(finite.all()):
            rows = torch.nonzero(~finite).flatten().tolist()
            raise ModelDivergenceError(
                f"the {self.model.family!r} world model diverged: it predicted NaN or inf for env(s) "
                f"{rows[:8]} (of {self.num_envs}) after {int(self.elapsed.max()) + 1} dream step(s). The "
                "dream left the data the model was trained on: use shorter horizons (max_episode_steps), "
                "halt on uncertainty (halt_threshold) or fit the model on more data"
            )

    def _to_space(self, obs: torch.Tensor) -> torch.Tensor:
        """Keep returned observations inside the observation space (a real env never leaves it)."""
        if self._image:
            return obs.round().clamp(0, 255).to(torch.uint8)
        if self._bounded:
            return torch.clamp(obs, self._obs_low, self._obs_high)
        return obs

    def close(self) -> None:
        if not self.closed:
            self.starts.close()
            self.closed = True
            self.state = None


def _dtype_kind(actions: np.ndarray | torch.Tensor) -> str:
    if isinstance(actions, torch.Tensor):
        if actions.dtype.is_floating_point:
            return "f"
        if actions.dtype == torch.bool or actions.dtype.is_complex:
            return "b"
        return "i"
    return actions.dtype.kind


def _examples(actions: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> list:
    values = actions[mask]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return values[:4]


# the keyword options a dream takes (gym.make / make_vec / make_sb3_vec_env pass theirs through)
DREAM_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(DreamBatch.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
