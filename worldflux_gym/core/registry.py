"""Families register themselves here; ``create_world_model("family:preset", ...)`` builds them.

A family is a ``WorldModel`` subclass decorated with :func:`register_family`, which names it and
lists its presets. A preset is a set of config values plus a maturity label:

- ``"stable"``: fitted and checked against the benchmarks, used by shipped envs;
- ``"experimental"``: learns, but not yet benchmarked at its size;
- ``"test"``: tiny, for tests and quick checks (the ``ci`` presets).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel

MATURITY_LEVELS = ("stable", "experimental", "test")

# The spaces catalog parameter counts are reported for: Walker2d-v5's (17-D state, 6-D action).
WALKER_OBSERVATION_SPACE = spaces.Box(-np.inf, np.inf, (17,), np.float64)
WALKER_ACTION_SPACE = spaces.Box(-1.0, 1.0, (6,), np.float32)


@dataclass(frozen=True)
class Preset:
    values: dict[str, Any]
    maturity: str
    description: str
    observation_space: spaces.Space = field(default_factory=lambda: WALKER_OBSERVATION_SPACE, compare=False)
    action_space: spaces.Space = field(default_factory=lambda: WALKER_ACTION_SPACE, compare=False)

    def __post_init__(self) -> None:
        if self.maturity not in MATURITY_LEVELS:
            raise ConfigError(f"maturity {self.maturity!r} is not one of {MATURITY_LEVELS}")


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # "family:preset"
    family: str
    preset: str
    maturity: str
    description: str
    parameters: int  # for the preset's reference spaces
    reference_spaces: str


_FAMILIES: dict[str, type[WorldModel]] = {}
_PRESETS: dict[str, dict[str, Preset]] = {}


def register_family(name: str, presets: dict[str, Preset]):
    """Class decorator: make a ``WorldModel`` subclass available as ``name:<preset>``."""

    def decorate(cls: type[WorldModel]) -> type[WorldModel]:
        if name in _FAMILIES and _FAMILIES[name] is not cls:
            raise ConfigError(f"a family named {name!r} is already registered ({_FAMILIES[name].__name__})")
        if not presets:
            raise ConfigError(f"family {name!r} needs at least one preset")
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        for preset_name, preset in presets.items():
            unknown = set(preset.values) - fields
            if unknown:
                raise ConfigError(f"preset {name}:{preset_name} sets unknown fields {sorted(unknown)}")
        cls.family = name
        _FAMILIES[name] = cls
        _PRESETS[name] = dict(presets)
        return cls

    return decorate


def _load_builtin_families() -> None:
    importlib.import_module("worldflux_gym.models")


def families() -> dict[str, type[WorldModel]]:
    _load_builtin_families()
    return dict(_FAMILIES)


def family_class(name: str) -> type[WorldModel]:
    _load_builtin_families()
    if name not in _FAMILIES:
        raise ConfigError(f"unknown world-model family {name!r}; registered families: {sorted(_FAMILIES)}")
    return _FAMILIES[name]


def build_config(family: str, preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config dataclass of ``family:preset`` with ``overrides`` applied, all names checked."""
    cls = family_class(family)
    presets = _PRESETS[family]
    if preset not in presets:
        raise ConfigError(f"unknown preset {family}:{preset}; presets of {family!r}: {sorted(presets)}")
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides or {}) - valid
    if unknown:
        raise ConfigError(
            f"unknown override(s) {sorted(unknown)} for {family}:{preset}; valid fields: {sorted(valid)}"
        )
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(cls.config_class)
        if f.default is not dataclasses.MISSING
    }
    base = {**defaults, **presets[preset].values}
    checked = {
        key: check_override(f"{family}:{preset}", key, value, base.get(key))
        for key, value in (overrides or {}).items()
    }
    return cls.config_class(**{**presets[preset].values, **checked})


def check_override(model: str, key: str, value: Any, current: Any) -> Any:
    """An override of a config field must have the type of the preset's value (``hidden`` an
    integer >= 0, ``learning_rate`` a finite number ...): ``hidden="abc"`` or ``hidden=1.5`` is
    refused here, not as a torch error when the layers are built. Ints are accepted for floats."""
    from worldflux_gym.core.validate import check_float, check_int

    name = f"{key} ({current!r} in {model})"
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(current, int):
        return check_int(value, name, minimum=0)
    if isinstance(current, float):
        return check_float(value, name)
    if isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    return value  # a string, or a field without a typed default: taken as given


def parse_name(name: str) -> tuple[str, str]:
    """``"dreamer:ci"`` -> ``("dreamer", "ci")``; a bare family name means its first preset."""
    family, _, preset = name.partition(":")
    if not preset:
        family_class(family)
        preset = next(iter(_PRESETS[family]))
    return family, preset


def create_world_model(
    name: str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> WorldModel:
    """Build a fresh, untrained model ``family:preset`` for the given spaces.

    ``name`` is ``"family:preset"`` (a bare family name takes its first preset; ``catalog()``
    lists them all). ``overrides`` set fields of the family's config dataclass; an unknown name is
    a :class:`ConfigError` that lists the valid ones. The model is moved to ``device``
    (``"auto"``: CUDA when available).

    >>> import gymnasium as gym
    >>> import torch
    >>> from worldflux_gym import create_world_model
    >>> real = gym.make("Pendulum-v1")
    >>> model = create_world_model("ensemble:ci", real.observation_space, real.action_space)
    >>> state = model.encode(torch.zeros(4, 3))  # a batch of 4 observations
    >>> out = model.decode(model.transition(state, torch.zeros(4, 1)))  # one imagined step
    >>> out.obs.shape, out.reward.shape
    (torch.Size([4, 3]), torch.Size([4]))
    """
    from worldflux_gym.core.device import resolve_device

    family, preset = parse_name(name)
    config = build_config(family, preset, overrides)
    with torch.inference_mode(False):  # trainable even when built under torch.inference_mode()
        model = family_class(family)(config, observation_space, action_space)
        model.preset = preset
        return model.to(resolve_device(device))


def catalog() -> list[CatalogEntry]:
    """Every registered ``family:preset`` with its maturity and its true parameter count."""
    _load_builtin_families()
    entries = []
    for family, presets in sorted(_PRESETS.items()):
        for preset_name, preset in presets.items():
            with torch.device("meta"):
                model = _FAMILIES[family](
                    build_config(family, preset_name), preset.observation_space, preset.action_space
                )
            entries.append(
                CatalogEntry(
                    name=f"{family}:{preset_name}",
                    family=family,
                    preset=preset_name,
                    maturity=preset.maturity,
                    description=preset.description,
                    parameters=model.num_parameters(),
                    reference_spaces=f"obs {preset.observation_space.shape}, action {preset.action_space}",
                )
            )
    return entries
