"""Exceptions raised by worldflux-gym. Each message names the problem and the fix.

Every class subclasses :class:`WorldFluxError` and the built-in (or Gymnasium) error a caller would
catch for the same problem, so ``except ValueError`` / ``except OSError`` keep working.
"""

import gymnasium as gym


class WorldFluxError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(WorldFluxError, ValueError):
    """An unknown family, preset or override, or an invalid configuration value."""


class DeviceError(ConfigError):
    """A device torch does not know (``"banana"``) or this machine lacks (``"cuda"`` without CUDA)."""


class UnknownEnvError(ConfigError, gym.error.UnregisteredEnv):
    """A Gymnasium env id that is not registered (or whose extra is not installed)."""


class SpaceError(WorldFluxError, ValueError):
    """A Gymnasium space the model cannot handle, or data that does not match the model's spaces."""


class AgentSpaceError(SpaceError):
    """An agent whose observation or action space does not fit the env it is asked to act in."""


class CheckpointError(WorldFluxError):
    """A checkpoint that is missing, corrupted, from another format version, or of another model."""


class DataError(WorldFluxError, ValueError):
    """An episode store that is missing, empty, incomplete, or holds data for another env."""


class TrainingError(WorldFluxError):
    """A fit that cannot start or go on: a run directory of another model, a non-finite loss."""


class ConcurrentWriterError(WorldFluxError, RuntimeError):
    """A directory (episode store, run) that another writer is writing now: one writer at a time."""


class DuplicateEpisodeError(DataError):
    """An episode an episode store already holds (the same content, or the same collection job's episode)."""


class OutputPathError(WorldFluxError, OSError):
    """An output path that cannot be written: a file where a folder is needed, a device such as
    ``/dev/null``, or a folder without write permission."""


class OutputExistsError(OutputPathError, FileExistsError):
    """An output that already exists and would be replaced: pass ``overwrite=True`` (``--overwrite``)."""
