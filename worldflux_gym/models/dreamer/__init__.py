"""DreamerV3 world model (RSSM with categorical latents), registered as the ``dreamer`` family."""

from worldflux_gym.models.dreamer.model import DreamerConfig, DreamerModel

__all__ = ["DreamerConfig", "DreamerModel"]
