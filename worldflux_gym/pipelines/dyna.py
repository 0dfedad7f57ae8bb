"""The Dyna loop: collect real data, fit the model, train the agent in the dream, collect with the
agent, refit, ... until the real-step budget is spent.

Everything lives in one output directory, and every piece is resumable on its own::

    OUT/data/           the episode store (append-only; the real-step count is read from it)
    OUT/model/          the world-model run directory (the trainer resumes it)
    OUT/agent.zip       the agent, carried over from round to round (+ agent.json)
    OUT/progress.json   one line per finished round: real steps used, real return, timings

A run that is stopped (even with ``kill -9``) continues from its last finished round when started
again with the same arguments; a round's collection that a kill interrupted is finished, not redone
(each round is its own collection job in the store). One Dyna run writes ``OUT`` at a time: a second
one is refused at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldflux_gym.agents.recipes import Recipe, load_recipe
from worldflux_gym.agents.train import agent_device, build_agent
from worldflux_gym.core.checkpoint import atomic_write_files, from_pretrained, to_json_bytes
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.lock import WriterLock
from worldflux_gym.data.collect import collect_to_store
from worldflux_gym.data.policy import Policy, as_policy, load_sb3_agent
from worldflux_gym.data.store import EpisodeStore, is_store
from worldflux_gym.dream.sb3 import DreamSB3VecEnv
from worldflux_gym.training.fit import fit_world_model

PROGRESS_FILE = "progress.json"
logger = logging.getLogger(__name__)


@dataclass
class DynaConfig:
    real_steps: int  # total real-env steps, random warm-up included
    recipe: str = "ppo_walker"  # agent recipe name or path (agents/*.json)
    initial_steps: int = 5_000  # random-action steps before the first fit
    steps_per_round: int = 5_000  # real steps the agent collects each round
    fit_steps_per_round: int = 2_000  # model updates each round
    agent_steps_per_round: int = 100_000  # dreamed agent steps each round
    starts: str = "branched"  # dream starts: "branched" (real mid-episode states) or "reset"
    dream_horizon: int = 100  # dreamed episode length (short branched rollouts, as MBPO)
    seed: int = 0
    device: str = "auto"


def _read_progress(out: Path) -> dict[str, Any]:
    path = out / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"rounds": []}


def _agent_policy(agent, model, decodes: bool) -> Policy:
    """The agent acting on real observations (encoded first when it was trained on latents), with
    sampled actions: the data of the next round should explore."""
    act = as_policy(agent, deterministic=False)

    def policy(obs: np.ndarray) -> np.ndarray:
        if not decodes:
            with torch.inference_mode():
                state = model.encode(torch.as_tensor(obs, dtype=torch.float32, device=model.device))
                obs = model.decode(state).extras["latent"].cpu().numpy()
        return act(obs)

    return policy


def _episode_counts(store: EpisodeStore) -> dict[str, int]:
    return {split: store.num_episodes(split) for split in ("train", "validation")}


def _episodes_after(store: EpisodeStore, counts: dict[str, int]):
    """Episodes appended since ``counts`` was taken (each split keeps the order of appending)."""
    return [e for split, n in counts.items() for e in store.episodes(split)[n:]]


def run_dyna(
    env_id: str, model_name: str, out: str | Path, config: DynaConfig, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) the Dyna loop in ``out``; returns the progress record (see module docstring)."""
    out = Path(out)
    with WriterLock(out, f"a Dyna run of {model_name} on {env_id}", reentrant=True):
        return _run_dyna(env_id, model_name, out, config, progress)


def _run_dyna(env_id: str, model_name: str, out: Path, config: DynaConfig, progress: bool) -> dict[str, Any]:
    record = _read_progress(out)
    saved_config = record.get("config")
    if saved_config and saved_config != {**dataclasses.asdict(config), "env_id": env_id, "model": model_name}:
        raise ConfigError(
            f"{out} holds a Dyna run with other settings ({saved_config}); resume it with the same "
            "arguments or choose a new output directory"
        )
    if config.real_steps < config.initial_steps:
        raise ConfigError(
            f"real_steps ({config.real_steps}) must cover the random warm-up ({config.initial_steps})"
        )
    recipe: Recipe = load_recipe(config.recipe)
    if recipe.normalize:
        # the agent carries on across rounds, each in a new dream: one VecNormalize cannot follow it
        raise ConfigError(
            f"Dyna trains one agent across rounds; recipe {recipe.name} has normalize, use one without"
        )
    record["config"] = {**dataclasses.asdict(config), "env_id": env_id, "model": model_name}
    data_dir, model_dir, agent_path = out / "data", out / "model", out / "agent.zip"

    have = EpisodeStore(data_dir).num_steps() if is_store(data_dir) else 0
    if have < config.initial_steps:  # the total: a warm-up a kill interrupted is finished
        collect_to_store(env_id, config.initial_steps, data_dir, seed=config.seed, progress=progress)

    agent = None
    while True:
        store = EpisodeStore(data_dir)
        used = store.num_steps()
        round_index = len(record["rounds"])
        started = time.perf_counter()

        model = fit_world_model(
            env_id,
            model_name,
            model_dir,
            data_dir=data_dir,
            steps=config.fit_steps_per_round * (round_index + 1),
            seed=config.seed,
            device=config.device,
            progress=progress,
        )
        fitted = time.perf_counter()

        model = from_pretrained(model_dir, device=config.device)
        venv = DreamSB3VecEnv(
            model,
            recipe.num_envs,
            real_env=env_id,
            starts=config.starts,
            buffer=store.buffer("train", device=model.device) if config.starts == "branched" else None,
            max_episode_steps=config.dream_horizon,
            **recipe.env_options,
        )
        venv.seed(config.seed + round_index)
        if agent is None and agent_path.is_file():
            agent = load_sb3_agent(agent_path, recipe.algorithm, agent_device(recipe), env=venv)
        elif agent is None:
            agent = build_agent(recipe, venv, seed=config.seed, tensorboard_dir=out / "agent_tb")
        else:
            agent.set_env(venv)
        agent.learn(config.agent_steps_per_round, reset_num_timesteps=False, progress_bar=progress)
        agent.save(agent_path)
        venv.close()
        trained = time.perf_counter()

        job = f"dyna-round-{round_index}"  # a collection of this round that a kill interrupted counts
        budget = config.real_steps - (used - store.job_progress(job, config.seed)[0])
        if budget <= 0:
            break
        before = _episode_counts(store)
        store.close()
        collect_to_store(
            env_id,
            min(config.steps_per_round, budget),
            data_dir,
            policy=_agent_policy(agent, model, venv.dream.decodes),
            seed=config.seed,
            progress=progress,
            job=job,
        )
        store = EpisodeStore(data_dir)
        new_episodes = _episodes_after(store, before)
        ended = [e.episode_return for e in new_episodes if e.ended]
        record["rounds"].append(
            {
                "round": round_index,
                "real_steps": store.num_steps(),
                "real_return": float(np.mean(ended)) if ended else None,
                "real_episodes": len(ended),
                "fit_seconds": round(fitted - started, 1),
                "agent_seconds": round(trained - fitted, 1),
                "collect_seconds": round(time.perf_counter() - trained, 1),
            }
        )
        atomic_write_files(out, {PROGRESS_FILE: to_json_bytes(record)})
        last = record["rounds"][-1]
        logger.info(
            "dyna round %d: %d real steps, real return %s",
            round_index,
            last["real_steps"],
            last["real_return"],
        )
        if store.num_steps() >= config.real_steps:
            break
    return record
