"""The save format: ``config.json`` + ``model.safetensors`` + ``metadata.json``, written atomically.

Nothing is ever unpickled: weights are safetensors, everything else is JSON.

Atomicity across several files: new files are first written beside the old ones as
``.<name>.pending``; then a journal naming them is written (itself atomically, by rename); then each
pending file is renamed over its target and the journal removed. A save interrupted before the
journal exists leaves the previous files untouched (stray pending files are discarded); one
interrupted after it is rolled forward by the next reader. Either way a reader sees one complete
checkpoint, never a mix.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import CheckpointError, ConfigError, SpaceError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.spaces import space_from_json, space_to_json
from worldflux_gym.version import __version__

FORMAT_VERSION = 2  # 2: metadata.json holds config_sha256 too
READABLE_FORMAT_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
_JOURNAL = ".save-journal.json"


# --- atomic multi-file writes ------------------------------------------------------------------
# A checkpoint folder may come from anyone: the journal is data, never instructions. Every name in
# it must be a plain file name, and recovery only moves and removes files it names itself, inside
# the folder it was given. Only a writer recovers; readers see the committed state through
# read_committed without changing anything.
def check_file_name(name: object, where: str | Path = "") -> str:
    """``name`` if it is a plain file name (no folder part, not ``.``/``..``), else ``CheckpointError``."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or os.path.basename(name) != name
        or Path(name).is_absolute()
    ):
        raise CheckpointError(
            f"{where or 'a write'} names {name!r}, which is not a plain file name inside the folder; "
            "the folder is corrupted or was made to write elsewhere: it is refused (restore or refit it)"
        )
    return name


def _fsync_write(path: Path, data: bytes) -> None:
    # O_EXCL and O_NOFOLLOW: a pending name someone else planted (a symlink to a file of the user's)
    # is never written through
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # directories cannot be opened (or fsynced) on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pending(directory: Path, name: str) -> Path:
    return directory / f".{name}.pending"


def _journal_names(directory: Path) -> list[str] | None:
    """The names a committed write lists, validated; ``None`` when no write is committed but unapplied."""
    journal = directory / _JOURNAL
    refused = CheckpointError(f"{journal} is not a regular file; the folder is refused")
    # One open, then checks on what was opened: the writer may remove the journal at any moment
    # (checking the path first, then reading it, raced with that). O_NOFOLLOW refuses a symlink,
    # O_NONBLOCK keeps a planted FIFO from blocking the open.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(journal, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:  # a symlink
            raise refused from err
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise refused
        text = handle.read()
    try:
        files = json.loads(text)["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{journal} is not a valid save journal ({err!r}); the folder is refused"
        ) from err
    if not isinstance(files, list):
        raise CheckpointError(f"{journal}: 'files' must be a list of file names; the folder is refused")
    return [check_file_name(name, journal) for name in files]


def _regular_pending(directory: Path, name: str) -> Path | None:
    """The pending copy of ``name`` if it is a regular file (a symlink is refused), else ``None``."""
    pending = _pending(directory, name)
    if pending.is_symlink():
        raise CheckpointError(
            f"{pending} is a symbolic link, not a file this library wrote; the folder is refused"
        )
    return pending if pending.is_file() else None


def interrupted_write(directory: str | Path, names: Iterable[str]) -> bool:
    """Whether a write of some of ``names`` was interrupted here (its journal or pending files are left)."""
    directory = Path(directory)
    return (directory / _JOURNAL).exists() or any(_pending(directory, n).exists() for n in names)


def recover_interrupted_write(directory: str | Path, names: Iterable[str] = ()) -> None:
    """Finish (or discard) a multi-file write that a crash interrupted. Only for the folder's writer.

    A committed write (its journal exists) is rolled forward. Pending copies are removed only for
    the names that journal lists and for ``names`` (the writer's own): other files, including a
    user's own ``.something.pending``, are never touched. Raises ``CheckpointError`` for a journal
    that names anything but plain file names in this folder.
    """
    directory = Path(directory)
    own = [check_file_name(name) for name in names]
    committed = _journal_names(directory)
    if committed is not None:
        for name in committed:
            pending = _regular_pending(directory, name)
            if pending is not None:
                os.replace(pending, directory / name)
        _fsync_dir(directory)
        (directory / _JOURNAL).unlink()
    for name in dict.fromkeys([*(committed or []), *own]):
        pending = _pending(directory, name)
        if pending.is_symlink() or pending.is_file():
            pending.unlink()
    tmp = directory / f"{_JOURNAL}.tmp"
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()


def read_committed(directory: str | Path, name: str) -> bytes:
    """The content of ``name`` as the last committed write left it, without changing anything.

    A write that was committed (its journal written) but not yet applied, because a kill came in
    between or because the writer is applying it now, counts: its pending copy is read. Readers
    never call :func:`recover_interrupted_write` (a writer may be running), so this is how they see
    the latest state.
    """
    directory = Path(directory)
    check_file_name(name)
    try:
        committed = _journal_names(directory)
        if committed is not None and name in committed:
            pending = _regular_pending(directory, name)
            if pending is not None:
                return pending.read_bytes()
    except FileNotFoundError:  # the writer applied it meanwhile
        pass
    return (directory / name).read_bytes()


def atomic_write_files(directory: str | Path, files: dict[str, bytes]) -> None:
    """Replace ``files`` (name -> content) in ``directory`` as one all-or-nothing write.

    Only the folder's one writer may call this (it finishes an earlier interrupted write first)."""
    directory = Path(directory)
    names = [check_file_name(name) for name in files]
    directory.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(directory, names)
    for name, data in files.items():
        _fsync_write(_pending(directory, name), data)
    journal_tmp = directory / f"{_JOURNAL}.tmp"
    _fsync_write(journal_tmp, json.dumps({"files": names}).encode())
    os.replace(journal_tmp, directory / _JOURNAL)
    _fsync_dir(directory)
    recover_interrupted_write(directory, names)


def atomic_write_file(path: str | Path, data: bytes) -> None:
    """Replace the one file ``path`` all at once: written under a temporary name of this writer's own,
    then renamed. Unlike :func:`atomic_write_files`, whose journal allows one writer per folder, any
    number of writers may each replace *their own* file in one folder at the same time (agents trained
    side by side into one folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        _fsync_write(temporary, data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def to_json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# --- world-model checkpoints ---------------------------------------------------------------------
def save_pretrained(
    model: WorldModel, directory: str | Path, extra_files: Mapping[str, bytes] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed), with ``extra_files`` (name -> content,
    e.g. a trainer's state) in the same all-or-nothing write; returns the directory."""
    clashing = set(extra_files or {}) & {CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE}
    if clashing:
        raise CheckpointError(f"extra_files may not replace the model's own files {sorted(clashing)}")
    directory = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors_bytes(state)
    config = {
        "family": model.family,
        "preset": model.preset,
        "config": dataclasses.asdict(model.config),
        "observation_space": space_to_json(model.observation_space),
        "action_space": space_to_json(model.action_space),
    }
    config_bytes = to_json_bytes(config)
    metadata = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "family": model.family,
        "preset": model.preset,
        "observation_space": config["observation_space"],
        "action_space": config["action_space"],
        "contract_fingerprint": model.contract_fingerprint(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
        "parameters": model.num_parameters(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_files(
        directory,
        {
            CONFIG_FILE: config_bytes,
            WEIGHTS_FILE: weights,
            METADATA_FILE: to_json_bytes(metadata),
            **(extra_files or {}),
        },
    )
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / METADATA_FILE).is_file()


def _json_object(path: Path, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the checkpoint is corrupted: restore or refit it"
        ) from err
    if not isinstance(doc, dict):
        raise CheckpointError(
            f"{path} must hold a JSON object, not a {type(doc).__name__}; the checkpoint is corrupted: "
            "restore or refit it"
        )
    return doc


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """``doc[key]``, checked to be of ``kind``, else a ``CheckpointError`` naming the file and field."""
    if key not in doc:
        raise CheckpointError(
            f"{path} has no {key!r} field; the checkpoint is corrupted or not ours: restore or refit it"
        )
    value = doc[key]
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise CheckpointError(
            f"{path}: {key!r} must be a {names}, got {value!r}; the checkpoint is corrupted"
        )
    return value


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """``metadata.json`` of the checkpoint in ``directory`` (as last committed), checked to be an object."""
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not directory.is_dir():
        raise CheckpointError(
            f"no checkpoint directory at {directory}; fit one with "
            "`worldflux-gym fit ENV_ID --model FAMILY:PRESET --out DIR`"
        )
    try:
        data = read_committed(directory, METADATA_FILE)
    except FileNotFoundError:
        raise CheckpointError(
            f"{directory} is not a world-model checkpoint: {METADATA_FILE} is missing "
            f"(a checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE} and {METADATA_FILE})"
        ) from None
    return _json_object(path, data)


def _read_snapshot(directory: Path) -> tuple[dict[str, Any], bytes, bytes, str, str]:
    """(metadata, config bytes, weights bytes, weights sha256, config sha256) of one committed write,
    read without changing anything.

    A writer may commit a new checkpoint while we read; then the three files come from different
    writes and the checksums disagree: read again (a few times) while a write is in progress or
    ``metadata.json`` changed under us (on a loaded machine a whole write can be applied between two
    of our reads). Checksums that disagree with neither are a damaged checkpoint."""
    attempts = 5
    for attempt in range(1, attempts + 1):
        metadata = read_metadata(directory)
        try:
            config = read_committed(directory, CONFIG_FILE)
            weights = read_committed(directory, WEIGHTS_FILE)
        except FileNotFoundError as err:
            raise CheckpointError(
                f"{directory} is missing {Path(err.filename or '').name or 'a file'}; "
                "the checkpoint is incomplete"
            ) from None
        weights_digest, config_digest = (
            hashlib.sha256(weights).hexdigest(),
            hashlib.sha256(config).hexdigest(),
        )
        consistent = weights_digest == metadata.get("weights_sha256") and metadata.get("config_sha256") in (
            None,
            config_digest,
        )
        if consistent or attempt == attempts:
            break
        if read_metadata(directory) == metadata and not interrupted_write(directory, ()):
            break
        time.sleep(0.05 * attempt)
    return metadata, config, weights, weights_digest, config_digest


def _weights_shapes(path: Path, weights: bytes) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares, read from its header alone."""
    try:
        size = int.from_bytes(weights[:8], "little")
        header = json.loads(weights[8 : 8 + size])
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err!r})") from err


def completed_config(family: str, preset: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved model config with the fields it lacks filled in the way that rebuilds the saved model.

    A field a family added after the checkpoint was saved takes the config class's
    ``checkpoint_defaults`` value (e.g. no uncertainty heads), else the preset's.
    """
    from worldflux_gym.core.registry import build_config, family_class

    cls = family_class(family)
    defaults = getattr(cls.config_class, "checkpoint_defaults", {})
    return {**dataclasses.asdict(build_config(family, preset)), **defaults, **saved}


def _check_config_values(path: Path, cls: type[WorldModel], saved: dict[str, Any], numel: int) -> None:
    """Each saved config value has its field's type, and no size exceeds what the weights hold.

    A size larger than the total number of weights cannot belong to these weights: refusing it here
    keeps a corrupted or hostile config.json from allocating (or looping) before any check."""
    for f in dataclasses.fields(cls.config_class):
        if f.name not in saved:
            continue
        value, kind = saved[f.name], str(f.type)
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise CheckpointError(f"{path}: config field {f.name!r} must be an integer, got {value!r}")
            if value > max(numel, 1):
                raise CheckpointError(
                    f"{path}: config field {f.name!r} = {value} is larger than the {numel} weights the "
                    "checkpoint holds; the config does not belong to these weights: restore or refit it"
                )
        elif kind == "float":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise CheckpointError(
                    f"{path}: config field {f.name!r} must be a finite number, got {value!r}"
                )
        elif kind == "bool" and not isinstance(value, bool):
            raise CheckpointError(f"{path}: config field {f.name!r} must be true or false, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise CheckpointError(f"{path}: config field {f.name!r} must be a string, got {value!r}")


def from_pretrained(directory: str | Path, device: str | torch.device = "auto") -> WorldModel:
    """Rebuild and verify the model saved in ``directory``.

    Loading changes nothing on disk (a writer may be running), trusts no name or size in the files
    before checking it, and unpickles nothing.
    """
    from worldflux_gym.core.registry import family_class

    directory = Path(directory)
    metadata, config_bytes, weights, weights_digest, config_digest = _read_snapshot(directory)
    metadata_path, config_path, weights_path = (
        directory / n for n in (METADATA_FILE, CONFIG_FILE, WEIGHTS_FILE)
    )
    version = metadata.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{directory} uses checkpoint format version {version!r}, this library "
            f"reads versions {list(READABLE_FORMAT_VERSIONS)}; refit the model with this version of "
            "worldflux-gym"
        )
    fingerprint = _field(metadata, "contract_fingerprint", str, metadata_path)
    if weights_digest != _field(metadata, "weights_sha256", str, metadata_path):
        raise CheckpointError(
            f"{weights_path} does not match the checksum in {METADATA_FILE}: the weights are "
            "truncated or corrupted; restore them or refit"
        )
    if version >= 2 and config_digest != _field(metadata, "config_sha256", str, metadata_path):
        raise CheckpointError(
            f"{config_path} does not match the checksum in {METADATA_FILE}: the config is corrupted "
            "or was edited; restore it or refit"
        )
    config = _json_object(config_path, config_bytes)
    family = _field(config, "family", str, config_path)
    preset = _field(config, "preset", str, config_path)
    saved = _field(config, "config", dict, config_path)
    try:
        cls = family_class(family)
        observation_space = space_from_json(_field(config, "observation_space", dict, config_path))
        action_space = space_from_json(_field(config, "action_space", dict, config_path))
    except (ConfigError, SpaceError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    if set(saved) - known:
        raise CheckpointError(
            f"{directory} was saved with config fields {sorted(set(saved) - known)} that this version's "
            f"{family!r} family does not have"
        )
    shapes = _weights_shapes(weights_path, weights)
    _check_config_values(config_path, cls, saved, sum(math.prod(s) for s in shapes.values()))
    try:
        model_config = cls.config_class(**completed_config(family, preset, saved))
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    with torch.device("meta"):  # the shapes this config implies, without allocating them
        expected = {
            k: tuple(v.shape)
            for k, v in cls(model_config, observation_space, action_space).state_dict().items()
        }
    if expected != shapes:
        wrong = sorted(set(expected) ^ set(shapes)) or sorted(k for k in expected if expected[k] != shapes[k])
        raise CheckpointError(
            f"the weights in {directory} do not fit the {family}:{preset} model its {CONFIG_FILE} describes "
            f"(first difference: {wrong[0]!r}); the checkpoint is corrupted: restore or refit it"
        )
    try:
        state = load_safetensors_bytes(weights)
    except SafetensorError as err:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {err}") from err
    # Plain tensors even when the caller loads under torch.inference_mode(): inference tensors could
    # never be fine-tuned, and track no version for the caches that watch the weights.
    with torch.inference_mode(False):
        model = cls(model_config, observation_space, action_space)
        model.preset = preset
        model.checkpoint_dir = directory
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"the weights in {directory} do not fit a {family}:{preset} model: {err}"
            ) from err
        model = model.to(resolve_device(device)).eval()
    if model.contract_fingerprint() != fingerprint:
        raise CheckpointError(
            f"{directory} was saved for a different I/O contract than the rebuilt {family}:{preset} model "
            "(spaces, state or predictions changed); refit the model with this version"
        )
    return model
