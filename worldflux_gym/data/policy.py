"""Agents as policies: the one adapter from an agent to a batched ``obs -> action`` function.

An *agent* is one of

- the path of a stable-baselines3 model saved as ``.zip`` (loaded with :func:`load_sb3_agent`);
- a loaded SB3 model, or anything with SB3's ``predict(obs, deterministic=...)``;
- any callable from a batch of observations ``[N, *obs_shape]`` to a batch of actions.

:func:`as_policy` turns each into a :data:`Policy`. Collection (``collect.py``), the agents'
evaluation, the audit, videos and the Dyna loop all load agents and make policies here.

**An SB3 zip is code.** SB3's loader unpickles parts of the zip (the policy's classes and
schedules), so loading one runs what its author put there: load only agents you trust. What can be
learnt without loading is read from the zip's JSON ``data`` entry (:func:`detect_sb3_algorithm`)
and from the ``AGENT.json`` sidecar that ``train_agent`` writes beside it, and nothing is unpickled
there. (World-model checkpoints are safetensors and JSON: nothing in them is unpickled either.)
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from gymnasium import spaces

from worldflux_gym.core.errors import AgentSpaceError, ConfigError, SpaceError
from worldflux_gym.core.spaces import describe_space, spaces_fit

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

Policy = Callable[[np.ndarray], np.ndarray]  # batch of observations -> batch of actions
Agent = Union[str, Path, "BaseAlgorithm", Policy]

SB3_ALGORITHMS = ("A2C", "DDPG", "DQN", "PPO", "SAC", "TD3")  # what load_sb3_agent loads
_LOAD_HINT = "pass the .zip written by stable-baselines3's save()"

# SB3 keeps the policy class's module in the zip's JSON "data" entry, which tells the algorithm
# family; PPO and A2C share one policy class, and PPO alone stores a clip range.
_SB3_POLICY_MODULES = {
    "stable_baselines3.sac.policies": "SAC",
    "stable_baselines3.td3.policies": "TD3",
    "stable_baselines3.dqn.policies": "DQN",
}


# --- what an agent file says without loading it ------------------------------------------------------
def sidecar_path(agent_path: str | Path) -> Path:
    """``AGENT.json`` beside ``AGENT.zip``: what the agent was trained in (written by train_agent)."""
    return Path(agent_path).with_suffix(".json")


def read_sidecar(agent_path: str | Path) -> dict:
    """The agent's sidecar (``{}`` when it has none): algorithm, recipe, dream id, real env, ..."""
    path = sidecar_path(agent_path)
    return json.loads(path.read_text()) if path.is_file() else {}


def detect_sb3_algorithm(path: str | Path) -> str:
    """The SB3 algorithm name (``"PPO"``, ``"SAC"``...) a saved ``.zip`` was trained with.

    Reads only the zip's JSON ``data`` entry; nothing is unpickled.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise ConfigError(
            f"{path} is not a stable-baselines3 model (.zip saved by model.save): {err}"
        ) from err
    module = data.get("policy_class", {}).get("__module__", "")
    if module in _SB3_POLICY_MODULES:
        return _SB3_POLICY_MODULES[module]
    if module == "stable_baselines3.common.policies":
        return "PPO" if "clip_range" in data else "A2C"
    raise ConfigError(
        f"cannot tell which algorithm saved {path} (policy module {module!r}); pass it explicitly, "
        "e.g. --algo PPO or load_sb3_policy(path, algo='PPO')"
    )


def _recorded_algorithm(path: Path) -> str | None:
    """The algorithm the agent's sidecar records, if it has a readable one."""
    try:
        algorithm = read_sidecar(path).get("algorithm")
    except (OSError, ValueError, AttributeError):  # not a sidecar of ours: the zip itself says
        return None
    return algorithm if isinstance(algorithm, str) else None


# --- loading ------------------------------------------------------------------------------------------
def load_sb3_agent(
    path: str | Path,
    algo: str | None = None,
    device: str = "cpu",
    *,
    what: str = "agent",
    hint: str = _LOAD_HINT,
    **load_options: Any,
) -> BaseAlgorithm:
    """Load a stable-baselines3 agent saved as ``.zip``: the one place an agent file is unpickled.

    ``algo`` names the SB3 algorithm class (``"PPO"``, ``"SAC"``, ...); ``None`` takes the one the
    agent's sidecar records, else detects it from the zip (:func:`detect_sb3_algorithm`). SB3's
    loader unpickles parts of the zip: load only agents you trust. ``what`` and ``hint`` word the
    error for a missing file (``no {what} at PATH; {hint}``); ``load_options`` go to SB3's ``load``
    (``env=`` to train the agent on).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no {what} at {path}; {hint}")
    name = (algo or _recorded_algorithm(path) or detect_sb3_algorithm(path)).upper()
    if name not in SB3_ALGORITHMS:
        raise ConfigError(
            f"unknown stable-baselines3 algorithm {name!r}; use one of {', '.join(SB3_ALGORITHMS)}"
        )
    import stable_baselines3

    return getattr(stable_baselines3, name).load(path, device=device, **load_options)


# --- spaces -------------------------------------------------------------------------------------------
def check_agent_spaces(
    agent: Any,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    *,
    agent_label: str,
    env_label: str,
    hint: str,
) -> None:
    """Refuse an agent whose observation or action space does not fit the env it is asked to act in
    (an agent of another env): :class:`~worldflux_gym.core.errors.AgentSpaceError`, one line, instead
    of SB3's shape error at the first step. ``hint`` says what to do instead. An object with only
    SB3's ``predict()`` (no spaces to compare) is taken as it is."""
    agent_obs, agent_act = getattr(agent, "observation_space", None), getattr(agent, "action_space", None)
    if agent_obs is None or agent_act is None:
        return
    if spaces_fit(agent_obs, observation_space) and spaces_fit(agent_act, action_space):
        return
    raise AgentSpaceError(
        f"the agent {agent_label} acts on observations {describe_space(agent_obs)} and "
        f"actions {describe_space(agent_act)}, but {env_label} has "
        f"{describe_space(observation_space)} and {describe_space(action_space)}: it was trained for "
        f"another env; {hint}"
    )


# --- the adapter --------------------------------------------------------------------------------------
def agent_name(agent: Any) -> str:
    """A short label for tables: the file stem of a ``.zip``, else the callable's or class's name."""
    if isinstance(agent, (str, Path)):
        return Path(agent).stem
    if hasattr(agent, "predict"):
        return type(agent).__name__
    return getattr(agent, "__name__", type(agent).__name__)


def as_policy(
    agent: Agent,
    deterministic: bool = True,
    *,
    algo: str | None = None,
    observation_space: spaces.Space | None = None,
    action_space: spaces.Space | None = None,
    where: str = "the env",
    hint: str = "use it in the env it was trained for",
    device: str = "cpu",
) -> Policy:
    """A batch policy for ``agent`` (see the module docstring for what an agent is).

    - a path: a stable-baselines3 ``.zip``, loaded with :func:`load_sb3_agent` (``algo``, ``device``).
      SB3 unpickles parts of it: use only agents you trust;
    - an SB3 model: its ``predict`` (``deterministic`` by default: the policy's mean action, the
      behaviour one deploys);
    - any other callable: called as it is on a batch of observations.

    With ``observation_space`` and ``action_space`` (those of ``where``), an SB3 agent whose spaces
    do not fit is refused (:class:`~worldflux_gym.core.errors.AgentSpaceError`, ending in ``hint``).
    """
    label = str(agent) if isinstance(agent, (str, Path)) else agent_name(agent)
    if isinstance(agent, (str, Path)):
        agent = load_sb3_agent(agent, algo, device)
    predict = getattr(agent, "predict", None)
    if predict is not None:
        if observation_space is not None and action_space is not None:
            check_agent_spaces(
                agent, observation_space, action_space, agent_label=label, env_label=where, hint=hint
            )

        def policy(obs: np.ndarray) -> np.ndarray:
            action, _ = predict(obs, deterministic=deterministic)
            return action

        policy.__name__ = type(agent).__name__
        return policy
    if callable(agent):
        return agent
    raise ConfigError(
        f"an agent is a stable-baselines3 .zip, an SB3 model or a callable from a batch of observations to "
        f"a batch of actions; got {type(agent).__name__}"
    )


def load_sb3_policy(
    path: str | Path,
    algo: str | None = None,
    observation_space: spaces.Space | None = None,
    action_space: spaces.Space | None = None,
    deterministic: bool = True,
) -> Policy:
    """A batch policy from a stable-baselines3 model saved as ``.zip`` (what collection acts with).

    ``algo`` names the SB3 algorithm class; ``None`` detects it (:func:`load_sb3_agent`). SB3's
    loader unpickles parts of the zip, so only load models you trust. Given the env's spaces, a
    model trained for spaces of other shapes is refused with a clear error.
    """
    model = load_sb3_agent(path, algo, what="policy file", hint=_LOAD_HINT)
    for what, theirs, ours in (
        ("observation", model.observation_space, observation_space),
        ("action", model.action_space, action_space),
    ):
        if ours is not None and theirs.shape != ours.shape:
            raise SpaceError(
                f"the policy in {path} was trained for {what} space {theirs}, the env has {ours}; "
                "use a policy trained on this env (with the same observation wrappers)"
            )
    return as_policy(model, deterministic)
