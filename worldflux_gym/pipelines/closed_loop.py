"""Closed-loop fine-tuning: make a fitted ensemble's dreams of the behaviour policies follow their data.

A model fitted on one-step or short open-loop windows can be accurate step by step and still dream a
policy's long episodes wrong: on Walker2d-v5 a real walker's gait drifts over a few hundred steps
until it falls (its torso leans further forward every stride), while the dreamed gait settles and
walks on, so the dream overrates exactly the policies whose real falls come late and slowly
(``benchmarks/bench_audit.py``: the dreamed reward per step is right, the episode lengths are not).

Here each training window of an episode logged by a *known, deterministic* behaviour policy is
re-imagined from its first real observation with that policy choosing every action from the
imagined observations (:meth:`EnsembleModel.closed_loop_error`). With the real dynamics this would
redo the logged episode exactly, so any difference is the model's error as the policy experiences
it, feedback included. The term is added to the model's own loss; gradients run through at most
``truncate`` steps of a ``horizon``-step rollout, because longer chains through a walker's contacts
explode.

Which policy logged an episode is found by replaying: the policy whose deterministic actions
reproduce the episode's first logged actions. That needs no bookkeeping in the store, and it
refuses data the policy did not log (or logged with sampled actions).

The fine-tuned model also dreams with less noise: its sampled transitions use 0.35 of the members'
std (``ClosedLoopConfig.noise_scale``, saved as the model's ``noise_scale``). On Walker2d-v5 the
full std, fitted to one-step errors that are mostly systematic, makes the dreamed walkers fall far
too early, and the mean transition (no noise) lets the better ones walk forever; the real falls are
in between (``benchmarks/RESULTS.md``, "Audit").

The result is a new checkpoint in ``out_dir`` (the source run is never modified), with
``closed_loop.json``: the source, the data store, the settings and the held-out closed-loop error
before and after. While it runs, ``out_dir/resume`` holds a resume point every
``checkpoint_every`` iterations: the same call after a kill goes on from there to the same weights
(other settings are refused), and the folder is removed once the model is saved. It dreams and
audits like any checkpoint. What it is for: dreaming (and auditing)
the behaviour policies and policies near them; a policy far from all of them gains nothing certain.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from stable_baselines3.common.base_class import BaseAlgorithm
from tqdm.auto import tqdm

from worldflux_gym.core.checkpoint import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    from_pretrained,
    recover_interrupted_write,
    to_json_bytes,
)
from worldflux_gym.core.device import resolve_device
from worldflux_gym.core.errors import ConfigError, TrainingError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.buffer import EpisodeBuffer, check_recent_steps
from worldflux_gym.data.store import EpisodeStore
from worldflux_gym.training.run_dir import CLOSED_LOOP_JSON, STATE_JSON, RunDirectory
from worldflux_gym.training.trainer import TrainerConfig, optimizer_state, restore_optimizer, sample_for

RESUME_DIR = "resume"  # in out_dir while a fine-tune runs; removed when the model is saved
RESUME_JSON = "closed_loop_progress.json"
RESUME_TENSORS = "closed_loop_progress.safetensors"

TorchPolicy = Callable[[torch.Tensor], torch.Tensor]  # observations [N, obs_dim] -> actions [N, act_dim]


@dataclass
class ClosedLoopConfig:
    """How to fine-tune. The defaults are the setting of the Walker2d-v5 audit benchmark (H=64
    rollouts, gradients through 8 steps, 8 windows per behaviour policy, 1000 updates; the fine-tuned
    model's sampled dreams at 0.35 of the members' std): ``benchmarks/RESULTS.md``."""

    horizon: int = 64  # steps of each closed-loop rollout
    truncate: int = 8  # gradients flow through at most this many steps of it
    windows_per_policy: int = 8
    updates: int = 1000
    learning_rate: float = 1e-4  # a tenth of the fit's: this refines a fitted model
    weight: float = 1.0  # of the closed-loop error against the model's own loss
    grad_clip: float = 10.0
    match_steps: int = 20  # logged actions a policy must reproduce to count as an episode's logger
    match_tolerance: float = 1e-4
    validation_windows: int = 16  # per policy, for the before/after figure
    # written into the fine-tuned model's config (EnsembleConfig.noise_scale): its sampled dreams use
    # this fraction of the members' std. Fitted to one-step errors, the full std makes dreamed walkers
    # fall early, none makes them never fall (chosen on Walker2d-v5: benchmarks/RESULTS.md).
    noise_scale: float = 0.35
    # a share of each batch of the model's own loss from the train steps after the first
    # `recent_from` (a Dyna round's new episodes, appended last; see EpisodeBuffer): uniform draws
    # give a round's few new steps next to no weight beside a large store
    recent_share: float = 0.0
    recent_from: int = 0
    seed: int = 0
    # iterations between resume points (``out_dir/resume``): the Walker recipe's 1000 take over an
    # hour on one core, and a rerun after a kill goes on from the last one with the same result
    checkpoint_every: int = 50

    def check(self) -> None:
        counts = (
            "horizon",
            "truncate",
            "windows_per_policy",
            "updates",
            "match_steps",
            "validation_windows",
            "checkpoint_every",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise ConfigError(f"ClosedLoopConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.weight < 0 or self.grad_clip <= 0 or self.noise_scale < 0:
            raise ConfigError(
                "ClosedLoopConfig.learning_rate and grad_clip must be positive, weight and noise_scale >= 0"
            )
        if not 0.0 <= self.recent_share <= 1.0 or self.recent_from < 0:
            raise ConfigError(
                f"ClosedLoopConfig.recent_share must be in [0, 1] and recent_from >= 0, got "
                f"{self.recent_share} and {self.recent_from}"
            )


def differentiable_policy(
    agent: str | Path | BaseAlgorithm, action_space: spaces.Box, device: str | torch.device = "cpu"
) -> TorchPolicy:
    """An SB3 agent's deterministic action as a differentiable torch function, mapped into
    ``action_space`` as ``predict`` maps it (clipped, or unscaled from [-1, 1] for squashing
    policies such as SAC's)."""
    if isinstance(agent, (str, Path)):
        from worldflux_gym.agents import load_agent

        agent = load_agent(agent, device=str(device))
    if not isinstance(agent, BaseAlgorithm):
        raise ConfigError(
            f"closed-loop fine-tuning needs the behaviour policies as stable-baselines3 agents (a .zip or a "
            f"model) to differentiate through; got {type(agent).__name__}"
        )
    if not isinstance(action_space, spaces.Box):
        raise ConfigError(f"closed-loop fine-tuning needs continuous (Box) actions, got {action_space}")
    policy = agent.policy.to(device)
    policy.set_training_mode(False)
    policy.requires_grad_(False)
    low = torch.as_tensor(action_space.low, dtype=torch.float32, device=device)
    high = torch.as_tensor(action_space.high, dtype=torch.float32, device=device)

    def act(obs: torch.Tensor) -> torch.Tensor:
        action = policy._predict(obs, deterministic=True).float()
        if policy.squash_output:
            return low + 0.5 * (action + 1.0) * (high - low)
        return torch.maximum(torch.minimum(action, high), low)

    return act


@torch.no_grad()
def behaviour_labels(
    buffer: EpisodeBuffer,
    policies: Sequence[TorchPolicy],
    steps: int = 20,
    tolerance: float = 1e-4,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """For every episode of ``buffer``, the index of the policy whose actions reproduce its first
    ``steps`` logged actions within ``tolerance`` (the closest one), or -1 (none: random actions,
    sampled actions, another policy). One step is not enough: saturated actions agree at the bounds."""
    count = np.minimum(buffer.lengths, steps)
    episode = np.repeat(np.arange(len(count)), count)
    time = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    obs = torch.as_tensor(buffer.obs[buffer.obs_start[episode] + time], dtype=torch.float32, device=device)
    logged = buffer.action[buffer.step_start[episode] + time].reshape(len(episode), -1)
    errors = np.empty((len(policies), len(count)))
    for i, policy in enumerate(policies):
        gap = np.abs(policy(obs).cpu().numpy().reshape(len(episode), -1) - logged).max(axis=1)
        errors[i] = np.maximum.reduceat(gap, np.cumsum(count) - count)
    return np.where(errors.min(axis=0) <= tolerance, errors.argmin(axis=0), -1)


def fine_tune_closed_loop(
    run_dir: str | Path,
    policies: Mapping[str, str | Path | BaseAlgorithm] | Sequence[str | Path | BaseAlgorithm],
    out_dir: str | Path,
    config: ClosedLoopConfig | None = None,
    device: str = "auto",
    progress: bool = True,
    store: str | Path | None = None,
) -> WorldModel:
    """Fine-tune the ensemble fitted in ``run_dir`` with the closed-loop term of every behaviour
    policy in ``policies`` (SB3 agents that logged part of its data with deterministic actions) and
    save it in ``out_dir``; returns the model. See the module doc.

    ``store``: the episode store to tune on; by default the one ``run_dir`` records (its fit's, or an
    earlier fine-tune's). A Dyna round passes its own: the fitted data plus the real episodes of
    agents trained in ``run_dir``'s dream (``run_dir`` may then be any saved checkpoint)."""
    config = config or ClosedLoopConfig()
    config.check()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    # opened and checked before out_dir is made, so that a refused fine-tune leaves none
    episodes = _open_store(Path(store) if store is not None else _store_of(run_dir), config)
    out = RunDirectory(out_dir)
    _refuse_existing(out)
    # one writer of out_dir (not a fit's run: no fit's files are expected there)
    with out.lock(f"a closed-loop fine-tune of {run_dir}", reentrant=False, refuse_foreign=False):
        _refuse_existing(out)  # written by another writer in between
        return _fine_tune(policies, run_dir, episodes, out_dir, config, device, progress)


def _open_store(store_dir: Path, config: ClosedLoopConfig) -> EpisodeStore:
    """The store at ``store_dir``, refused if it is not one or has no train steps from
    ``config.recent_from`` on (when ``config.recent_share`` draws from them)."""
    store = EpisodeStore(store_dir)
    if config.recent_share:  # counting the train steps reads the store's index
        train_steps = store.num_steps("train")
        check_recent_steps(
            config.recent_from, config.recent_share, train_steps, "ClosedLoopConfig", store_dir
        )
    return store


def _refuse_existing(out: RunDirectory) -> None:
    if out.holds_model():
        raise TrainingError(
            f"{out.path} already holds a model; choose a new directory (nothing is overwritten)"
        )


def _fine_tune(
    policies,
    run_dir: Path,
    store: EpisodeStore,
    out_dir: Path,
    config: ClosedLoopConfig,
    device: str,
    progress: bool,
) -> WorldModel:
    model = from_pretrained(run_dir, device=resolve_device(device))
    if not hasattr(model, "closed_loop_error"):
        raise ConfigError(
            f"closed-loop fine-tuning is for the ensemble family; {run_dir} holds "
            f"{model.family}:{model.preset}"
        )
    store_dir = store.directory
    train = store.buffer(
        "train", model.device, recent_from=config.recent_from, recent_share=config.recent_share
    )
    validation = store.buffer("validation", model.device)
    if isinstance(policies, Mapping):
        named = dict(policies)
    else:
        named = {
            Path(agent).stem if isinstance(agent, (str, Path)) else f"policy{i}": agent
            for i, agent in enumerate(policies)
        }
    if not named:
        raise ConfigError("give at least one behaviour policy")
    acting = [differentiable_policy(agent, model.action_space, model.device) for agent in named.values()]
    labels = {
        split: behaviour_labels(buffer, acting, config.match_steps, config.match_tolerance, model.device)
        for split, buffer in (("train", train), ("validation", validation))
    }
    steps_of = {
        split: [np.flatnonzero(labels[split][buffer.step_episode] == i) for i in range(len(acting))]
        for split, buffer in (("train", train), ("validation", validation))
    }
    missing = [name for name, steps in zip(named, steps_of["train"]) if len(steps) == 0]
    if missing:
        raise ConfigError(
            f"no training episode of {store_dir} was logged by {missing} (their deterministic actions "
            f"reproduce none): pass the policies that collected the data, with deterministic actions "
            f"(collect_to_store(..., policy=AGENT), the default)"
        )

    def closed_loop(buffer: EpisodeBuffer, steps: list[np.ndarray], windows: int, rng) -> torch.Tensor:
        """[members]: the closed-loop error over ``windows`` windows of each policy, per real step."""
        total, real_steps = 0.0, 0.0
        for policy, policy_steps in zip(acting, steps):
            if len(policy_steps):
                batch = buffer.sequences(rng.choice(policy_steps, windows), config.horizon)
                count = batch.mask.float().sum()
                total = total + model.closed_loop_error(batch, policy, config.truncate) * count
                real_steps = real_steps + count
        return total / real_steps

    def held_out() -> float | None:
        """The mean closed-loop error on held-out episodes; None when none was logged by a policy."""
        if not any(len(steps) for steps in steps_of["validation"]):
            return None
        model.eval()
        with torch.no_grad():
            rng = np.random.default_rng([config.seed, 1])
            error = closed_loop(validation, steps_of["validation"], config.validation_windows, rng)
        model.train()
        return float(error.mean())

    before = held_out()
    fit = TrainerConfig().resolved(model)

    def sample(buffer: EpisodeBuffer, rng: np.random.Generator):
        return sample_for(model, buffer, fit.batch_size, rng)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=fit.weight_decay)
    rng = np.random.default_rng(config.seed)
    model.train()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
    identity = {
        "source": str(run_dir.resolve()),
        "store": str(store_dir.resolve()),
        "policies": _policy_names(named),
        "config": settings,
    }
    resume = out_dir / RESUME_DIR
    start = _load_resume_point(resume, identity, model, optimizer, rng)
    bar = tqdm(
        range(start, config.updates), initial=start, total=config.updates, desc="closed-loop fine-tune",
        disable=not progress,
    )  # fmt: skip
    for iteration in bar:
        error = closed_loop(train, steps_of["train"], config.windows_per_policy, rng)
        loss = model.loss(sample(train, rng)).loss + config.weight * error.sum()
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the closed-loop loss became {float(loss)}; nothing was saved. Lower "
                "ClosedLoopConfig.learning_rate or truncate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        bar.set_postfix(closed_loop=f"{float(error.detach().mean()):.3f}", refresh=False)
        done = iteration + 1
        if done % config.checkpoint_every == 0 and done < config.updates:
            _save_resume_point(resume, identity, done, model, optimizer, rng)
    after = held_out()
    model.eval()
    model.config.noise_scale = config.noise_scale
    with torch.no_grad():  # re-pick the elites on held-out data, as the fit does
        model.validate(sample(validation, np.random.default_rng([config.seed, 2])))
    record = {
        "source": str(run_dir.resolve()),
        "data": {"store": str(store_dir.resolve()), "env_id": store.env_id},
        "policies": _policy_names(named),
        "episodes_per_policy": {name: int((labels["train"] == i).sum()) for i, name in enumerate(named)},
        "config": dataclasses.asdict(config),
        "held_out_closed_loop_error": {"before": before, "after": after},
    }  # fmt: skip
    model.save_pretrained(out_dir, extra_files={CLOSED_LOOP_JSON: to_json_bytes(record)})
    shutil.rmtree(resume, ignore_errors=True)
    return model


def _policy_names(named: Mapping[str, str | Path | BaseAlgorithm]) -> dict[str, str]:
    return {
        name: str(agent) if isinstance(agent, (str, Path)) else type(agent).__name__
        for name, agent in named.items()
    }


def _save_resume_point(
    folder: Path, identity: dict, done: int, model: WorldModel, optimizer, rng: np.random.Generator
) -> None:
    """Model, optimizer and sampling state after ``done`` iterations, in one all-or-nothing write."""
    tensors, param_groups = optimizer_state(optimizer)
    progress = {
        **identity,
        "done": done,
        "rng": rng.bit_generator.state,
        "optimizer_param_groups": param_groups,
    }
    files = {RESUME_JSON: to_json_bytes(progress), RESUME_TENSORS: save_safetensors_bytes(tensors)}
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        model.save_pretrained(folder, extra_files=files)  # it runs the model once (its fingerprint)


def _load_resume_point(
    folder: Path, identity: dict, model: WorldModel, optimizer, rng: np.random.Generator
) -> int:
    """Restore what :func:`_save_resume_point` wrote; returns the iterations done (0 without one)."""
    if not folder.is_dir():
        return 0
    # this fine-tune holds out_dir's lock: it is the folder's writer, so it may finish a killed write
    recover_interrupted_write(folder, [CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE, RESUME_JSON, RESUME_TENSORS])
    if not (folder / RESUME_JSON).is_file():
        return 0
    progress = json.loads((folder / RESUME_JSON).read_text())
    differs = sorted(key for key in identity if progress.get(key) != identity[key])
    if differs:
        raise TrainingError(
            f"{folder} is the resume point of a closed-loop fine-tune with another {' and '.join(differs)}; "
            f"delete it to start this one afresh, or choose another out_dir"
        )
    model.load_state_dict(from_pretrained(folder, device=model.device).state_dict())
    tensors = load_safetensors_bytes((folder / RESUME_TENSORS).read_bytes())
    restore_optimizer(optimizer, tensors, progress["optimizer_param_groups"], model.device)
    rng.bit_generator.state = progress["rng"]
    return int(progress["done"])


def _store_of(run_dir: Path) -> Path:
    """The store to fine-tune ``run_dir`` on: a fit's, or an earlier fine-tune's (so that a fine-tune
    can be fine-tuned further, e.g. with longer rollouts)."""
    store = RunDirectory(run_dir).recorded_store()
    if store is None:
        raise TrainingError(
            f"{run_dir} records no episode store (neither {STATE_JSON} of a fit run nor {CLOSED_LOOP_JSON}); "
            "fine-tune a run of `worldflux-gym fit` or an earlier fine-tune, or pass store=DIR"
        )
    return store


def closed_loop_record(checkpoint: str | Path) -> dict | None:
    """``closed_loop.json`` of a fine-tuned checkpoint, or None for any other."""
    return RunDirectory(checkpoint).closed_loop_record()
