"""Real-env data: collection, episodes, storage and sampling, and the agents that act in the real env
(:mod:`~worldflux_gym.data.policy`: an SB3 zip, an SB3 model or a callable as a batch policy)."""

from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.collect import (
    collect_episodes,
    collect_to_store,
    iter_episodes,
    resize_frame,
)
from worldflux_gym.data.episode import Episode
from worldflux_gym.data.minari_import import import_minari  # minari itself is imported on use
from worldflux_gym.data.policy import as_policy, load_sb3_agent, load_sb3_policy
from worldflux_gym.data.store import EpisodeStore

__all__ = [
    "Episode",
    "EpisodeBuffer",
    "EpisodeStore",
    "as_policy",
    "collect_episodes",
    "collect_to_store",
    "import_minari",
    "iter_episodes",
    "load_sb3_agent",
    "load_sb3_policy",
    "resize_frame",
]
