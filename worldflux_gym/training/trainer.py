"""Fitting any registered world-model family through its ``loss(batch)``.

One loop for every family: sample a batch of the kind the model asks for (``model.batch_type``:
single transitions, or windows of ``model.sequence_length`` steps), take an AdamW step on
``model.loss(batch).loss`` with gradient clipping, validate on held-out episodes every so often
with ``model.validate``, and checkpoint. The run directory (:class:`~worldflux_gym.training.run_dir.
RunDirectory`: model, trainer state, metrics, TensorBoard logs) is a loadable model at every moment.

Model and trainer state are committed together by one atomic multi-file write, so a killed run
resumes from its last checkpoint with nothing mixed. Resuming is exact: batch ``k`` is drawn from a
generator seeded by ``(seed, rank, k)``, validation runs on forked RNG streams, and the torch RNG
state is saved, so ``N`` steps in one go and ``N/2`` + ``N/2`` resumed give the same weights.

Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel (gloo on
CPU, NCCL on CUDA); every rank samples its own batches and rank 0 alone writes to ``run_dir``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from worldflux_gym.core.batch import SequenceBatch, TransitionBatch
from worldflux_gym.core.checkpoint import atomic_write_files, from_pretrained, to_json_bytes
from worldflux_gym.core.errors import ConfigError, DataError, SpaceError, TrainingError
from worldflux_gym.core.lock import WriterLock
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import check_float, check_int
from worldflux_gym.data.buffer import EpisodeBuffer, check_recent_steps
from worldflux_gym.data.store import EpisodeStore
from worldflux_gym.training.run_dir import STATE_JSON, STATE_TENSORS, RunDirectory

# What TrainerConfig falls back to where neither it nor the model's config sets a value.
FALLBACK_BATCH_SIZE = 256  # transitions
FALLBACK_WINDOWS = 16  # windows of model.sequence_length steps, for families that train on sequences
FALLBACK_LEARNING_RATE = 1e-3
FALLBACK_GRAD_CLIP = 100.0
_VALIDATION_STREAM = 1_000_003  # seeds the fixed validation batches, apart from the training batches


@dataclass
class TrainerConfig:
    """How to fit. ``None`` fields take the model config's field of the same name when it has one.

    ``steps`` is the total number of updates of the run (a resumed run goes on up to it).
    """

    steps: int = 1000
    batch_size: int | None = None  # model.config.batch_size, else FALLBACK_BATCH_SIZE / _WINDOWS
    learning_rate: float | None = None  # model.config.learning_rate, else FALLBACK_LEARNING_RATE
    weight_decay: float = 1e-4
    grad_clip: float | None = None  # max global grad norm: model.config.grad_clip, else FALLBACK_GRAD_CLIP
    validate_every: int = 500
    validation_batches: int = 4
    checkpoint_every: int = 1000
    log_every: int = 50
    # transitions handed to model.adapt_to_data before the first step; 0 keeps the model's own
    # normalisation (a fine-tune of fitted weights)
    adapt_samples: int = 100_000
    # a share of each training batch from the train steps after the first `recent_from` (data
    # appended later, e.g. a Dyna agent's own): see EpisodeBuffer
    recent_share: float = 0.0
    recent_from: int = 0
    seed: int = 0  # the batches, and torch's RNG from the first update (a fresh run reseeds it)
    mixed_precision: bool | None = None  # bf16 autocast; None: on for CUDA, off on CPU
    progress: bool = True
    tensorboard: bool = True

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TrainerConfig:
        """Trainer settings from a mapping (a spec's, say); an unknown name is refused."""
        valid = {f.name for f in dataclasses.fields(cls)}
        if set(settings) - valid:
            raise ConfigError(
                f"unknown trainer setting(s) {sorted(set(settings) - valid)}; valid: {sorted(valid)}"
            )
        return cls(**settings)

    def resolved(self, model: WorldModel) -> TrainerConfig:
        """A copy with every ``None`` filled in from ``model`` and the defaults, values checked."""

        def from_model(name: str, default: Any) -> Any:
            value = getattr(self, name)
            return value if value is not None else getattr(model.config, name, default)

        sequences = model.batch_type is SequenceBatch
        out = dataclasses.replace(
            self,
            batch_size=int(from_model("batch_size", FALLBACK_WINDOWS if sequences else FALLBACK_BATCH_SIZE)),
            learning_rate=float(from_model("learning_rate", FALLBACK_LEARNING_RATE)),
            grad_clip=float(from_model("grad_clip", FALLBACK_GRAD_CLIP)),
            mixed_precision=(
                model.device.type == "cuda" if self.mixed_precision is None else self.mixed_precision
            ),
        )
        for name in ("steps", "batch_size", "validate_every", "checkpoint_every", "log_every"):
            if getattr(out, name) <= 0:
                raise ConfigError(f"TrainerConfig.{name} must be positive, got {getattr(out, name)}")
        check_float(out.recent_share, "TrainerConfig.recent_share", minimum=0.0, maximum=1.0)
        check_int(out.recent_from, "TrainerConfig.recent_from", minimum=0)
        check_int(out.adapt_samples, "TrainerConfig.adapt_samples", minimum=0)
        for name in ("learning_rate", "grad_clip"):  # `not 0 < x < inf` also refuses NaN
            value = getattr(out, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"TrainerConfig.{name} must be a finite number > 0, got {value}")
        return out


class _LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``: DistributedDataParallel synchronises through forward."""

    def __init__(self, model: WorldModel):
        super().__init__()
        self.model = model

    def forward(self, batch: TransitionBatch | SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.model.loss(batch)
        return out.loss, out.components


def seed_torch(seed: int, rank: int = 0) -> None:
    """Seed torch's global RNG (CPU and CUDA) from ``(seed, rank)``: the one place a fit's seed
    reaches torch, for the initial weights and for the randomness of the updates."""
    torch.manual_seed(int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0]))


def _distributed() -> tuple[int, int]:
    """(rank, world size), starting the process group under ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Fits ``model`` on real episodes. ``data`` is an :class:`EpisodeStore` (train/validation splits
    by episode), or a ``(train, validation)`` pair of :class:`EpisodeBuffer` (validation may be
    ``None``).

    >>> trainer = Trainer(model, EpisodeStore("data/pendulum"), TrainerConfig(steps=2000), "runs/p")
    >>> metrics = trainer.fit()  # {"step": 2000.0, "train/loss": ..., "val/loss": ..., "updates_per_s": ...}
    """

    def __init__(
        self,
        model: WorldModel,
        data: EpisodeStore | tuple[EpisodeBuffer, EpisodeBuffer | None],
        config: TrainerConfig | None = None,
        run_dir: str | Path = "runs/world-model",
    ):
        self.model = model
        self.config = (config or TrainerConfig()).resolved(model)
        self.run = RunDirectory(run_dir)
        self.run_dir = self.run.path
        self.rank, self.world_size = _distributed()
        self.device = model.device
        self.train_data, self.validation_data, self.data_info = self._open_data(data)
        # rank 0 alone writes run_dir: its one writer from here (when it exists: looking at it may
        # finish an interrupted checkpoint write) or from fit() on (a new one is created there)
        self._lock: WriterLock | None = None
        if self.rank == 0 and self.run_dir.exists():
            self._lock = self.run.lock(self._what())
        try:
            self.resuming = self.run.inspect(model)
        except BaseException:
            self.close()
            raise
        if self.world_size > 1:
            dist.barrier()  # every rank has looked at run_dir before rank 0 writes to it
        # foreach: one fused pass over all parameters instead of a Python loop (also on CPU, ~25% here)
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            foreach=True,
        )
        self.step = 0
        self.last_checkpoint_step: int | None = None
        self._loss_module: nn.Module | None = None  # model.loss as a module (DDP-wrapped under torchrun)

    def _what(self) -> str:
        return f"a fit of {self.model.family}:{self.model.preset}"

    def close(self) -> None:
        """Release the run directory's writer lock (``fit`` does it when it ends)."""
        if self._lock is not None:
            self._lock.release()

    # --- data -------------------------------------------------------------------------------
    def _open_data(self, data) -> tuple[EpisodeBuffer, EpisodeBuffer | None, dict[str, Any]]:
        if isinstance(data, EpisodeStore):
            data.check_compatible(None, self.model.observation_space, self.model.action_space)
            if data.num_episodes("train") == 0:
                raise DataError(
                    f"{data.directory} has no training episodes; collect some with "
                    f"`worldflux-gym collect {data.env_id} --steps N --out {data.directory}`"
                )
            train = data.buffer(
                "train",
                self.device,
                recent_from=self.config.recent_from,
                recent_share=self.config.recent_share,
            )
            check_recent_steps(
                self.config.recent_from,
                self.config.recent_share,
                train.num_steps,
                "TrainerConfig",
                data.directory,
            )
            validation = data.buffer("validation", self.device) if data.num_episodes("validation") else None
            info = {"env_id": data.env_id, "store": str(data.directory)}
        else:
            train, validation = data
            if self.config.recent_share:
                raise ConfigError(
                    "TrainerConfig.recent_share applies to a store; for a pair of buffers, build the "
                    "train buffer with EpisodeBuffer(..., recent_from=..., recent_share=...) instead"
                )
            info = {"env_id": None, "store": None}
        if validation is None and self.rank == 0:
            warnings.warn(
                "no validation episodes: the run is not validated on held-out data "
                "(collect more episodes, or use a store with a validation fraction > 0)",
                stacklevel=3,
            )
        obs_shape = tuple(self.model.observation_space.shape)
        if tuple(train.obs.shape[1:]) != obs_shape:
            raise SpaceError(
                f"the data's observations have shape {tuple(train.obs.shape[1:])}, the model's observation "
                f"space wants {obs_shape}; fit on data from the env the model was built for"
            )
        info.update(train_steps=train.num_steps, train_episodes=len(train.episodes))
        return train, validation, info

    def _sample(
        self, buffer: EpisodeBuffer, rng: np.random.Generator, size: int | None = None
    ) -> TransitionBatch | SequenceBatch:
        return sample_for(self.model, buffer, size or self.config.batch_size, rng)

    # --- checkpoints --------------------------------------------------------------------------
    def _trainer_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors, param_groups = optimizer_state(self.optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        info = {
            "step": self.step,
            "trainer_config": dataclasses.asdict(self.config),
            "optimizer_param_groups": param_groups,
            "data": self.data_info,
            "world_size": self.world_size,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return info, tensors

    def save_checkpoint(self) -> None:
        """Commit model and trainer state together (rank 0 only)."""
        self.last_checkpoint_step = self.step
        if self.rank != 0:
            return
        info, tensors = self._trainer_state()
        state = {STATE_JSON: to_json_bytes(info), STATE_TENSORS: save_safetensors_bytes(tensors)}
        devices = [self.device] if self.device.type == "cuda" else []
        # save_pretrained runs the model once (its I/O fingerprint): keep that off the training RNG
        with torch.random.fork_rng(devices=devices):
            self.model.save_pretrained(self.run_dir, extra_files=state)

    def _load_checkpoint(self) -> None:
        saved = from_pretrained(self.run_dir, device=self.device)  # verifies checksum and contract
        self.model.load_state_dict(saved.state_dict())
        info = json.loads(self.run.state_json.read_text())
        tensors = load_safetensors_bytes(self.run.state_tensors.read_bytes())
        restore_optimizer(self.optimizer, tensors, info["optimizer_param_groups"], self.device)
        if self.world_size == 1:
            torch.set_rng_state(tensors["rng.torch"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        else:  # one saved state cannot serve every rank: each reseeds from (seed, rank, step)
            torch.manual_seed(hash((self.config.seed, self.rank, info["step"])) % 2**63)
        self.step = self.last_checkpoint_step = int(info["step"])
        # More data in the same store is the normal case (a Dyna loop refits as it collects); data
        # from elsewhere, or less of it, is probably a mistake worth a word.
        saved = info.get("data", {})
        elsewhere = saved.get("store") != self.data_info["store"]
        shrunk = (saved.get("train_steps") or 0) > self.data_info["train_steps"]
        if (elsewhere or shrunk) and self.rank == 0:
            warnings.warn(
                f"resuming {self.run_dir} on other data than it was fitted on so far ({saved.get('store')}, "
                f"{saved.get('train_steps')} training steps -> {self.data_info['store']}, "
                f"{self.data_info['train_steps']}); the run goes on from its checkpoint",
                stacklevel=3,
            )

    # --- metrics ----------------------------------------------------------------------------
    def _open_logs(self):
        if self.rank != 0:
            return None, None
        path = self.run.metrics_file
        if self.resuming and path.exists():
            # drop rows written after the checkpoint we resume from: those updates are redone
            with open(path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= self.step]
            buffer = [",".join(("step", "metric", "value", "time"))]
            buffer += [",".join((r["step"], r["metric"], r["value"], r["time"])) for r in rows]
            atomic_write_files(self.run_dir, {path.name: ("\n".join(buffer) + "\n").encode()})
        new = not path.exists()
        handle = open(path, "a", newline="")  # noqa: SIM115  (closed at the end of fit)
        writer = csv.writer(handle)
        if new:
            writer.writerow(("step", "metric", "value", "time"))
        tensorboard = None
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tensorboard = SummaryWriter(
                    str(self.run.tensorboard_dir), purge_step=self.step if self.resuming else None
                )
            except ImportError:  # tensorboard is an optional extra: CSV alone then
                tensorboard = None
        return (handle, writer), tensorboard

    def _log(self, logs, tensorboard, metrics: dict[str, float]) -> None:
        if logs is None:
            return
        handle, writer = logs
        now = f"{time.time():.3f}"
        for name, value in metrics.items():
            writer.writerow((self.step, name, f"{value:.6g}", now))
            if tensorboard is not None:
                tensorboard.add_scalar(name, value, self.step)
        handle.flush()

    # --- the loop ----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """``model.validate`` on one fixed held-out batch of ``validation_batches x batch_size``,
        named ``val/<metric>``.

        One batch rather than several, because a family may choose state from it (the ensemble
        picks its elites): each call would otherwise overwrite the previous call's choice. The same
        batch every time, on forked RNG streams: validating never changes training.
        """
        if self.validation_data is None:
            return {}
        rng = np.random.default_rng([self.config.seed, _VALIDATION_STREAM])
        totals: dict[str, float] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast():
            size = self.config.batch_size * self.config.validation_batches
            for name, value in self.model.validate(self._sample(self.validation_data, rng, size)).items():
                totals[name] = float(value)
        self.model.train(was_training)
        return {f"val/{name}": value for name, value in totals.items()}

    def _autocast(self):
        if self.config.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def adapt(self) -> None:
        """``model.adapt_to_data`` once, on a large sample shared by every rank (not at all with
        ``adapt_samples`` 0)."""
        if self.config.adapt_samples == 0:
            return
        buffer = self.train_data
        if buffer.num_steps <= self.config.adapt_samples:
            sample = buffer.all_transitions()
        else:
            rng = np.random.default_rng([self.config.seed, 0, 2**32 - 1])
            sample = buffer.transitions(
                rng.choice(buffer.num_steps, self.config.adapt_samples, replace=False)
            )
        self.model.adapt_to_data(sample)

    def _non_finite(self, what: str, value: float) -> TrainingError:
        kept = (
            f"the last good checkpoint (step {self.last_checkpoint_step}) is kept in {self.run_dir}"
            if self.last_checkpoint_step is not None
            else "no checkpoint had been written yet"
        )
        return TrainingError(
            f"the {what} became {value} at step {self.step + 1}; training stopped and {kept}. "
            "Lower the learning rate (TrainerConfig.learning_rate), tighten grad_clip, or check the data "
            "for non-finite values."
        )

    def sample_batch(self) -> TransitionBatch | SequenceBatch:
        """The training batch for the next update, drawn from a generator seeded by (seed, rank, step)."""
        rng = np.random.default_rng([self.config.seed, self.rank, self.step])
        return self._sample(self.train_data, rng)

    def update(self, batch: TransitionBatch | SequenceBatch) -> dict[str, float]:
        """One AdamW step on ``model.loss(batch)``, gradients clipped; returns the loss and its parts.

        A non-finite loss or gradient raises :class:`TrainingError` before the weights change.
        """
        if self._loss_module is None:
            self._loss_module = _LossModule(self.model)
            if self.world_size > 1:
                from torch.nn.parallel import DistributedDataParallel

                self._loss_module = DistributedDataParallel(self._loss_module)
        with self._autocast():
            loss, components = self._loss_module(batch)
        finite = torch.isfinite(loss.detach().float())
        if self.world_size > 1:  # every rank stops together, or none does
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            raise self._non_finite("loss", float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip))
        if not math.isfinite(grad_norm):  # gradients are all-reduced: every rank sees the same norm
            raise self._non_finite("gradient norm", grad_norm)
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "grad_norm": grad_norm, **components}

    def fit(self) -> dict[str, float]:
        """Train up to ``config.steps`` updates (resuming from ``run_dir``); returns the final metrics."""
        if self.rank == 0 and (self._lock is None or not self._lock.held):
            # not held since __init__ (a new run_dir, or fit() once more): take it and look again
            self._lock = self.run.lock(self._what())
            try:
                self.resuming = self.run.inspect(self.model)
            except BaseException:
                self.close()
                raise
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict[str, float]:
        cfg = self.config
        if self.resuming:
            self._load_checkpoint()
        else:
            seed_torch(cfg.seed, self.rank)  # the updates' own randomness (sampled latents, noise)
            self.adapt()
            self.save_checkpoint()  # step 0: a loadable model, and a good state to fall back on
        if self.step >= cfg.steps:  # a finished run: report on it
            return {**self.validate(), "step": float(self.step)}
        logs, tensorboard = self._open_logs()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc=f"fit {self.model.family}:{self.model.preset}",
            unit="update",
            disable=not cfg.progress or self.rank != 0,
        )
        window: dict[str, list[float]] = {}
        metrics: dict[str, float] = {}
        started, start_step = time.perf_counter(), self.step
        self.model.train()
        try:
            while self.step < cfg.steps:
                for name, value in self.update(self.sample_batch()).items():
                    window.setdefault(name, []).append(float(value))
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    metrics = {f"train/{k}": float(np.mean(v)) for k, v in window.items()}
                    window.clear()
                    self._log(logs, tensorboard, metrics)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4g}", refresh=False)
                # validation comes before the checkpoint: validate() may update saved state
                if self.step % cfg.validate_every == 0 or self.step % cfg.checkpoint_every == 0 or last:
                    validation = self.validate()
                    metrics.update(validation)
                    self._log(logs, tensorboard, validation)
                    if "val/loss" in validation:
                        bar.set_postfix(
                            loss=f"{metrics.get('train/loss', float('nan')):.4g}",
                            val=f"{validation['val/loss']:.4g}",
                            refresh=False,
                        )
                if self.step % cfg.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                bar.update(1)
        finally:
            bar.close()
            if logs is not None:
                logs[0].close()
            if tensorboard is not None:
                tensorboard.close()
        elapsed = time.perf_counter() - started
        updates = self.step - start_step
        metrics["updates_per_s"] = updates / elapsed
        samples = cfg.batch_size * (self.model.sequence_length or 1) * self.world_size
        metrics["samples_per_s"] = updates * samples / elapsed
        metrics["step"] = float(self.step)
        self.model.eval()
        return metrics


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimizer's state as safetensors-ready tensors (``optimizer.<param>.<name>``) and its
    JSON-ready parameter groups: what a resume point saves."""
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{name}": value.detach().cpu().contiguous()
        for index, values in state["state"].items()
        for name, value in values.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    param_groups: list[dict[str, Any]],
    device: torch.device,
) -> None:
    """Load what :func:`optimizer_state` saved (other keys of ``tensors`` are ignored)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    for group in param_groups:
        group["betas"] = tuple(group["betas"])  # JSON made the tuple a list
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def sample_for(
    model: WorldModel, buffer: EpisodeBuffer, size: int, rng: np.random.Generator
) -> TransitionBatch | SequenceBatch:
    """A batch of ``size`` of what ``model`` trains on: transitions, or windows of its sequence length."""
    if model.batch_type is SequenceBatch:
        # Shifted-back windows would put every termination at a window's last position, and a
        # recurrent model learns that position instead of the state that ends the episode.
        return buffer.sample_sequences(size, model.sequence_length, rng, run_past_end=True)
    return buffer.sample_transitions(size, rng)


__all__: Sequence[str] = ["Trainer", "TrainerConfig"]
