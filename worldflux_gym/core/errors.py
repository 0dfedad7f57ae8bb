"""Exceptions raised by worldflux-gym. Each message names the problem and the fix."""


class WorldFluxError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(WorldFluxError, ValueError):
    """An unknown family, preset or override, or an invalid configuration value."""


class SpaceError(WorldFluxError, ValueError):
    """A Gymnasium space the model cannot handle, or data that does not match the model's spaces."""


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
