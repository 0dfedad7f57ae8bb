"""Fit the shipped weights of every dream env in this folder, reproducibly, from data collected here.

    python envs/fit_shipped.py                      # every spec in envs/*.json
    python envs/fit_shipped.py ensemble_walker_v3   # one spec (by file name)
    python envs/fit_shipped.py ensemble_walker_v3 --stage data   # only train the agents and collect

A spec's ``fit.data`` says what the model sees, all of it collected here, seeded:

- ``random``: ``steps`` of random actions, in equal shares at each of ``action_scales`` (small
  scales keep a walker up longer, so the data holds long episodes as well as falls);
- ``agents``: behaviour agents across the skill range, from falling to expert: every saved
  checkpoint of SB3 runs on the *real* env (``envs/behaviour.py``: algorithm, seed, length, saving
  interval), each acting for ``steps_per_checkpoint`` steps, half deterministically and half with
  its own action noise (so the data holds each policy's states and the states next to them). A run
  frozen in ``envs/data_runs/`` is read from there (the same policies on every machine, so the same
  data); any other is trained into ``--behaviour-work`` when missing;
- ``dream_agents``: agents trained only in an earlier shipped dream (a Dyna round, MBPO's cure for
  a policy that exploits its model: the real states such an agent reaches are the ones its dream got
  wrong). Each group is ``worldflux-gym train-agent`` of ``dream_id`` with ``recipe``, ``steps``,
  ``env_options`` and each of ``seeds``, saved as ``<behaviour-work>/<env>/dream/<name>_s<seed>.zip``
  (trained there when missing); each agent then acts in the real env for ``steps_per_agent`` steps,
  half deterministically and half sampling its actions.

``fit.dyna_rounds``: Dyna rounds on the model fitted so far (after the stages below), in order. In
round ``n`` the model so far is saved with its real starts as ``<work>/<name>/dyna_round<n>/base``;
each of the round's ``dream_agents`` groups (``recipe``, ``steps``, ``env_options``, ``seeds``,
``steps_per_agent``, as above) is trained in that dream (the spec's own id with the base weights)
and acts in the real env, as do the checkpoints of the round's real-env ``agents`` runs (as in
``fit.data``); its ``held_corners`` (``steps``, ``hold``) add real steps of random corners of the
action box, each held for ``hold`` steps (where dream-trained agents push their actions). The
round's store holds every source so far, the new ones last. The base is then tuned on it by one of
two blocks, either of whose ``recent_share`` draws that share of each batch from the round's new
steps: ``closed_loop`` (``ClosedLoopConfig``'s fields), a closed-loop fine-tune under every logger
so far; or ``fine_tune`` (``updates``, ``seed``, ``trainer``: trainer settings, ``overrides``: model
config fields such as the ensemble's ``sequence_length``), a fit that starts from the base's weights
and normalisation. Its termination head is then refitted as in ``fit.end_head``.

``fit.dyna_loop``: MBPO's loop (``worldflux_gym/pipelines/dyna.py``, ``DynaConfig``'s fields but the
prior and the device) from the trainer run fitted last (``run``, or the last round's ``fine_tune``)
and its store, copied into ``<work>/<name>/dyna_loop``: one agent of ``recipe``, carried from round to
round, trains in the model's dream and collects ``steps_per_round`` real steps, and the model is
fitted ``fit_steps_per_round`` more updates with ``own_share`` of each batch from those steps, until
the loop has collected ``real_steps`` (the last round's steps come after the last fit: only the
termination head, refitted then as in ``fit.end_head``, sees them).

``fit.init_from``: a checkpoint folder under ``envs/`` (another id's shipped weights) that stands in
for the fit: the spec's ``fit.data`` is collected as the store it was fitted on, and the rounds and the
loop go on from those weights (so a refit that builds on a shipped model does not rebuild it). The
fit's own settings (``fit_steps``, ``trainer``, ``overrides``, ``closed_loop``) are then refused,
and ``fit.end_head`` is refitted only after the rounds and the loop.

The last stage's model and store are what ships.

``fit.held_out_agents`` names runs (other seeds, another algorithm) whose checkpoints are *not* in
the data: ``benchmarks/bench_shipped.py --stage audit`` checks the dream on them, loaded from their
frozen copies in ``envs/held_out/`` (``envs/behaviour.py``). Every source is a store of its own
under ``--work`` (rerunning finishes what a kill interrupted); the sources are then merged, in a
fixed order, into the store the model is fitted on (its validation split holds every tenth episode
of every source).

The fit: ``family:preset`` with ``fit.overrides`` for ``fit.fit_steps`` updates (``fit.trainer``:
trainer settings), resumed when interrupted; then, where the spec has ``fit.closed_loop`` (the
ensemble family), the closed-loop fine-tune under every checkpoint of the data's behaviour agents
and every dream-trained agent (``worldflux_gym/pipelines/closed_loop.py``; the block's fields are
``ClosedLoopConfig``'s, and its ``noise_scale`` is the shipped model's); then, where the spec has
``fit.end_head`` (``fit_end_head``'s settings), the termination head alone refitted on the model's
own one-step predictions (``worldflux_gym/training/end_head.py``). The result is measured on
the held-out episodes (``training/model_quality.py``), written into ``envs/checkpoints/<name>/`` with
``starts.safetensors`` (real initial observations and real context windows for branched starts).
The spec's ``data_provenance`` (real steps per source, the real returns they cover, seeds) and
``validation`` blocks are rewritten with what was measured; its ``fit_seconds_cpu`` sums each
stage's wall-clock seconds over every call that ran it (``<work>/<name>/seconds.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from behaviour import DATA_RUNS, BehaviourRun, checkpoint_agents, load_checkpoint, run_checkpoints

from worldflux_gym.agents.recipes import load_recipe
from worldflux_gym.agents.train import read_training_summary, train_agent
from worldflux_gym.core.checkpoint import (
    CONFIG_FILE,
    METADATA_FILE,
    WEIGHTS_FILE,
    atomic_write_files,
    from_pretrained,
    to_json_bytes,
)
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.registry import build_config
from worldflux_gym.data.buffer import EpisodeBuffer
from worldflux_gym.data.collect import (
    DEFAULT_HOLD,
    collect_episodes,
    collect_to_store,
    held_corner_policy,
    scaled_random_policy,
)
from worldflux_gym.data.episode import Episode
from worldflux_gym.data.policy import as_policy
from worldflux_gym.data.store import SPLITS, EpisodeStore, is_store
from worldflux_gym.dream.starts import STARTS_FILE, save_starts
from worldflux_gym.pipelines import ClosedLoopConfig, DynaConfig, fine_tune_closed_loop, run_dyna
from worldflux_gym.training import RunDirectory, TrainerConfig, fit_world_model
from worldflux_gym.training.end_head import fit_end_head
from worldflux_gym.training.model_quality import evaluate_model

ENVS = Path(__file__).resolve().parent
SHIPPED_LIMIT_MB = 60.0
HELDOUT_FILE = "heldout.safetensors"  # held-out real episodes shipped beside the weights
HELDOUT_STEPS = 6000
HELDOUT_SEED = 9_000_000  # fresh held-out episodes for weights whose fit store is gone
# how tests/test_shipped.py re-measures a shipped model on its held-out episodes
CHECK_SETTINGS = {"horizons": [1, 5, 25], "context": 5, "windows": 256, "seed": 0}
MERGED_RECORD = "sources.json"  # written last into the merged store's folder: the merge is complete
STAGE_SECONDS = "seconds.json"  # in <work>/<name>/: each fitting stage's wall-clock seconds over every call


def agent_blocks(fit: dict, number: int) -> list[dict]:
    """The real-env runs whose checkpoints log data in round ``number`` (0: ``fit.data.agents``)."""
    if number == 0:
        return fit["data"].get("agents", [])
    return fit["dyna_rounds"][number - 1].get("agents", [])


def data_run_blocks(fit: dict, rounds: int | None = None) -> list[dict]:
    """Every real-env run in the data: ``fit.data.agents`` and those of the first ``rounds`` Dyna
    rounds (of all of them when ``rounds`` is None)."""
    last = len(fit.get("dyna_rounds", [])) if rounds is None else rounds
    return [block for number in range(last + 1) for block in agent_blocks(fit, number)]


def behaviour_run(env_id: str, block: dict) -> BehaviourRun:
    algorithm, seed, steps, every = block["algorithm"], block["seed"], block["steps"], block["every"]
    return BehaviourRun(env_id, algorithm, int(seed), int(steps), int(every))


def behaviour_runs(spec: dict, key: str, rounds: int | None = None) -> list[BehaviourRun]:
    """``key`` "agents": the runs of :func:`data_run_blocks`; else the runs ``fit[key]`` names."""
    blocks = data_run_blocks(spec["fit"], rounds) if key == "agents" else spec["fit"].get(key, [])
    return [behaviour_run(spec["real_env"], block) for block in blocks]


def dream_agents(
    spec: dict, behaviour_work: Path, rounds: int = 0, only_round: int | None = None
) -> list[dict[str, Any]]:
    """Every agent of the spec's ``fit.data.dream_agents`` groups and of its first ``rounds`` Dyna
    rounds' groups (``round``: its number; 0 for the data's): where it is saved, how it is trained.
    ``only_round``: that round's agents alone."""
    groups = [(0, group) for group in spec["fit"]["data"].get("dream_agents", [])]
    for number, dyna_round in enumerate(spec["fit"].get("dyna_rounds", [])[:rounds], start=1):
        in_model_so_far = [{**group, "dream_id": spec["id"]} for group in dyna_round.get("dream_agents", [])]
        groups += [(number, group) for group in in_model_so_far]
    out = []
    for number, group in groups:
        if only_round is not None and number != only_round:
            continue
        for seed in group["seeds"]:
            path = behaviour_work / spec["real_env"] / "dream" / f"{group['name']}_s{seed}.zip"
            out.append({**group, "seed": int(seed), "path": path, "round": number})
    return out


def train_dream_agents(agents: list[dict[str, Any]], checkpoint: Path | None = None) -> None:
    """Train those of ``agents`` not saved yet, in their ``dream_id`` (with ``checkpoint``'s weights)."""
    for agent in agents:
        if not agent["path"].is_file():
            weights = f" with the weights of {checkpoint}" if checkpoint else ""
            print(f"  training {agent['path'].name} in {agent['dream_id']}{weights}")
            train_agent(
                agent["dream_id"],
                agent["path"],
                recipe=agent["recipe"],
                steps=int(agent["steps"]),
                seed=agent["seed"],
                env_options=agent.get("env_options"),
                checkpoint=checkpoint,
                progress=False,
                tensorboard=False,
            )


def behaviour_policies(spec: dict, behaviour_work: Path, rounds: int = 0) -> dict[str, Any]:
    """Every logger whose deterministic actions are in the data, by name: the behaviour runs'
    checkpoints and the dream-trained agents (those of the first ``rounds`` Dyna rounds too)."""
    policies: dict[str, Any] = {
        f"{run.name}_{steps}": agent
        for run in behaviour_runs(spec, "agents", rounds)
        for steps, agent in checkpoint_agents(run, behaviour_work, DATA_RUNS).items()
    }
    for agent in dream_agents(spec, behaviour_work, rounds):
        policies[agent["path"].stem] = agent["path"]
    return policies


def sources(spec: dict, behaviour_work: Path, rounds: int = 0) -> list[dict[str, Any]]:
    """Every data source of ``spec`` (and of its first ``rounds`` Dyna rounds) in a fixed order: name,
    policy, steps, seed. A round's sources come after all earlier ones, so theirs keep their seeds."""
    seed = int(spec["fit"].get("seed", 0))
    out: list[dict[str, Any]] = []
    random = spec["fit"]["data"].get("random")
    if random:
        scales = random.get("action_scales", [1.0])
        for i, scale in enumerate(scales):
            out.append(
                {
                    "name": f"random_scale{scale}",
                    "kind": "random",
                    "scale": scale,
                    "steps": int(random["steps"]) // len(scales),
                    "seed": seed + 1000 * i,
                }
            )

    def add_agent(name: str, path: Path, algorithm: str, steps: int, **about: Any) -> None:
        """Two sources per agent: half its steps deterministic, half sampling its own actions."""
        for deterministic in (True, False):
            out.append(
                {
                    "name": f"{name}_{'det' if deterministic else 'noisy'}",
                    "kind": "agent",
                    "policy": str(path),
                    "algorithm": algorithm,
                    **about,
                    "deterministic": deterministic,
                    "steps": steps // 2,
                    "seed": seed + 100_000 + 1000 * len(out),
                }
            )

    for number in range(rounds + 1):  # each round: its real-env runs, then its dream-trained agents
        for block in agent_blocks(spec["fit"], number):
            run = behaviour_run(spec["real_env"], block)
            for steps, path in run_checkpoints(run, behaviour_work, DATA_RUNS).items():
                add_agent(
                    f"{run.name}_{steps}",
                    path,
                    run.algorithm,
                    int(block["steps_per_checkpoint"]),
                    run_seed=run.seed,
                    checkpoint_steps=steps,
                )
        for agent in dream_agents(spec, behaviour_work, rounds, only_round=number):
            add_agent(
                f"{agent['name']}_s{agent['seed']}",
                agent["path"],
                read_training_summary(agent["path"])["algorithm"],
                int(agent["steps_per_agent"]),
                run_seed=agent["seed"],
                trained_in=agent["dream_id"] if number == 0 else f"Dyna round {number}",
                group=agent["name"],
            )
        corners = spec["fit"]["dyna_rounds"][number - 1].get("held_corners") if number else None
        if corners:
            out.append(
                {
                    "name": f"held_corners_round{number}",
                    "kind": "held_corners",
                    "hold": [int(n) for n in corners.get("hold", DEFAULT_HOLD)],
                    "steps": int(corners["steps"]),
                    "seed": seed + 200_000 + 1000 * number,
                }
            )
    return out


def collect_source(spec: dict, source: dict, directory: Path) -> EpisodeStore:
    have = EpisodeStore(directory).num_steps() if is_store(directory) else 0
    if have < source["steps"]:
        import gymnasium as gym

        if source["kind"] == "random":
            space = gym.make(spec["real_env"]).action_space  # a Discrete env's random data are unscaled
            scale = source["scale"] if isinstance(space, gym.spaces.Box) else 1.0
            policy = None if scale == 1.0 else scaled_random_policy(space, scale, source["seed"])
        elif source["kind"] == "held_corners":
            space = gym.make(spec["real_env"]).action_space
            policy = held_corner_policy(space, tuple(source["hold"]), source["seed"] + have)
        else:  # a behaviour run's save or frozen copy, or an agent trained in a dream
            checkpoint = load_checkpoint(
                source["policy"], source["algorithm"], spec["real_env"], source["run_seed"]
            )
            policy = as_policy(checkpoint, source["deterministic"])
        torch.manual_seed(source["seed"] + have)  # SB3's stochastic actions draw from torch's generator
        collect_to_store(
            spec["real_env"],
            source["steps"] - have,
            directory,
            policy=policy,
            seed=source["seed"] + have,
            progress=False,
        )
    return EpisodeStore(directory)


def collected(episodes: list[Episode]) -> dict:
    """What a source's record says of its episodes: real steps, count, and their returns' range."""
    returns = [float(np.sum(e.reward)) for e in episodes]
    return {
        "real_steps": sum(len(e) for e in episodes),
        "episodes": len(returns),
        "episode_return": {
            "mean": round(float(np.mean(returns)), 1),
            "min": round(min(returns), 1),
            "max": round(max(returns), 1),
        },
    }


def provenance_of(source: dict, store: EpisodeStore) -> dict:
    record = {k: v for k, v in source.items() if k != "policy"}
    record.update(collected(store.episodes("all")))
    if "checkpoint_steps" in source:
        run_record = json.loads((Path(source["policy"]).parent / "run.json").read_text())
        scored = run_record["checkpoints"].get(str(source["checkpoint_steps"]), {})
        record["checkpoint_real_return"] = scored.get("real_return")
    return record


def collect(
    spec: dict, name: str, work: Path, behaviour_work: Path, rounds: int = 0
) -> tuple[EpisodeStore, list[dict]]:
    """Train the behaviour agents the data needs, collect every source, and merge them (with the
    sources of the first ``rounds`` Dyna rounds, whose agents must be trained already)."""
    train_dream_agents(dream_agents(spec, behaviour_work))  # the behaviour runs are trained by sources()
    merged_dir = work / name / (f"dyna_round{rounds}" if rounds else "") / "data"
    if (merged_dir / MERGED_RECORD).is_file():
        return EpisodeStore(merged_dir), json.loads((merged_dir / MERGED_RECORD).read_text())
    provenance, stores = [], []
    for source in sources(spec, behaviour_work, rounds):
        store = collect_source(spec, source, work / name / "sources" / source["name"])
        stores.append(store)
        provenance.append(provenance_of(source, store))
        done = provenance[-1]
        print(f"  {source['name']}: {done['real_steps']} steps, returns {done['episode_return']}")
    if merged_dir.exists():  # a merge that a kill interrupted: ours to redo
        shutil.rmtree(merged_dir)
    first = stores[0]
    merged = EpisodeStore.create(merged_dir, spec["real_env"], first.observation_space, first.action_space)
    with merged:
        for store in stores:
            merged.extend(store.episodes("all"))
    atomic_write_files(merged_dir, {MERGED_RECORD: to_json_bytes(provenance)})  # a torn mark would not parse
    return EpisodeStore(merged_dir), provenance


def summarise(provenance: list[dict]) -> dict:
    """Real steps per kind of source, and the real returns the data cover."""
    by_kind: dict[str, int] = {}
    for p in provenance:
        if p["kind"] in ("random", "held_corners"):
            key = p["kind"]
        elif p["kind"] == "dyna_loop":
            key = f"{p['algorithm']} carried through the Dyna loop ({p['recipe']})"
        elif "trained_in" in p:
            key = f"{p['algorithm']} trained in {p['trained_in']} ({p['group']})"
        else:
            key = f"{p['algorithm']} seed {p['run_seed']}"
        by_kind[key] = by_kind.get(key, 0) + p["real_steps"]
    checkpoint_returns = [
        p["checkpoint_real_return"] for p in provenance if p.get("checkpoint_real_return") is not None
    ]
    return {
        "real_steps": sum(p["real_steps"] for p in provenance),
        "real_steps_by_source": by_kind,
        "episode_returns": {
            "min": min(p["episode_return"]["min"] for p in provenance),
            "max": max(p["episode_return"]["max"] for p in provenance),
        },
        "behaviour_checkpoint_returns": (
            {"min": min(checkpoint_returns), "max": max(checkpoint_returns)} if checkpoint_returns else None
        ),
        "sources": len(provenance),
    }


def heldout_episodes(spec: dict, store: EpisodeStore | None) -> list[Episode]:
    """Up to ``HELDOUT_STEPS`` of held-out real episodes: every k-th validation episode of the fit's
    store (so every source is represented), or, for weights fitted before stores were kept, fresh
    episodes of the spec's random source, with seeds no fit used."""
    if store is not None:
        episodes = store.episodes("validation")
    else:
        import gymnasium as gym

        random = spec["fit"]["data"]["random"]
        scales = random.get("action_scales", [1.0])
        space = gym.make(spec["real_env"]).action_space
        share = min(2 * HELDOUT_STEPS, int(random["steps"])) // len(scales)
        episodes = []
        for i, scale in enumerate(scales):
            seed = HELDOUT_SEED + 1000 * i
            boxed = isinstance(space, gym.spaces.Box) and scale != 1.0
            policy = scaled_random_policy(space, scale, seed) if boxed else None
            episodes += collect_episodes(spec["real_env"], share, policy=policy, seed=seed, progress=False)
    every = max(1, int(np.ceil(sum(len(e) for e in episodes) / HELDOUT_STEPS)))
    chosen, steps = [], 0
    for episode in episodes[::every]:
        if chosen and steps + len(episode) > HELDOUT_STEPS:
            break
        chosen.append(episode)
        steps += len(episode)
    return chosen


def write_check(spec: dict, model, episodes: list, destination: Path) -> dict:
    """Ship ``episodes`` beside the weights and measure the model on them as the test will."""
    from worldflux_gym.core.checkpoint import atomic_write_files
    from worldflux_gym.data.episode import episodes_to_bytes

    atomic_write_files(destination, {HELDOUT_FILE: episodes_to_bytes(episodes)})
    settings = {**CHECK_SETTINGS, "horizons": tuple(CHECK_SETTINGS["horizons"])}
    quality = evaluate_model(model, EpisodeBuffer(episodes), **settings)
    return {
        "settings": CHECK_SETTINGS,
        "episodes": len(episodes),
        "steps": sum(len(e) for e in episodes),
        **quality.as_dict(),
    }


def check_only(name: str) -> dict:
    """Measure the weights in place on their shipped held-out episodes again (after a change in how
    they are measured), or ship held-out episodes for weights that have none (no refit)."""
    from worldflux_gym.data.episode import episodes_from_bytes

    spec_path = ENVS / f"{name}.json"
    spec = json.loads(spec_path.read_text())
    destination = ENVS / spec["checkpoint"]
    model = from_pretrained(destination, device="cpu")
    shipped = destination / HELDOUT_FILE
    if shipped.is_file():
        episodes = episodes_from_bytes(shipped.read_bytes())
    else:
        episodes = heldout_episodes(spec, None)
    spec["validation"]["heldout_check"] = write_check(spec, model, episodes, destination)
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    return spec["validation"]["heldout_check"]


def closed_loop(spec: dict, folder: Path, behaviour_work: Path):
    """The fitted run of ``folder`` fine-tuned closed-loop under the data's behaviour checkpoints
    (kept in ``folder/closed_loop``; a finished fine-tune is loaded, not redone)."""
    out = folder / "closed_loop"
    config = ClosedLoopConfig(**spec["fit"]["closed_loop"])
    if not RunDirectory(out).holds_model():
        policies = behaviour_policies(spec, behaviour_work)
        fine_tune_closed_loop(folder / "run", policies, out, config, device="cpu")
    model = from_pretrained(out, device="cpu")
    model.config.noise_scale = config.noise_scale  # the spec's noise_scale_choice, made after the fine-tune
    return model


def end_head(spec: dict, model, folder: Path, store: EpisodeStore):
    """``model`` with its termination head refitted on its own one-step predictions of the train
    split (``training/end_head.py``; ``fit.end_head`` holds ``fit_end_head``'s settings, and
    ``"keep_best": true`` keeps the head that reads best the validation episodes not shipped as
    held-out), kept in ``folder/end_head``: a finished refit is loaded, not redone."""
    out = folder / "end_head"
    if not RunDirectory(out).holds_model():
        settings = {"seed": int(spec["fit"].get("seed", 0)), **spec["fit"]["end_head"]}
        if settings.pop("keep_best", False):  # judged on validation episodes the shipped check does not use
            shipped = {id(e) for e in heldout_episodes(spec, store)}
            unshipped = [e for e in store.episodes("validation") if id(e) not in shipped]
            if not unshipped:
                raise ValueError(
                    f"keep_best: every validation episode of {store.directory} is shipped as held-out "
                    f"({HELDOUT_STEPS} steps); collect more data or drop keep_best from fit.end_head"
                )
            settings["validation"] = EpisodeBuffer(unshipped)
        model = fit_end_head(model, store, **settings)
        model.save_pretrained(out)
        return model
    # only the head is taken: options set on ``model`` since (the spec's noise_scale) stay as they are
    fitted = from_pretrained(out, device="cpu").termination_head()
    model.termination_head().load_state_dict(fitted.state_dict())
    return model.eval()


def save_with_starts(model, store: EpisodeStore, destination: Path, seed: int) -> None:
    """``model`` and its real starts (initial observations and context windows of ``store``'s train
    split, for branched starts) into ``destination``, replacing what is there."""
    if destination.exists():
        shutil.rmtree(destination)
    model.save_pretrained(destination)
    train = store.buffer("train")
    rng = np.random.default_rng(seed)
    context_obs, context_action = train.sample_contexts(min(2048, train.num_steps), 8, rng)
    save_starts(destination, train.initial_observations().cpu(), context_obs.cpu(), context_action.cpu())


def dyna_round(
    spec: dict, number: int, model, store: EpisodeStore, name: str, work: Path, behaviour_work: Path
) -> tuple[Any, EpisodeStore, list[dict]]:
    """Round ``number`` of ``fit.dyna_rounds`` on ``model`` (fitted on ``store``): its dream agents
    trained in ``model``'s dream, their real episodes, those of its real-env runs' checkpoints and
    its held box corners added, the model tuned on them (its ``closed_loop`` or ``fine_tune`` block)
    and its end head refitted. Every step is kept in ``<work>/<name>/dyna_round<n>``: a rerun goes on."""
    # the earlier data come first in the round's store, so its new train steps start after theirs
    new_from = store.num_steps("train")
    dyna_block = spec["fit"]["dyna_rounds"][number - 1]
    where = f"fit.dyna_rounds[{number - 1}]"
    if not any(dyna_block.get(key) for key in ("agents", "dream_agents", "held_corners")):
        raise ConfigError(
            f"{where} adds no data: give it real-env runs (agents), agents trained in the model so far "
            "(dream_agents) or held box corners (held_corners), or remove the round"
        )
    if ("closed_loop" in dyna_block) == ("fine_tune" in dyna_block):
        raise ConfigError(f"{where} needs one tuning block: closed_loop or fine_tune")
    tuning = dyna_block.get("closed_loop") or dyna_block["fine_tune"]
    if "recent_from" in tuning or "recent_from" in tuning.get("trainer", {}):
        raise ConfigError(  # refused before any agent is trained or any step collected
            f"{where} sets recent_from: remove it, the round sets it to where its new episodes "
            f"start ({new_from})"
        )
    if "closed_loop" in dyna_block:
        config = ClosedLoopConfig(**tuning, recent_from=new_from)
        config.check()
    else:  # a typo in the block fails now, not after the round's agents and data
        if "updates" not in tuning or set(tuning) - {"updates", "seed", "trainer", "overrides"}:
            raise ConfigError(
                f"{where}.fine_tune takes updates (required), seed, trainer and overrides, "
                f"got {sorted(tuning)}"
            )
        TrainerConfig.from_dict(tuning.get("trainer", {}))
        build_config(spec["family"], spec["preset"], tuning.get("overrides"))
    folder = work / name / f"dyna_round{number}"
    base = folder / "base"
    if not (RunDirectory(base).holds_model() and (base / STARTS_FILE).is_file()):
        save_with_starts(model, store, base, int(spec["fit"].get("seed", 0)))
    train_dream_agents(dream_agents(spec, behaviour_work, number, only_round=number), base)
    store, provenance = collect(spec, name, work, behaviour_work, number)
    if "closed_loop" in dyna_block:
        out = folder / "closed_loop"
        if not RunDirectory(out).holds_model():
            policies = behaviour_policies(spec, behaviour_work, number)
            fine_tune_closed_loop(base, policies, out, config, device="cpu", store=store.directory)
        model = from_pretrained(out, device="cpu")
        model.config.noise_scale = config.noise_scale
    else:
        model = fit_world_model(
            spec["real_env"],
            f"{spec['family']}:{spec['preset']}",
            folder / "fine_tune",
            data_dir=store.directory,
            steps=int(tuning["updates"]),
            seed=int(tuning.get("seed", spec["fit"].get("seed", 0))),
            device="cpu",
            trainer={**tuning.get("trainer", {}), "recent_from": new_from},
            progress=False,
            init_from=base,
            **tuning.get("overrides", {}),
        )
    if "end_head" in spec["fit"]:
        model = end_head(spec, model, folder, store)
    return model, store, provenance


LOOP_FIELDS = {f.name for f in dataclasses.fields(DynaConfig)} - {"prior_model", "prior_data", "device"}


def check_loop_block(fit: dict) -> None:
    """Refuse a ``fit.dyna_loop`` block that names a field the loop does not have, lacks ``recipe`` or
    ``real_steps``, or follows a model no trainer can go on fitting (before any stage does work)."""
    block = fit["dyna_loop"]
    unknown, missing = set(block) - LOOP_FIELDS, {"recipe", "real_steps"} - set(block)
    if unknown or missing:
        raise ConfigError(
            f"fit.dyna_loop takes {sorted(LOOP_FIELDS)} (recipe and real_steps required; the prior and "
            f"the device are set by the stage), got unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    rounds = fit.get("dyna_rounds", [])
    if (rounds and "fine_tune" not in rounds[-1]) or (not rounds and "closed_loop" in fit):
        raise ConfigError(
            "fit.dyna_loop goes on fitting the last trainer run, and a closed-loop fine-tune is not one: "
            "end the stages before it with fit_steps or a fine_tune round"
        )
    if not rounds and "init_from" in fit:
        raise ConfigError(
            "fit.dyna_loop goes on fitting the last trainer run, and fit.init_from's shipped weights are "
            "not one: put a fine_tune round between them"
        )
    DynaConfig(**block, prior_model="the last trainer run", device="cpu").checked()  # its own checks


FIT_SETTINGS = ("fit_steps", "trainer", "overrides", "closed_loop")  # what fit.init_from stands in for


def check_init_from(fit: dict) -> Path | None:
    """The shipped checkpoint ``fit.init_from`` names (``None`` without one), refused where the spec
    also configures the fit it replaces, the folder holds no model, or nothing comes after it."""
    if "init_from" not in fit:
        return None
    folder = ENVS / fit["init_from"]
    clash = [key for key in FIT_SETTINGS if key in fit]
    if clash:
        raise ConfigError(
            f"fit.init_from ({fit['init_from']}) takes a shipped model as the fit: remove {clash}, "
            "which configure the fit it replaces"
        )
    if not RunDirectory(folder).holds_model():
        raise ConfigError(
            f"fit.init_from {fit['init_from']} holds no model: name a checkpoint folder under envs/, "
            "e.g. checkpoints/ensemble_walker_v5"
        )
    if not fit.get("dyna_rounds") and "dyna_loop" not in fit:
        raise ConfigError("fit.init_from adds nothing on its own: give dyna_rounds or a dyna_loop after it")
    return folder


def last_trainer_run(fit: dict, folder: Path) -> Path:
    """The run directory of the model fitted so far: the last Dyna round's ``fine_tune``, or ``run``."""
    rounds = fit.get("dyna_rounds", [])
    return folder / f"dyna_round{len(rounds)}" / "fine_tune" if rounds else folder / "run"


def dyna_loop(spec: dict, store: EpisodeStore, name: str, work: Path) -> tuple[Any, EpisodeStore, dict]:
    """``fit.dyna_loop`` from the last trainer run and ``store`` (its data), then the end head; a rerun
    goes on where a kill stopped it. Returns the model, the loop's store and its data source."""
    fit = spec["fit"]
    check_loop_block(fit)
    config = DynaConfig(
        **fit["dyna_loop"],
        prior_model=str(last_trainer_run(fit, work / name)),
        prior_data=str(store.directory),
        device="cpu",
    )
    out = work / name / "dyna_loop"
    run_dyna(spec["real_env"], f"{spec['family']}:{spec['preset']}", out, config, progress=False)
    loop_store = EpisodeStore(out / "data")
    model = from_pretrained(out / "model", device="cpu")
    if "end_head" in fit:
        model = end_head(spec, model, out, loop_store)
    # each split holds the prior's episodes first, then the loop's
    new = [e for split in SPLITS for e in loop_store.episodes(split)[store.num_episodes(split) :]]
    source = {
        "name": "dyna_loop",
        "kind": "dyna_loop",
        "algorithm": load_recipe(config.recipe).algorithm,
        "recipe": config.recipe,
        "seed": config.seed,
        **collected(new),
    }
    return model, loop_store, source


@contextmanager
def stage_clock(folder: Path, stage: str) -> Iterator[None]:
    """Add the seconds this call spends in ``stage`` to ``folder/seconds.json``, also when it is
    interrupted: a fit resumed over several calls then records all of them (a stage found finished
    adds next to nothing). Only a killed process's last stretch is lost."""
    started = time.perf_counter()
    try:
        yield
    finally:
        path = folder / STAGE_SECONDS
        seconds = json.loads(path.read_text()) if path.is_file() else {}
        seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - started, 1)
        atomic_write_files(folder, {STAGE_SECONDS: to_json_bytes(seconds)})


def fit_and_tune(spec: dict, store: EpisodeStore, name: str, work: Path, behaviour_work: Path) -> Any:
    """The fit on ``store``, then its closed-loop fine-tune and end head where the spec has them."""
    fit = spec["fit"]
    with stage_clock(work / name, "fit"):
        model = fit_world_model(
            spec["real_env"],
            f"{spec['family']}:{spec['preset']}",
            work / name / "run",
            data_dir=store.directory,
            steps=int(fit["fit_steps"]),
            seed=int(fit.get("seed", 0)),
            trainer={"validate_every": 1000, "checkpoint_every": 1000, **fit.get("trainer", {})},
            **fit.get("overrides", {}),
        )
    if "closed_loop" in fit:
        with stage_clock(work / name, "closed_loop"):
            model = closed_loop(spec, work / name, behaviour_work)
    if "end_head" in fit:
        with stage_clock(work / name, "end_head"):
            model = end_head(spec, model, work / name, store)
    return model


def ship(name: str, work: Path, behaviour_work: Path, stage: str) -> dict:
    spec_path = ENVS / f"{name}.json"
    spec = json.loads(spec_path.read_text())
    fit = spec["fit"]
    seed = int(fit.get("seed", 0))
    start = check_init_from(fit)
    if "dyna_loop" in fit:
        check_loop_block(fit)
    store, provenance = collect(spec, name, work, behaviour_work)
    spec["data_provenance"] = summarise(provenance)
    if stage == "data":
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
        return spec["data_provenance"]
    if start is not None:
        model = from_pretrained(start, device="cpu")
    else:
        model = fit_and_tune(spec, store, name, work, behaviour_work)
    for number in range(1, len(fit.get("dyna_rounds", [])) + 1):
        with stage_clock(work / name, f"dyna_round{number}"):
            model, store, provenance = dyna_round(spec, number, model, store, name, work, behaviour_work)
        spec["data_provenance"] = summarise(provenance)
    if "dyna_loop" in fit:
        with stage_clock(work / name, "dyna_loop"):
            model, store, loop_source = dyna_loop(spec, store, name, work)
        provenance = [*provenance, loop_source]
        spec["data_provenance"] = summarise(provenance)
    stage_seconds = json.loads((work / name / STAGE_SECONDS).read_text())
    model = model.to("cpu").eval()
    quality = evaluate_model(model, store.buffer("validation"), seed=seed)

    destination = ENVS / spec["checkpoint"]
    save_with_starts(model, store, destination, seed)

    check = write_check(spec, model, heldout_episodes(spec, store), destination)
    size_mb = sum(f.stat().st_size for f in destination.iterdir()) / 2**20
    spec["validation"] = {
        "heldout_check": check,
        "real_steps": store.num_steps(),
        "held_out_episodes": store.num_episodes("validation"),
        **({"fit_updates": int(fit["fit_steps"])} if "fit_steps" in fit else {"init_from": fit["init_from"]}),
        "fit_seconds_cpu": round(sum(stage_seconds.values()), 1),  # every call's, on this machine
        "fit_seconds_by_stage": stage_seconds,
        "parameters": model.num_parameters(),
        "checkpoint_mb": round(size_mb, 2),
        **quality.as_dict(),
    }
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    assert all((destination / f).is_file() for f in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE))
    return spec["validation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="spec file names (default: all)")
    parser.add_argument("--work", default="runs/shipped", help="where data and trainer state go")
    parser.add_argument("--behaviour-work", default="runs/behaviour", help="where the behaviour agents go")
    parser.add_argument(
        "--stage",
        choices=("data", "all", "check"),
        default="all",
        help="data: stop after the data; check: measure the weights in place again on their shipped "
        "held-out episodes (or ship some where there are none)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.names or sorted(p.stem for p in ENVS.glob("*.json"))
    for name in names:
        print(f"== {name}")
        if args.stage == "check":
            print(json.dumps(check_only(name), indent=2))
        else:
            print(json.dumps(ship(name, Path(args.work), Path(args.behaviour_work), args.stage), indent=2))
    total = sum(f.stat().st_size for f in (ENVS / "checkpoints").rglob("*") if f.is_file()) / 2**20
    print(f"all shipped weights: {total:.1f} MB (limit {SHIPPED_LIMIT_MB:.0f} MB)")
    if total > SHIPPED_LIMIT_MB:
        raise SystemExit("shipped weights exceed the size limit: choose smaller presets")


if __name__ == "__main__":
    main()
