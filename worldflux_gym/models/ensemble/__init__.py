"""The ``ensemble`` family: a PETS/MBPO probabilistic MLP ensemble (see ``model.py``)."""

from worldflux_gym.models.ensemble.model import EnsembleConfig, EnsembleModel

__all__ = ["EnsembleConfig", "EnsembleModel"]
