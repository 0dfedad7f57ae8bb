"""The world-model contract: model base class, state, batches, outputs, registry and save format."""

from worldflux_gym.core.batch import SequenceBatch, TransitionBatch
from worldflux_gym.core.checkpoint import from_pretrained, save_pretrained
from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import CheckpointError, ConfigError, SpaceError, WorldFluxError
from worldflux_gym.core.model import Capabilities, WorldModel
from worldflux_gym.core.outputs import LossOutput, ModelOutput, Trajectory
from worldflux_gym.core.registry import (
    CatalogEntry,
    Preset,
    catalog,
    create_world_model,
    families,
    register_family,
)
from worldflux_gym.core.state import State

__all__ = [
    "CatalogEntry",
    "Capabilities",
    "CheckpointError",
    "ConfigError",
    "LossOutput",
    "ModelOutput",
    "Preset",
    "SequenceBatch",
    "SpaceError",
    "State",
    "Trajectory",
    "TransitionBatch",
    "WorldFluxError",
    "WorldModel",
    "catalog",
    "create_world_model",
    "families",
    "from_pretrained",
    "register_family",
    "resolve_device",
    "save_pretrained",
]
