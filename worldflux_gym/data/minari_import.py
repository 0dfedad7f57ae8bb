"""Import a Minari dataset into an :class:`EpisodeStore` (extra: ``pip install worldflux-gym[minari]``).

Minari stores episodes with the same alignment as this library: ``T + 1`` observations (the final
one included), ``T`` actions, rewards, terminations and truncations, kept apart. An import is
therefore a copy, episode by episode, checked against the dataset's spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from worldflux_gym.core.errors import ConfigError, DataError
from worldflux_gym.data.episode import Episode
from worldflux_gym.data.store import EpisodeStore


def _load_minari(dataset: Any, download: bool) -> Any:
    try:
        import minari
    except ImportError as err:
        raise ConfigError(
            "importing Minari datasets needs the minari extra: pip install 'worldflux-gym[minari]'"
        ) from err
    if not isinstance(dataset, str):
        return dataset
    try:
        return minari.load_dataset(dataset, download=download)
    except FileNotFoundError as err:
        raise DataError(
            f"no local Minari dataset {dataset!r} ({err}); pass download=True to fetch it, or check "
            "MINARI_DATASETS_PATH"
        ) from err


def import_minari(
    dataset: Any,
    directory: str | Path,
    env_id: str | None = None,
    validation_fraction: float = 0.1,
    download: bool = False,
    progress: bool = True,
) -> EpisodeStore:
    """Copy every episode of a Minari ``dataset`` (an id or a ``MinariDataset``) into a new store.

    ``env_id`` defaults to the id of the env the dataset was collected from. An import interrupted
    half-way keeps the episodes copied so far; the store refuses a second import into it.
    """
    dataset = _load_minari(dataset, download)
    if env_id is None:
        spec = dataset.spec.env_spec
        if spec is None:
            raise DataError(
                f"the Minari dataset {dataset.id!r} does not name its env; pass env_id='...' explicitly"
            )
        env_id = spec.id
    if dataset.total_episodes == 0:
        raise DataError(f"the Minari dataset {dataset.id!r} holds no episodes; there is nothing to import")
    store = EpisodeStore.create(
        directory,
        env_id,
        dataset.observation_space,
        dataset.action_space,
        validation_fraction=validation_fraction,
        metadata={"source": "minari", "dataset_id": dataset.id},
    )
    obs_dtype = dataset.observation_space.dtype
    with store:
        for data in tqdm(
            dataset.iterate_episodes(),
            total=dataset.total_episodes,
            disable=not progress,
            desc=f"import {dataset.id}",
            unit="episode",
        ):
            store.append(
                Episode(
                    obs=np.asarray(data.observations, dtype=obs_dtype),
                    action=np.asarray(data.actions),
                    reward=np.asarray(data.rewards, dtype=np.float32),
                    terminated=np.asarray(data.terminations, dtype=bool),
                    truncated=np.asarray(data.truncations, dtype=bool),
                )
            )
    return store
