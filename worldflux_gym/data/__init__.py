"""Real-env data: collection, episodes, storage and sampling."""

from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.collect import (
    collect_episodes,
    collect_to_store,
    iter_episodes,
    load_sb3_policy,
    resize_frame,
)
from worldflux_gym.data.episode import Episode
from worldflux_gym.data.minari_import import import_minari  # minari itself is imported on use
from worldflux_gym.data.store import EpisodeStore

__all__ = [
    "Episode",
    "EpisodeBuffer",
    "EpisodeStore",
    "collect_episodes",
    "collect_to_store",
    "import_minari",
    "iter_episodes",
    "load_sb3_policy",
    "resize_frame",
]
