"""Real-env data: collection, episodes, storage and sampling."""

from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.collect import collect_episodes, iter_episodes
from worldflux_gym.data.episode import Episode

__all__ = ["Episode", "EpisodeBuffer", "collect_episodes", "iter_episodes"]
