"""The Dyna loop: collect real data, fit the model, train the agent in the dream, collect with the
agent, refit, ... until the real-step budget is spent.

Everything lives in one output directory, and every piece is resumable on its own::

    OUT/data/             the episode store (append-only; the real-step count is read from it)
    OUT/model/            the world-model run directory (the trainer resumes it)
    OUT/agent.zip         the agent, carried over from round to round
    OUT/best_agent.zip    with ``eval_episodes``: the agent of the round with the best real evaluation
    OUT/progress.json     one entry per finished round: real steps used, real returns, timings

A run may start from a prior instead of random motion: a fitted run directory (``prior_model``)
and the episode store it was fitted on (``prior_data``), both copied into ``OUT`` (the originals are
only read). ``own_share`` then draws that share of every fit batch and of the dream's branched starts
from the data the rounds' agents collected: a uniform draw over a large prior would give the agent's
own behaviour, the states its dream must get right, a few percent of each batch.

A run that is stopped (even with ``kill -9``) continues from its last finished round when started
again with the same arguments; a round's collection that a kill interrupted is finished, not redone
(each round is its own collection job in the store). One Dyna run writes ``OUT`` at a time: a second
one is refused at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldflux_gym.agents.evaluate import evaluate_agent
from worldflux_gym.agents.recipes import Recipe, load_recipe
from worldflux_gym.agents.train import agent_device, build_agent, save_agent
from worldflux_gym.core.checkpoint import atomic_write_files, from_pretrained, to_json_bytes
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.lock import LOCK_FILES, WriterLock
from worldflux_gym.core.validate import check_float, check_int
from worldflux_gym.data.collect import collect_to_store
from worldflux_gym.data.policy import Policy, as_policy, load_sb3_agent
from worldflux_gym.data.store import EpisodeStore, is_store
from worldflux_gym.dream.latent import encode_observations
from worldflux_gym.dream.sb3 import DreamSB3VecEnv
from worldflux_gym.training.fit import fit_world_model
from worldflux_gym.training.run_dir import RunDirectory
from worldflux_gym.training.trainer import TrainerConfig

PROGRESS_FILE = "progress.json"
EVAL_SEED = 1_000_000  # seeds the real evaluation's resets: the same every round, apart from the data's
DEFAULT_DREAM_HORIZON = 100
PRIOR_COPY_WAIT = 120.0  # seconds; a copy takes a few, a fit that writes the prior takes longer
logger = logging.getLogger(__name__)


@dataclass
class DynaConfig:
    real_steps: int  # real-env steps this run collects, random warm-up included (a prior's are not)
    recipe: str = "ppo_walker"  # agent recipe name or path (agents/*.json)
    initial_steps: int = 5_000  # random-action steps before the first fit, on top of any prior data
    steps_per_round: int = 5_000  # real steps the agent collects each round
    fit_steps_per_round: int = 2_000  # model updates each round
    agent_steps_per_round: int = 100_000  # dreamed agent steps each round
    initial_agent_steps: int | None = None  # dreamed agent steps in round 0; None: agent_steps_per_round
    starts: str = "branched"  # dream starts: "branched" (real mid-episode states) or "reset"
    dream_horizon: int | None = None  # dreamed episode length; None: the recipe's, else 100 (as MBPO)
    own_share: float = 0.0  # share of each fit batch and of the branched starts from the agents' data
    eval_episodes: int = 0  # deterministic real episodes after each round's training; keeps the best
    prior_model: str | None = None  # a fitted run directory to start from (copied, then resumed)
    prior_data: str | None = None  # an episode store to start from (copied); None: prior_model's data/
    seed: int = 0
    device: str = "auto"

    def checked(self) -> DynaConfig:
        """This config, every value checked: a bad one raises :class:`ConfigError` naming it."""
        for name in ("real_steps", "steps_per_round", "fit_steps_per_round", "agent_steps_per_round"):
            check_int(getattr(self, name), f"DynaConfig.{name}", minimum=1)
        check_int(self.initial_steps, "DynaConfig.initial_steps", minimum=0)
        check_int(self.eval_episodes, "DynaConfig.eval_episodes", minimum=0)
        for name in ("initial_agent_steps", "dream_horizon"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), f"DynaConfig.{name}", minimum=1)
        check_float(self.own_share, "DynaConfig.own_share", minimum=0.0, maximum=1.0)
        if self.starts not in ("branched", "reset"):
            raise ConfigError(f"DynaConfig.starts must be 'branched' or 'reset', got {self.starts!r}")
        if self.real_steps < self.initial_steps:
            raise ConfigError(
                f"real_steps ({self.real_steps}) must cover the random warm-up ({self.initial_steps})"
            )
        if self.initial_steps == 0 and self.prior_data is None and self.prior_model is None:
            raise ConfigError("the first fit needs data: set initial_steps > 0, or start from prior_data")
        return self


def _read_progress(out: Path) -> dict[str, Any]:
    path = out / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"rounds": []}


def _write_progress(out: Path, record: dict[str, Any]) -> None:
    atomic_write_files(out, {PROGRESS_FILE: to_json_bytes(record)})


def _agent_policy(agent, model, decodes: bool) -> Policy:
    """The agent acting on real observations (encoded first when it was trained on latents), with
    sampled actions: the data of the next round should explore."""
    act = as_policy(agent, deterministic=False)

    def policy(obs: np.ndarray) -> np.ndarray:
        return act(obs if decodes else encode_observations(model, obs))

    return policy


def _episode_counts(store: EpisodeStore) -> dict[str, int]:
    return {split: store.num_episodes(split) for split in ("train", "validation")}


def _episodes_after(store: EpisodeStore, counts: dict[str, int]):
    """Episodes appended since ``counts`` was taken (each split keeps the order of appending)."""
    return [e for split, n in counts.items() for e in store.episodes(split)[n:]]


def _copy_prior(source: Path, target: Path, what: str, skip: tuple[str, ...] = ()) -> None:
    """Copy ``source`` to ``target`` under the source's writer lock; a copy a kill interrupted is
    thrown away and started again, never taken for the whole."""
    partial = target.with_name(f".{target.name}.copying")
    if partial.exists():
        shutil.rmtree(partial)
    # two runs that start from the same prior copy it one after the other
    with WriterLock(source, f"copying {what} into a Dyna run", wait=PRIOR_COPY_WAIT):
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(*LOCK_FILES, *skip))
    os.replace(partial, target)


Prior = tuple[RunDirectory | None, Path | None]  # the prior run and the store it was fitted on


def _find_prior(env_id: str, model_name: str, config: DynaConfig) -> Prior:
    """The prior run and store ``config`` names, checked by reading them only."""
    run, prior_data = None, Path(config.prior_data) if config.prior_data else None
    if config.prior_model is not None:
        run = RunDirectory(config.prior_model)
        if not (run.config_file.is_file() and run.state_json.is_file()):
            raise ConfigError(
                f"prior_model {config.prior_model} holds no fitted run; fit one with `worldflux-gym fit`"
            )
        saved = run.saved_config()
        if f"{saved.get('family')}:{saved.get('preset')}" != model_name:
            raise ConfigError(
                f"prior_model {config.prior_model} holds {saved.get('family')}:{saved.get('preset')}, "
                f"not {model_name}; name its model with --model"
            )
        if prior_data is None:
            if not is_store(run.data_dir):
                raise ConfigError(
                    f"prior_model {config.prior_model} has no data/ store; name the store it was "
                    "fitted on with prior_data (--prior-data)"
                )
            prior_data = run.data_dir
    if prior_data is not None:
        if not is_store(prior_data):
            raise ConfigError(f"prior_data {prior_data} is not an episode store (`worldflux-gym collect`)")
        held = EpisodeStore(prior_data).env_id
        if held != env_id:
            raise ConfigError(f"prior_data {prior_data} holds episodes of {held!r}, not {env_id!r}")
    return run, prior_data


def _start_from_prior(prior: Prior, out: Path) -> dict[str, int]:
    """Copy the prior run and data into ``out`` (first start only); returns what they hold."""
    run, prior_data = prior
    data_dir, model_dir = out / "data", out / "model"
    if run is not None and not model_dir.exists():
        _copy_prior(run.path, model_dir, "a fitted run", skip=(run.data_dir.name, "tensorboard"))
    if prior_data is not None and not data_dir.exists():
        _copy_prior(prior_data, data_dir, "an episode store")
    return {
        "prior_steps": EpisodeStore(data_dir).num_steps() if prior_data is not None else 0,
        "prior_updates": int(RunDirectory(model_dir).trainer_state()["step"]) if run is not None else 0,
    }


def _fit_settings(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model config and trainer settings of the run in ``model_dir`` (a prior's included), so
    that each round resumes it as it was fitted; empty for a new run."""
    run = RunDirectory(model_dir)
    if not run.config_file.is_file() or not run.state_json.is_file():
        return {}, {}
    trainer = run.trainer_state()["trainer_config"]
    settings = {f.name for f in dataclasses.fields(TrainerConfig)} - {"steps", "seed", "progress"}
    keep = {k: v for k, v in trainer.items() if k in settings}
    return dict(run.saved_config()["config"]), keep


def run_dyna(
    env_id: str, model_name: str, out: str | Path, config: DynaConfig, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) the Dyna loop in ``out``; returns the progress record (see module docstring)."""
    out = Path(out)
    config = config.checked()
    # a new run's prior is checked before anything is written (a wrong one is refused at once)
    prior = None if (out / PROGRESS_FILE).is_file() else _find_prior(env_id, model_name, config)
    with WriterLock(out, f"a Dyna run of {model_name} on {env_id}", reentrant=True):
        return _run_dyna(env_id, model_name, out, config, progress, prior)


def _run_dyna(
    env_id: str, model_name: str, out: Path, config: DynaConfig, progress: bool, prior: Prior | None
) -> dict[str, Any]:
    record = _read_progress(out)
    settings = {**dataclasses.asdict(config), "env_id": env_id, "model": model_name}
    if "config" in record:
        # a run saved before a setting existed ran with that setting's default
        saved = {**dataclasses.asdict(DynaConfig(real_steps=0)), **record["config"]}
        if saved != settings:
            changed = sorted(k for k in settings if saved.get(k) != settings[k])
            raise ConfigError(
                f"{out} holds a Dyna run with other settings ({', '.join(changed)} differ); resume it "
                "with the same arguments or choose a new output directory"
            )
    recipe: Recipe = load_recipe(config.recipe)
    if recipe.normalize:
        # the agent carries on across rounds, each in a new dream: one VecNormalize cannot follow it
        raise ConfigError(
            f"Dyna trains one agent across rounds; recipe {recipe.name} has normalize, use one without"
        )
    data_dir, model_dir, agent_path = out / "data", out / "model", out / "agent.zip"
    if "config" not in record:
        out.mkdir(parents=True, exist_ok=True)
        # the store's collection jobs of this run, apart from any a prior store holds (another run's)
        jobs = f"dyna-{secrets.token_hex(4)}"
        if prior is None:  # progress.json went away between the check and the lock
            prior = _find_prior(env_id, model_name, config)
        record.update(config=settings, jobs=jobs, **_start_from_prior(prior, out))
        _write_progress(out, record)
    prior_steps = record.get("prior_steps", 0)
    jobs = record.get("jobs", "dyna")  # "dyna": a run started before runs named their jobs

    have = EpisodeStore(data_dir).num_steps() - prior_steps if is_store(data_dir) else 0
    if config.initial_steps and have < config.initial_steps:  # a warm-up a kill interrupted is finished
        collect_to_store(
            env_id,
            config.initial_steps,
            data_dir,
            seed=config.seed,
            progress=progress,
            job=f"{jobs}-warm-up" if "jobs" in record else None,
        )
    if "own_from" not in record:  # what the rounds' agents collect comes after this many train steps
        record["own_from"] = EpisodeStore(data_dir).num_steps("train")
        _write_progress(out, record)
    horizon = config.dream_horizon or recipe.env_options.get("max_episode_steps", DEFAULT_DREAM_HORIZON)
    env_options = {**recipe.env_options, "starts": config.starts, "max_episode_steps": horizon}

    rounds = record["rounds"]
    if rounds and rounds[-1]["real_steps"] >= config.real_steps:
        return record  # finished
    agent = None
    while True:
        store = EpisodeStore(data_dir)
        used = store.num_steps() - prior_steps
        round_index = len(record["rounds"])
        started = time.perf_counter()

        # the first round fits before the agents have collected anything: no recent share yet
        own_share = config.own_share if store.num_steps("train") > record["own_from"] else 0.0
        overrides, trainer = _fit_settings(model_dir)
        trainer.update(recent_from=record["own_from"], recent_share=own_share)
        with warnings.catch_warnings():
            if round_index == 0 and record.get("prior_updates"):
                # the copied prior was fitted on the same episodes under another path: not worth a word
                warnings.filterwarnings("ignore", message="resuming .* on other data", category=UserWarning)
            model = fit_world_model(
                env_id,
                model_name,
                model_dir,
                data_dir=data_dir,
                steps=record.get("prior_updates", 0) + config.fit_steps_per_round * (round_index + 1),
                seed=config.seed,
                device=config.device,
                trainer=trainer,
                progress=progress,
                **overrides,
            )
        fitted = time.perf_counter()

        model = from_pretrained(model_dir, device=config.device)
        branched = config.starts == "branched"
        starts = (
            store.buffer("train", device=model.device, recent_from=record["own_from"], recent_share=own_share)
            if branched
            else None
        )
        venv = DreamSB3VecEnv(model, recipe.num_envs, real_env=env_id, buffer=starts, **env_options)
        venv.seed(config.seed + round_index)
        if agent is None and agent_path.is_file():
            agent = load_sb3_agent(agent_path, recipe.algorithm, agent_device(recipe), env=venv)
        elif agent is None:
            agent = build_agent(recipe, venv, seed=config.seed, tensorboard_dir=out / "agent_tb")
        else:
            agent.set_env(venv)
        first = round_index == 0 and config.initial_agent_steps is not None
        agent_steps = config.initial_agent_steps if first else config.agent_steps_per_round
        agent.learn(agent_steps, reset_num_timesteps=False, progress_bar=progress)
        save_agent(agent, agent_path)
        decodes = venv.dream.decodes
        venv.close()
        trained = time.perf_counter()

        entry: dict[str, Any] = {"round": round_index}
        if config.eval_episodes:
            evaluation = evaluate_agent(
                agent,
                env_id,
                episodes=config.eval_episodes,
                seed=EVAL_SEED,
                encoder=None if decodes else model,
            )
            entry.update(eval_return=evaluation.mean_return, eval_returns=evaluation.returns)
            if entry["eval_return"] > record.get("best", {}).get("eval_return", -math.inf):
                save_agent(agent, out / "best_agent.zip")
                record["best"] = {"round": round_index, "eval_return": entry["eval_return"]}
        evaluated = time.perf_counter()

        job = f"{jobs}-round-{round_index}"  # a collection of this round that a kill interrupted counts
        budget = config.real_steps - (used - store.job_progress(job, config.seed)[0])
        ended: list[float] = []
        if budget > 0:
            before = _episode_counts(store)
            store.close()
            collect_to_store(
                env_id,
                min(config.steps_per_round, budget),
                data_dir,
                policy=_agent_policy(agent, model, decodes),
                seed=config.seed,
                progress=progress,
                job=job,
            )
            store = EpisodeStore(data_dir)
            ended = [e.episode_return for e in _episodes_after(store, before) if e.ended]
        entry.update(
            real_steps=store.num_steps() - prior_steps,
            real_return=float(np.mean(ended)) if ended else None,
            real_episodes=len(ended),
            fit_seconds=round(fitted - started, 1),
            agent_seconds=round(trained - fitted, 1),
            eval_seconds=round(evaluated - trained, 1),
            collect_seconds=round(time.perf_counter() - evaluated, 1),
        )
        record["rounds"].append(entry)
        _write_progress(out, record)
        logger.info(
            "dyna round %d: %d real steps, real return %s, evaluation %s",
            round_index,
            entry["real_steps"],
            entry["real_return"],
            entry.get("eval_return"),
        )
        if entry["real_steps"] >= config.real_steps:
            break
    return record
