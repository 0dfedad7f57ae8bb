"""Episodes on disk: an append-only, crash-safe store split into train and validation by episode.

Layout of a store directory::

    store.json               env id, spaces, validation fraction, format version (written once)
    shards/00000003.wfep     one shard per writing session, a sequence of episode records
    .worldflux.lock          the writer lock: one process appends at a time (``core/lock.py``)

A shard is a plain sequence of records, each ``[u64 payload size][32-byte sha256][payload]``, where
the payload is one episode encoded as safetensors (arrays ``obs``, ``action``, ``reward``,
``terminated``, ``truncated``; in the safetensors metadata its split, its index, the sha256 of its
arrays and, for collected episodes, its key: the collection job, the job's seed and the episode's
number in the job). An episode is written (and handed to the OS) as soon as it is appended, so a
killed process loses at most the episodes still running. A record cut short by a crash is
recognised by its size or checksum when the store is read and skipped with a warning; a new session
never appends after it, it starts a new shard. Nothing is ever overwritten and nothing is unpickled.

A store never holds an episode twice: :meth:`EpisodeStore.append` refuses an episode whose arrays it
already holds (records written before content hashes were stored are hashed when a writer opens the
store) or whose key it already holds, with :class:`DuplicateEpisodeError`. That, and the job keys
from which ``collect_to_store`` resumes, make an interrupted collection safe to rerun.

Which split an episode belongs to is decided once, when it is appended, from its index: with a
validation fraction ``f``, episode ``k`` is held out when ``(k + 1) f`` rounds above ``k f``,
so held-out episodes are spread evenly through the collection (the 5th, 15th, 25th... for f = 0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors_bytes
from safetensors.numpy import save as save_safetensors_bytes

from worldflux_gym.core.checkpoint import (
    _JOURNAL,
    atomic_write_files,
    recover_interrupted_write,
    to_json_bytes,
)
from worldflux_gym.core.errors import DataError, DuplicateEpisodeError, SpaceError
from worldflux_gym.core.lock import LOCK_FILES, WriterLock
from worldflux_gym.core.spaces import (
    check_action_space,
    check_observation_space,
    space_from_json,
    space_to_json,
    stored_action_shape,
)
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.episode import Episode

STORE_FORMAT_VERSION = 1
STORE_FILE = "store.json"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".wfep"
SPLITS = ("train", "validation")
_HEADER = struct.Struct("<Q32s")  # payload size, sha256 of the payload
_FSYNC_INTERVAL_S = 1.0  # records reach the OS at once (kill -9 safe); the disk at most this late
_ARRAYS = ("obs", "action", "reward", "terminated", "truncated")


@dataclass(frozen=True)
class EpisodeKey:
    """Which collection an episode comes from: episode ``number`` (0, 1, ...) of the collection
    ``job`` (e.g. ``"random"`` or ``"sb3:<sha256 of the agent zip>"``) started with ``seed``."""

    job: str
    seed: int
    number: int


def content_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of an episode's arrays as stored (names, dtypes, shapes and bytes): equal iff the
    episodes are bit for bit the same."""
    digest = hashlib.sha256()
    for name in _ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def is_store(directory: str | Path) -> bool:
    return (Path(directory) / STORE_FILE).is_file()


def _our_leftovers(name: str) -> bool:
    """Files a killed ``create`` may leave in a directory that is not a store yet."""
    return name in LOCK_FILES or name in (f".{STORE_FILE}.pending", _JOURNAL, f"{_JOURNAL}.tmp")


def is_validation_episode(index: int, validation_fraction: float) -> bool:
    """Whether episode number ``index`` (0-based, in order of appending) is held out."""
    # floor(x + 1/2) rather than round(): Python rounds halves to even, which would space them unevenly
    return math.floor((index + 1) * validation_fraction + 0.5) > math.floor(index * validation_fraction + 0.5)


def _read_records(path: Path) -> tuple[list[bytes], int]:
    """The intact records of a shard, and the number of trailing bytes that are not one."""
    data = path.read_bytes()
    records, offset = [], 0
    while offset + _HEADER.size <= len(data):
        size, digest = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + size]
        if len(payload) != size or hashlib.sha256(payload).digest() != digest:
            break  # a record cut short by a crash; nothing valid can follow it in this shard
        records.append(payload)
        offset += _HEADER.size + size
    return records, len(data) - offset


def _stored_arrays(episode: Episode, action_space: spaces.Space | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``episode`` as a record holds them (Discrete actions as int64)."""
    action = episode.action
    if isinstance(action_space, spaces.Discrete):
        action = action.astype(np.int64)
    return {
        "obs": np.ascontiguousarray(episode.obs),
        "action": np.ascontiguousarray(action),
        "reward": np.ascontiguousarray(episode.reward, dtype=np.float32),
        "terminated": np.ascontiguousarray(episode.terminated, dtype=bool),
        "truncated": np.ascontiguousarray(episode.truncated, dtype=bool),
    }


class EpisodeStore:
    """Real episodes of one env, on disk. Open an existing store with ``EpisodeStore(directory)``.

    >>> store = EpisodeStore.create("data/pendulum", "Pendulum-v1", env.observation_space, env.action_space)
    >>> store.append(episode)
    >>> buffer = store.buffer("train", device="cpu")  # an EpisodeBuffer to sample batches from
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        path = self.directory / STORE_FILE
        if not path.is_file():
            hint = (
                " (it has shards but no store.json: it was not created by EpisodeStore.create)"
                if (self.directory / SHARD_DIR).is_dir()
                else ""
            )
            raise DataError(
                f"{self.directory} is not an episode store{hint}; create one with "
                f"`worldflux-gym collect ENV_ID --steps N --out {self.directory}`"
            )
        try:
            info = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON ({err}); the store description is corrupted") from err
        if info.get("format_version") != STORE_FORMAT_VERSION:
            raise DataError(
                f"{self.directory} uses episode-store format {info.get('format_version')!r}; this version "
                f"of worldflux-gym reads format {STORE_FORMAT_VERSION}"
            )
        self.env_id: str = info["env_id"]
        self.observation_space: spaces.Space = space_from_json(info["observation_space"])
        self.action_space: spaces.Space = space_from_json(info["action_space"])
        self.validation_fraction: float = float(info["validation_fraction"])
        self.metadata: dict[str, Any] = info.get("metadata", {})
        self._episodes: dict[str, list[Episode]] | None = None  # loaded lazily, then kept up to date
        self._count: int | None = None
        self._records: list[tuple[int, str, Episode, dict[str, str]]] | None = None  # index, split, ...
        self._writer = None
        self._lock: WriterLock | None = None
        self._digests: dict[str, int] | None = None  # content sha256 -> index, built by the writer
        self._keys: dict[tuple[str, int, int], int] | None = None  # (job, seed, number) -> index
        self._jobs: dict[tuple[str, int], list[int]] | None = None  # (job, seed) -> [steps, next number]
        self._last_fsync = 0.0

    # --- creating ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: str | Path,
        env_id: str,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        validation_fraction: float = 0.1,
        exist_ok: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> EpisodeStore:
        """Create an empty store; with ``exist_ok``, open a matching existing one instead.

        The store returned is the directory's one writer: it holds the writer lock until
        :meth:`close` (a second writer, in this process or another, gets ``ConcurrentWriterError``).
        A directory that already holds other files, or a store of another env or other spaces, is
        refused: nothing in it is touched.
        """
        directory = Path(directory)
        check_observation_space(observation_space)
        check_action_space(action_space)
        if not 0.0 <= validation_fraction < 1.0:
            raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        # refusals come before the lock: a folder that is not ours, or a store we may not open, is untouched
        if is_store(directory):
            cls._check_openable(directory, env_id, observation_space, action_space, exist_ok)
        else:
            cls._refuse_foreign(directory)
        lock = WriterLock(directory, f"a writer of the episode store of {env_id}").acquire()
        try:
            if not is_store(directory) and any(
                (directory / name).exists() for name in (f".{STORE_FILE}.pending", _JOURNAL)
            ):
                recover_interrupted_write(directory, [STORE_FILE])  # a create killed mid-write
            if is_store(directory):
                store = cls._check_openable(directory, env_id, observation_space, action_space, exist_ok)
            else:
                cls._refuse_foreign(directory)
                info = {
                    "format_version": STORE_FORMAT_VERSION,
                    "env_id": env_id,
                    "observation_space": space_to_json(observation_space),
                    "action_space": space_to_json(action_space),
                    "validation_fraction": validation_fraction,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "metadata": metadata or {},
                }
                # store.json is the store's first and only file until the first episode: a create
                # that is killed leaves either nothing or a complete, empty store
                atomic_write_files(directory, {STORE_FILE: to_json_bytes(info)})
                store = cls(directory)
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def _check_openable(
        cls, directory: Path, env_id: str, observation_space, action_space, exist_ok: bool
    ) -> EpisodeStore:
        store = cls(directory)
        if not exist_ok:
            raise DataError(
                f"{directory} already holds an episode store ({store.env_id}); open it with "
                "EpisodeStore(directory) or choose another directory"
            )
        store.check_compatible(env_id, observation_space, action_space)
        return store

    @staticmethod
    def _refuse_foreign(directory: Path) -> None:
        if directory.exists() and not directory.is_dir():
            raise DataError(f"{directory} is a file; give a directory for the episode store")
        if directory.is_dir() and any(not _our_leftovers(p.name) for p in directory.iterdir()):
            raise DataError(
                f"{directory} is not empty and is not an episode store; choose a new or empty directory "
                "(existing files are never overwritten)"
            )

    def check_compatible(
        self, env_id: str | None, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        """Raise ``SpaceError`` unless this store holds data for these spaces (and this env id)."""
        if env_id is not None and env_id != self.env_id:
            raise SpaceError(
                f"{self.directory} holds episodes of {self.env_id!r}, not {env_id!r}; "
                "use another directory for another env"
            )
        for what, mine, theirs in (
            ("observation", self.observation_space, observation_space),
            ("action", self.action_space, action_space),
        ):
            if mine != theirs:
                raise SpaceError(
                    f"the {what} space of {self.directory} ({mine}) does not match {theirs}; "
                    "the data was collected from a different env or with different wrappers"
                )

    # --- writing ----------------------------------------------------------------------------
    def lock(self) -> EpisodeStore:
        """Become the store's one writer now (appending does it anyway): take the writer lock, or
        raise ``ConcurrentWriterError`` naming the process that holds it. Released by :meth:`close`."""
        if self._lock is None:
            lock = WriterLock(self.directory, f"a writer of the episode store of {self.env_id}")
            self._lock = lock.acquire()
        return self

    def _index(self) -> None:
        """What the writer checks appends against: content hashes, keys and per-job progress."""
        if self._digests is not None:
            return
        self._load()
        digests: dict[str, int] = {}
        keys: dict[tuple[str, int, int], int] = {}
        jobs: dict[tuple[str, int], list[int]] = {}
        for index, _, episode, meta in self._records:
            digest = meta.get("content_sha256") or content_digest(_stored_arrays(episode))  # older records
            digests.setdefault(digest, index)
            if "job" in meta:
                key = (meta["job"], int(meta["job_seed"]), int(meta["job_episode"]))
                keys.setdefault(key, index)
                progress = jobs.setdefault(key[:2], [0, 0])
                progress[0] += len(episode)
                progress[1] = max(progress[1], key[2] + 1)
        self._digests, self._keys, self._jobs = digests, keys, jobs

    def job_progress(self, job: str, seed: int) -> tuple[int, int]:
        """``(steps, next number)``: the steps the store holds of collection ``job`` started with
        ``seed``, and the number its next episode gets (one past the highest stored)."""
        self._index()
        steps, number = self._jobs.get((job, int(seed)), (0, 0))
        return steps, number

    def _open_writer(self) -> None:
        self.lock()
        self._index()
        shard_dir = self.directory / SHARD_DIR
        shard_dir.mkdir(exist_ok=True)
        numbers = [int(p.stem) for p in shard_dir.glob(f"*{SHARD_SUFFIX}") if p.stem.isdigit()]
        # A fresh shard per session: never append after a tail a crash may have cut short.
        path = shard_dir / f"{max(numbers, default=-1) + 1:08d}{SHARD_SUFFIX}"
        self._writer = open(path, "xb")  # noqa: SIM115  (kept open across appends, closed by close())
        self._count = self.num_episodes()

    def _validate(self, episode: Episode) -> None:
        obs_shape = tuple(self.observation_space.shape)
        action_shape = stored_action_shape(self.action_space)
        if tuple(episode.obs.shape[1:]) != obs_shape:
            raise SpaceError(
                f"episode observations have shape {tuple(episode.obs.shape[1:])}, the store's observation "
                f"space {self.observation_space} wants {obs_shape}"
            )
        if len(episode) and tuple(episode.action.shape[1:]) != action_shape:
            raise SpaceError(
                f"episode actions have shape {tuple(episode.action.shape[1:])}, the store's action space "
                f"{self.action_space} wants {action_shape}"
            )

    def append(self, episode: Episode, key: EpisodeKey | None = None) -> str:
        """Write one episode to disk now; returns the split it was assigned to.

        ``key`` records which collection it comes from (see :class:`EpisodeKey`). An episode the
        store already holds, bit for bit or by its key, is refused with ``DuplicateEpisodeError``
        (nothing is written).
        """
        self._validate(episode)
        if len(episode) == 0:
            raise DataError("cannot store an episode without steps")
        if self._writer is None:
            self._open_writer()
        arrays = _stored_arrays(episode, self.action_space)
        digest = content_digest(arrays)
        if digest in self._digests:
            raise DuplicateEpisodeError(
                f"{self.directory} already holds this episode (stored as episode {self._digests[digest]}); "
                "an episode is stored once"
            )
        if key is not None and (key.job, key.seed, key.number) in self._keys:
            raise DuplicateEpisodeError(
                f"{self.directory} already holds episode {key.number} of the collection {key.job!r} with "
                f"seed {key.seed} (stored as episode {self._keys[(key.job, key.seed, key.number)]})"
            )
        index = self._count
        split = "validation" if is_validation_episode(index, self.validation_fraction) else "train"
        meta = {"split": split, "index": str(index), "content_sha256": digest}
        if key is not None:
            meta.update(job=key.job, job_seed=str(int(key.seed)), job_episode=str(int(key.number)))
        payload = save_safetensors_bytes(arrays, metadata=meta)
        self._writer.write(_HEADER.pack(len(payload), hashlib.sha256(payload).digest()) + payload)
        self._writer.flush()  # in the OS now: survives the process being killed
        if time.monotonic() - self._last_fsync > _FSYNC_INTERVAL_S:
            os.fsync(self._writer.fileno())
            self._last_fsync = time.monotonic()
        self._count = index + 1
        self._digests[digest] = index
        if key is not None:
            self._keys[(key.job, key.seed, key.number)] = index
            progress = self._jobs.setdefault((key.job, key.seed), [0, 0])
            progress[0] += len(episode)
            progress[1] = max(progress[1], key.number + 1)
        if self._episodes is not None:
            self._episodes[split].append(episode)
        self._records.append((index, split, episode, meta))
        return split

    def extend(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            self.append(episode)

    def close(self) -> None:
        """Flush to disk and release the writer lock (reading stays possible)."""
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down os/open
            self.close()

    # --- reading ----------------------------------------------------------------------------
    def _load(self) -> dict[str, list[Episode]]:
        if self._episodes is not None:
            return self._episodes
        records: list[tuple[int, str, Episode, dict[str, str]]] = []
        for path in sorted((self.directory / SHARD_DIR).glob(f"*{SHARD_SUFFIX}")):
            payloads, dropped = _read_records(path)
            if dropped:
                warnings.warn(
                    f"{path}: skipped {dropped} trailing bytes: an episode being written now, or whose "
                    "writing was interrupted; every complete episode is intact",
                    stacklevel=3,
                )
            for payload in payloads:
                try:
                    arrays = load_safetensors_bytes(payload)
                    meta = json.loads(payload[8 : 8 + struct.unpack("<Q", payload[:8])[0]].decode()).get(
                        "__metadata__", {}
                    )
                    episode = Episode(**{name: arrays[name] for name in _ARRAYS})
                except (SafetensorError, ValueError, KeyError) as err:
                    raise DataError(f"{path} holds an unreadable episode record: {err}") from err
                records.append((int(meta.get("index", 0)), meta.get("split", "train"), episode, meta))
        records.sort(key=lambda record: record[0])
        self._records = records
        self._episodes = {split: [r[2] for r in records if r[1] == split] for split in SPLITS}
        return self._episodes

    def episodes(self, split: str = "train") -> list[Episode]:
        """The stored episodes of ``split`` ("train", "validation" or "all"), in order of appending."""
        if split == "all":
            return self._load()["train"] + self._load()["validation"]
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {SPLITS + ('all',)}")
        return list(self._load()[split])

    def num_episodes(self, split: str = "all") -> int:
        return len(self.episodes(split))

    def num_steps(self, split: str = "all") -> int:
        return sum(len(e) for e in self.episodes(split))

    def buffer(
        self,
        split: str = "train",
        device: str | torch.device = "cpu",
        *,
        recent_from: int = 0,
        recent_share: float = 0.0,
    ) -> EpisodeBuffer:
        """An :class:`EpisodeBuffer` over ``split``, to sample transitions, windows and real starts;
        ``recent_share`` of each sample from the split's steps after its first ``recent_from``."""
        episodes = self.episodes(split)
        if not episodes:
            total = self.num_episodes("all")
            fix = (
                f"collect more episodes (only {total} stored; every {1 / self.validation_fraction:.0f}th "
                "is held out for validation)"
                if split == "validation" and self.validation_fraction > 0
                else f"collect with `worldflux-gym collect {self.env_id} --steps N --out {self.directory}`"
            )
            raise DataError(f"the {split!r} split of {self.directory} has no episodes; {fix}")
        return EpisodeBuffer(episodes, device=device, recent_from=recent_from, recent_share=recent_share)

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.directory)!r}, env_id={self.env_id!r})"


def split_buffer(
    data: EpisodeBuffer | EpisodeStore | str | Path, split: str = "train", device: str | torch.device = "cpu"
) -> EpisodeBuffer:
    """What a fit reads (``split="train"``) or judges itself on (``"validation"``): a buffer as it
    is, or that split of a store (or of the store in a directory) on ``device``."""
    if isinstance(data, (str, Path)):
        data = EpisodeStore(data)
    return data.buffer(split, device) if isinstance(data, EpisodeStore) else data
