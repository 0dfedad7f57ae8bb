"""The world-model contract every family implements.

A world model is built for a Gymnasium ``observation_space`` and ``action_space`` and speaks five
verbs over batches (all tensors are ``[B, ...]``):

- ``encode(obs) -> State``: the state for real observations, with no history before them;
- ``update(state, action, obs) -> State``: the posterior after taking ``action`` and seeing ``obs``;
- ``transition(state, action) -> State``: the prior, i.e. one imagined step;
- ``decode(state) -> ModelOutput``: predictions for a state (observation, reward, continuation).
  Reward and continuation belong to the state *after* the action, see ``core/batch.py``;
- ``loss(batch) -> LossOutput``: the training objective on a ``TransitionBatch`` or ``SequenceBatch``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from gymnasium import spaces
from torch import nn

from worldflux_gym.core.batch import SequenceBatch, TransitionBatch
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.outputs import LossOutput, ModelOutput, Trajectory
from worldflux_gym.core.spaces import (
    check_action_space,
    check_observation_space,
    space_to_json,
)
from worldflux_gym.core.state import State


@dataclass(frozen=True)
class Capabilities:
    """What a family can do; dream environments and audits branch on these, never on the family name."""

    decodes_observations: bool
    predicts_reward: bool
    predicts_termination: bool
    reports_uncertainty: bool
    recurrent: bool  # the state carries history: starts need a burned-in context window


class WorldModel(nn.Module, ABC):
    """Base class of every family. Subclasses set the class attributes and implement the verbs."""

    family: ClassVar[str] = ""  # set by ``register_family``
    config_class: ClassVar[type]  # a dataclass of JSON-serialisable fields
    capabilities: ClassVar[Capabilities]
    batch_type: ClassVar[type[TransitionBatch] | type[SequenceBatch]] = TransitionBatch

    def __init__(self, config: Any, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__()
        check_observation_space(observation_space)
        check_action_space(action_space)
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.preset: str | None = None  # set by the factory
        self.checkpoint_dir: Path | None = None  # where it was loaded from (set by from_pretrained)

    # --- the verbs -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, obs: torch.Tensor) -> State: ...

    @abstractmethod
    def transition(
        self,
        state: State,
        action: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        report_uncertainty: bool = True,
    ) -> State:
        """One imagined step from ``state`` under ``action`` ``[B, *action_shape]``.

        ``deterministic`` takes the mode/mean instead of sampling; ``generator`` makes sampling
        reproducible. ``report_uncertainty=False`` lets a family skip work that only serves
        ``ModelOutput.uncertainty`` (the ensemble then runs one member per row instead of all).
        """

    @abstractmethod
    def decode(self, state: State) -> ModelOutput: ...

    @abstractmethod
    def loss(self, batch: TransitionBatch | SequenceBatch) -> LossOutput: ...

    def validate(self, batch: TransitionBatch | SequenceBatch) -> dict[str, float]:
        """Metrics on held-out data; the trainer calls it at every validation, under ``no_grad``.

        A family may also update state that depends on held-out data here (the ensemble picks its
        elite members). The default reports the training loss and its parts.
        """
        out = self.loss(batch)
        return {"loss": float(out.loss), **out.components}

    def update(self, state: State, action: torch.Tensor, obs: torch.Tensor) -> State:
        """Posterior step. A Markov model's state is determined by the observation alone."""
        return self.encode(obs)

    def initial_state(self, batch_size: int) -> State:
        """The state before any observation. Only recurrent families have one."""
        raise NotImplementedError(
            f"the {self.family!r} family has no state without an observation: use encode(obs)"
        )

    def observe(self, obs: torch.Tensor, action: torch.Tensor) -> State:
        """Burn in a real context window: ``obs`` ``[B, T+1, ...]``, ``action`` ``[B, T, ...]``.

        Returns the posterior state for the last observation, ready for ``transition``.
        """
        state = self.encode(obs[:, 0])
        for t in range(action.shape[1]):
            state = self.update(state, action[:, t], obs[:, t + 1])
        return state

    def rollout(
        self,
        state: State,
        actions: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> Trajectory:
        """Open-loop imagination: ``actions`` is ``[B, T, ...]``; predictions come back ``[T, B, ...]``."""
        states, outputs = [], []
        for t in range(actions.shape[1]):
            state = self.transition(state, actions[:, t], deterministic=deterministic, generator=generator)
            states.append(state)
            outputs.append(self.decode(state))

        def stack(name: str) -> torch.Tensor | None:
            values = [getattr(o, name) for o in outputs]
            return None if not values or values[0] is None else torch.stack(values)

        return Trajectory(
            states=states,
            obs=stack("obs"),
            reward=stack("reward"),
            continue_prob=stack("continue_prob"),
            uncertainty=stack("uncertainty"),
        )

    def adapt_to_data(self, batch: TransitionBatch) -> None:
        """Called once by the trainer with a large sample of training data before the first update.

        Families with input/output normalisation fit their statistics here (kept as buffers so that
        they are saved with the weights). The default does nothing.
        """

    def termination_head(self) -> nn.Module:
        """The module that reads a state's continue logit (refitted alone by
        :func:`worldflux_gym.training.end_head.fit_end_head`)."""
        raise ConfigError(f"the {self.family!r} family names no termination head")

    # --- description ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for parameter in self.parameters():
            return parameter.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    @property
    def sequence_length(self) -> int | None:
        """Window length ``T`` that ``loss`` wants for a ``SequenceBatch``; ``None`` for transitions."""
        if self.batch_type is SequenceBatch:
            return int(self.config.sequence_length)
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def io_contract(self) -> dict[str, Any]:
        """What goes in and out: spaces, capabilities, state tensors and predictions.

        The state part is read off a real ``encode`` + ``transition`` + ``decode`` on a dummy batch,
        so it cannot drift from the code.
        """
        with torch.no_grad():
            obs = torch.as_tensor(self.observation_space.sample()[None], device=self.device)
            action = torch.as_tensor(self.action_space.sample(), device=self.device)[None]
            was_training = self.training
            self.eval()
            state = self.transition(self.encode(obs), action, deterministic=True)
            output = self.decode(state)
            self.train(was_training)
        predictions = [
            name
            for name in ("obs", "reward", "continue_logits", "uncertainty")
            if getattr(output, name) is not None
        ]
        return {
            "family": self.family,
            "observation_space": space_to_json(self.observation_space),
            "action_space": space_to_json(self.action_space),
            "capabilities": asdict(self.capabilities),
            "state": {k: [list(v.shape[1:]), str(v.dtype)] for k, v in sorted(state.tensors.items())},
            "predictions": predictions,
        }

    def contract_fingerprint(self) -> str:
        canonical = json.dumps(self.io_contract(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    # --- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``metadata.json`` (and ``extra_files``,
        name -> content) as one atomic write."""
        from worldflux_gym.core.checkpoint import save_pretrained

        return save_pretrained(self, directory, extra_files)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "auto") -> WorldModel:
        """Load and verify a checkpoint written by :meth:`save_pretrained` (or ``fit``).

        The same as :func:`worldflux_gym.from_pretrained`, plus a type check when called on a
        subclass. The checkpoint's format version, weights checksum and I/O fingerprint are
        verified; nothing is unpickled. The family must be registered in this process (the
        built-in ones always are).

        >>> import gymnasium as gym
        >>> from worldflux_gym import WorldModel, create_world_model
        >>> real = gym.make("Pendulum-v1")
        >>> model = create_world_model("ensemble:ci", real.observation_space, real.action_space)
        >>> _ = model.save_pretrained("runs/pendulum-untrained")
        >>> again = WorldModel.from_pretrained("runs/pendulum-untrained", device="cpu")
        >>> again.family, again.preset
        ('ensemble', 'ci')
        """
        from worldflux_gym.core.checkpoint import from_pretrained

        model = from_pretrained(directory, device=device)
        if cls is not WorldModel and not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
