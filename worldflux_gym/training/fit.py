"""``fit_world_model``: real env -> episodes on disk -> fitted model in a run directory, in one call."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import ConfigError, SpaceError, TrainingError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.registry import build_config, create_world_model, parse_name
from worldflux_gym.data.collect import collect_to_store
from worldflux_gym.data.policy import Policy
from worldflux_gym.data.store import EpisodeStore, is_store
from worldflux_gym.training.run_dir import RunDirectory
from worldflux_gym.training.trainer import Trainer, TrainerConfig, seed_torch


def _check_resumable(run: RunDirectory, env_id: str, model_name: str, writer: bool = True) -> None:
    """Refuse before collecting anything when ``run_dir`` holds a run of another model or env.

    ``writer=False`` only reads what is there (before taking the writer lock): the full check, which
    may finish a checkpoint write that a kill interrupted, is the writer's alone.
    """
    if writer:
        if not run.inspect():
            return
    elif not run.config_file.is_file() or not run.state_json.is_file():
        return
    family, preset = parse_name(model_name)
    try:
        saved = run.saved_config()
        saved_env = json.loads(run.state_json.read_text()).get("data", {}).get("env_id")
    except (OSError, ValueError, AttributeError):
        if writer:
            raise
        return  # being written now, or damaged: the writer's check will say
    if (saved.get("family"), saved.get("preset")) != (family, preset) or saved_env not in (None, env_id):
        raise TrainingError(
            f"{run.path} already holds the model {saved.get('family')}:{saved.get('preset')} fitted on "
            f"{saved_env}; choose a new directory for {family}:{preset} on {env_id} (nothing is overwritten)"
        )


def _open_store(data_dir: str | Path, env_id: str) -> EpisodeStore:
    store = EpisodeStore(data_dir)
    if store.env_id != env_id:
        raise SpaceError(
            f"{data_dir} holds episodes of {store.env_id!r}, not {env_id!r}; "
            "pass data collected from the env you fit"
        )
    return store


def fit_world_model(
    env_id: str,
    model_name: str,
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    steps: int = 2000,
    collect_steps: int = 10_000,
    seed: int = 0,
    device: str = "auto",
    trainer: TrainerConfig | dict[str, Any] | None = None,
    policy: Policy | str | Path | None = None,
    num_envs: int = 1,
    image_size: int | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
    **overrides: Any,
) -> WorldModel:
    """Fit ``model_name`` ("family:preset") on ``env_id`` and save it in ``run_dir``; returns the model.

    With ``data_dir=None`` the data is collected into ``run_dir/data`` first (``collect_steps`` env
    steps with ``policy``, random by default); a collection that was interrupted is completed, not
    redone. A ``run_dir`` that holds this run already is resumed up to ``steps`` updates. ``trainer``
    holds :class:`TrainerConfig` fields; ``overrides`` are model config fields.

    ``seed`` seeds everything: the collection, the initial weights and the updates, so the same
    seed on the same data gives the same weights (on CPU; CUDA kernels may differ in the last bits).
    ``init_from``: a fitted run or checkpoint of ``model_name`` to start from (a fine-tune): its
    weights, its normalisation (not refitted) and its config, with ``overrides`` on top (e.g. another
    ``sequence_length``). The run holds ``run_dir``'s writer lock throughout: a second writer is
    refused at once.
    """
    run = RunDirectory(run_dir)
    build_config(*parse_name(model_name), overrides)  # a typo fails now, not after collecting
    if isinstance(trainer, dict):
        trainer = TrainerConfig.from_dict(trainer)
    # what can be refused by looking is refused before anything is written
    _check_resumable(run, env_id, model_name, writer=False)
    if data_dir is not None:
        _open_store(data_dir, env_id)
    with run.lock(f"a fit of {model_name} on {env_id}"):
        _check_resumable(run, env_id, model_name)
        if data_dir is None:
            data_dir = run.data_dir
            have = EpisodeStore(data_dir).num_steps() if is_store(data_dir) else 0
            if have < collect_steps:  # collect_steps is the total: a rerun finishes the collection
                collect_to_store(
                    env_id,
                    collect_steps,
                    data_dir,
                    policy=policy,
                    seed=seed,
                    num_envs=num_envs,
                    image_size=image_size,
                    progress=progress,
                )
        store = _open_store(data_dir, env_id)
        resolved = resolve_device(device)
        # the initial weights come from the seed; the caller's own torch RNG is left as it was
        with torch.random.fork_rng(devices=[resolved] if resolved.type == "cuda" else []):
            seed_torch(seed)
            if init_from is None:
                model = create_world_model(
                    model_name, store.observation_space, store.action_space, device=resolved, **overrides
                )
            else:
                model = _warm_start(model_name, init_from, store, resolved, overrides)
        base = trainer or TrainerConfig()
        config = dataclasses.replace(base, steps=steps, seed=seed, progress=base.progress and progress)
        if init_from is not None:  # the weights were fitted under their own normalisation: keep it
            config = dataclasses.replace(config, adapt_samples=0)
        Trainer(model, store, config, run.path).fit()
    return model


def _warm_start(
    model_name: str,
    init_from: str | Path,
    store: EpisodeStore,
    device: torch.device,
    overrides: dict[str, Any],
) -> WorldModel:
    """A new ``model_name`` with the weights and normalisation of the fitted model at ``init_from``."""
    source = from_pretrained(init_from, device=device)
    if (source.family, source.preset) != parse_name(model_name):
        raise ConfigError(
            f"init_from={init_from} holds {source.family}:{source.preset}, not {model_name}; "
            "start from a model of the same family and preset"
        )
    store.check_compatible(None, source.observation_space, source.action_space)
    config = {**dataclasses.asdict(source.config), **overrides}
    model = create_world_model(
        model_name, source.observation_space, source.action_space, device=device, **config
    )
    model.load_state_dict(source.state_dict())
    return model
