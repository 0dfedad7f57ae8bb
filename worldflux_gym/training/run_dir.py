"""A run directory: what a fit (or a closed-loop fine-tune) leaves on disk, named in one place.

A run directory is a loadable model at every moment, plus what it takes to resume it::

    run_dir/
      config.json  model.safetensors  metadata.json   the model (what from_pretrained loads)
      trainer_state.json  trainer_state.safetensors   step, optimizer, RNG: resume exactly here
      metrics.csv                                     step, metric, value (tidy rows)
      tensorboard/                                    the same metrics, when tensorboard is installed
      data/                                           the episodes fit_world_model collected (if it did)
      closed_loop.json                                a closed-loop fine-tune's record (instead of the
                                                      trainer state: source run, data store, settings)
      .worldflux.lock ...                             the writer lock (one writer at a time)

:class:`RunDirectory` knows these files: the trainer, ``fit_world_model``, the closed-loop
fine-tune and the audit (which calibrates on the data a checkpoint was fitted with) read and write
them through it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from worldflux_gym.core.checkpoint import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    completed_config,
    interrupted_write,
    read_committed,
    recover_interrupted_write,
)
from worldflux_gym.core.errors import ConfigError, TrainingError
from worldflux_gym.core.lock import LOCK_FILES, WriterLock
from worldflux_gym.core.model import WorldModel

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
DATA_DIR = "data"  # where fit_world_model collects when no data directory is given
CLOSED_LOOP_JSON = "closed_loop.json"
# What a fit's run directory may hold besides a checkpoint; anything else means it belongs to someone else.
RUN_FILES = frozenset(
    {
        CONFIG_FILE,
        WEIGHTS_FILE,
        METADATA_FILE,
        STATE_JSON,
        STATE_TENSORS,
        METRICS_FILE,
        TENSORBOARD_DIR,
        DATA_DIR,
        *LOCK_FILES,
    }
)


def model_identity(model: WorldModel) -> dict[str, Any]:
    """What makes a saved model "the same model": family, preset, config and spaces, as JSON."""
    from worldflux_gym.core.spaces import space_to_json

    return json.loads(
        json.dumps(
            {
                "family": model.family,
                "preset": model.preset,
                "config": dataclasses.asdict(model.config),
                "observation_space": space_to_json(model.observation_space),
                "action_space": space_to_json(model.action_space),
            }
        )
    )


class RunDirectory:
    """The run directory at ``path`` (which may not exist yet); see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # its files (see the module docstring)
        self.config_file, self.metadata_file = self.path / CONFIG_FILE, self.path / METADATA_FILE
        self.state_json, self.state_tensors = self.path / STATE_JSON, self.path / STATE_TENSORS
        self.metrics_file, self.tensorboard_dir = self.path / METRICS_FILE, self.path / TENSORBOARD_DIR
        self.data_dir, self.closed_loop_json = self.path / DATA_DIR, self.path / CLOSED_LOOP_JSON

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # --- what they say -----------------------------------------------------------------------------
    def holds_model(self) -> bool:
        """Whether a model has been saved here (its config is written)."""
        return self.config_file.exists()

    def saved_config(self) -> dict[str, Any]:
        """``config.json``: family, preset, model config and spaces of the saved model."""
        return json.loads(self.config_file.read_text())

    def trainer_state(self) -> dict[str, Any]:
        """The JSON trainer state (step, trainer config, data) of the last committed checkpoint, also
        when a kill left its write unapplied (resuming applies it)."""
        try:
            return json.loads(read_committed(self.path, STATE_JSON))
        except FileNotFoundError:
            raise TrainingError(
                f"{self.path} holds no trainer state ({STATE_JSON}); it is not a fit run"
            ) from None

    def closed_loop_record(self) -> dict | None:
        """``closed_loop.json`` of a fine-tuned checkpoint, or None for any other."""
        path = self.closed_loop_json
        return json.loads(path.read_text()) if path.is_file() else None

    def recorded_store(self) -> Path | None:
        """The episode store this checkpoint's own record names: the one a closed-loop fine-tune was
        tuned on (``closed_loop.json``) or a fit run was fitted on (its trainer state); None for any
        other."""
        record = self.closed_loop_record()
        if record is None:
            try:
                record = self.trainer_state()
            except TrainingError:
                return None
        store = record.get("data", {}).get("store")
        return Path(store) if store else None

    # --- one writer, and only into a run -------------------------------------------------------------
    def refuse_foreign(self) -> None:
        """Refuse a path that is a file, or a folder that holds no run and files of someone else's
        (only looks: nothing is written)."""
        run_dir = self.path
        if not run_dir.exists():
            return
        if not run_dir.is_dir():
            raise TrainingError(f"{run_dir} is a file; give a directory for the run")
        if self.metadata_file.exists() or interrupted_write(run_dir, RUN_FILES):
            return  # a run, or a run's first checkpoint that a kill interrupted
        # not a run (yet): only our own names (e.g. data/ of a collection that was interrupted)
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
        if foreign:
            raise TrainingError(
                f"{run_dir} already holds files that are not a worldflux-gym run "
                f"({', '.join(foreign[:5])}); choose a new directory for --out (nothing is ever overwritten)"
            )

    def lock(self, what: str, *, reentrant: bool = True, refuse_foreign: bool = True) -> WriterLock:
        """Become the one writer of the directory (created if missing) or raise ``ConcurrentWriterError``.

        With ``refuse_foreign`` a folder that is not a run is refused first (``TrainingError``), and
        gets no lock file. A ``reentrant`` lock can be taken again by the thread that holds it:
        ``fit_world_model`` holds it while the ``Trainer`` inside takes it.
        """
        if refuse_foreign:
            self.refuse_foreign()
        return WriterLock(self.path, what, reentrant=reentrant).acquire()

    def inspect(self, model: WorldModel | None = None) -> bool:
        """Whether the directory holds a run of ``model`` to resume; raises if it holds anything else.

        ``model=None`` only checks that the directory is empty, new, or a resumable run of any model.
        A checkpoint write that a kill interrupted is finished or discarded first.
        """
        run_dir = self.path
        if not run_dir.exists():
            return False
        self.refuse_foreign()
        if self.metadata_file.exists() or interrupted_write(run_dir, RUN_FILES):
            recover_interrupted_write(run_dir, RUN_FILES)  # a write a kill interrupted: finish or discard it
        if not self.metadata_file.exists():
            self.refuse_foreign()
            return False
        if not self.state_json.exists():
            raise TrainingError(
                f"{run_dir} holds a saved model without trainer state, so there is no run to resume; "
                "fit into a new directory (nothing is ever overwritten)"
            )
        if model is None:
            return True
        saved = self.saved_config()
        if saved.get("family") == model.family and isinstance(saved.get("config"), dict):
            # a run saved before its family gained a config field is still the same model
            try:
                completed = completed_config(model.family, str(saved.get("preset")), saved["config"])
                saved["config"] = json.loads(json.dumps(completed))
            except ConfigError:  # a preset this version lacks: compared as saved, so it differs
                pass
        mine = model_identity(model)
        differences = [key for key in mine if saved.get(key) != mine[key]]
        if "config" in differences and isinstance(saved.get("config"), dict):
            theirs, ours = saved["config"], mine["config"]
            fields = [
                f"{name}: saved {theirs.get(name)!r}, now {ours.get(name)!r}"
                for name in sorted(theirs.keys() | ours.keys())
                if theirs.get(name) != ours.get(name)
            ]
            differences[differences.index("config")] = f"config ({'; '.join(fields)})"
        if differences:
            raise TrainingError(
                f"{run_dir} already holds another model ({saved.get('family')}:{saved.get('preset')}; "
                f"it differs from {model.family}:{model.preset} in {', '.join(differences)}); "
                "choose a new directory for --out, or use the same model and data to resume it"
            )
        return True


def inspect_run_dir(run_dir: str | Path, model: WorldModel | None = None) -> bool:
    """Whether ``run_dir`` holds a run of ``model`` to resume (:meth:`RunDirectory.inspect`)."""
    return RunDirectory(run_dir).inspect(model)


def trainer_state(run_dir: str | Path) -> dict[str, Any]:
    """The JSON trainer state of a run (step, trainer config, data), e.g. to report on it: that of
    the last committed checkpoint (:meth:`RunDirectory.trainer_state`)."""
    return RunDirectory(run_dir).trainer_state()
