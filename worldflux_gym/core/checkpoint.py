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
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import CheckpointError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.spaces import space_from_json, space_to_json

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
_JOURNAL = ".save-journal.json"


# --- atomic multi-file writes ------------------------------------------------------------------
def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pending(directory: Path, name: str) -> Path:
    return directory / f".{name}.pending"


def interrupted_write(directory: str | Path, names: Iterable[str]) -> bool:
    """Whether a write of some of ``names`` was interrupted here (its journal or pending files are left).

    Only our own names count: a directory that merely holds someone else's ``.x.pending`` file is
    not ours to recover (recovery deletes stray pending files)."""
    directory = Path(directory)
    return (directory / _JOURNAL).exists() or any(_pending(directory, n).exists() for n in names)


def recover_interrupted_write(directory: str | Path) -> None:
    """Finish (or discard) a multi-file write that a crash interrupted. Safe to call any time."""
    directory = Path(directory)
    journal = directory / _JOURNAL
    if journal.exists():
        for name in json.loads(journal.read_text())["files"]:
            if _pending(directory, name).exists():
                os.replace(_pending(directory, name), directory / name)
        _fsync_dir(directory)
        journal.unlink()
    for stray in directory.glob(".*.pending"):
        stray.unlink()


def read_committed(directory: str | Path, name: str) -> bytes:
    """The content of ``name`` as the last committed write left it, without changing anything.

    A write that was committed (its journal written) but not yet applied, because a kill came in
    between or because the writer is applying it now, counts: its pending copy is read. Readers
    must not call :func:`recover_interrupted_write` while a writer may be running (it would delete
    the writer's pending files), so this is how they see the latest state.
    """
    directory = Path(directory)
    pending = _pending(directory, name)
    journal = directory / _JOURNAL
    try:
        if journal.exists() and name in json.loads(journal.read_text())["files"]:
            return pending.read_bytes()
    except FileNotFoundError:  # the writer applied it meanwhile
        pass
    return (directory / name).read_bytes()


def atomic_write_files(directory: str | Path, files: dict[str, bytes]) -> None:
    """Replace ``files`` (name -> content) in ``directory`` as one all-or-nothing write."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(directory)
    for name, data in files.items():
        _fsync_write(_pending(directory, name), data)
    journal_tmp = directory / f"{_JOURNAL}.tmp"
    _fsync_write(journal_tmp, json.dumps({"files": list(files)}).encode())
    os.replace(journal_tmp, directory / _JOURNAL)
    _fsync_dir(directory)
    recover_interrupted_write(directory)


def to_json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# --- world-model checkpoints ---------------------------------------------------------------------
def save_pretrained(
    model: WorldModel, directory: str | Path, extra_files: Mapping[str, bytes] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed), with ``extra_files`` (name -> content,
    e.g. a trainer's state) in the same all-or-nothing write; returns the directory."""
    from worldflux_gym import __version__

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
    metadata = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "family": model.family,
        "preset": model.preset,
        "observation_space": config["observation_space"],
        "action_space": config["action_space"],
        "contract_fingerprint": model.contract_fingerprint(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "parameters": model.num_parameters(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_files(
        directory,
        {
            CONFIG_FILE: to_json_bytes(config),
            WEIGHTS_FILE: weights,
            METADATA_FILE: to_json_bytes(metadata),
            **(extra_files or {}),
        },
    )
    return directory


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / METADATA_FILE).is_file()


def read_metadata(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not directory.is_dir():
        raise CheckpointError(
            f"no checkpoint directory at {directory}; fit one with "
            "`worldflux-gym fit ENV_ID --model FAMILY:PRESET --out DIR`"
        )
    if not path.is_file():
        raise CheckpointError(
            f"{directory} is not a world-model checkpoint: {METADATA_FILE} is missing "
            f"(a checkpoint holds {CONFIG_FILE}, {WEIGHTS_FILE} and {METADATA_FILE})"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the checkpoint is corrupted") from err


def from_pretrained(directory: str | Path, device: str | torch.device = "auto") -> WorldModel:
    """Rebuild and verify the model saved in ``directory``."""
    from worldflux_gym.core.registry import build_config, family_class

    directory = Path(directory)
    if directory.is_dir():
        recover_interrupted_write(directory)
    metadata = read_metadata(directory)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory} uses checkpoint format version {metadata.get('format_version')!r}, this library "
            f"reads version {FORMAT_VERSION}; refit the model with this version of worldflux-gym"
        )
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is missing {name}; the checkpoint is incomplete")
    config = json.loads((directory / CONFIG_FILE).read_text())
    weights = (directory / WEIGHTS_FILE).read_bytes()
    if hashlib.sha256(weights).hexdigest() != metadata["weights_sha256"]:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not match the checksum in {METADATA_FILE}: the weights are "
            "truncated or corrupted; restore them or refit"
        )
    try:
        state = load_safetensors_bytes(weights)
    except SafetensorError as err:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} is not a readable safetensors file: {err}"
        ) from err

    family, preset = config["family"], config["preset"]
    cls = family_class(family)
    saved = config["config"]
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    if set(saved) - known:
        raise CheckpointError(
            f"{directory} was saved with config fields {sorted(set(saved) - known)} that this version's "
            f"{family!r} family does not have"
        )
    model_config = cls.config_class(**{**dataclasses.asdict(build_config(family, preset)), **saved})
    model = cls(
        model_config, space_from_json(config["observation_space"]), space_from_json(config["action_space"])
    )
    model.preset = preset
    model.checkpoint_dir = directory
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"the weights in {directory} do not fit a {family}:{preset} model: {err}"
        ) from err
    model = model.to(resolve_device(device)).eval()
    if model.contract_fingerprint() != metadata["contract_fingerprint"]:
        raise CheckpointError(
            f"{directory} was saved for a different I/O contract than the rebuilt {family}:{preset} model "
            "(spaces, state or predictions changed); refit the model with this version"
        )
    return model
