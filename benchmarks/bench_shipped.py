"""A shipped dream judged by what it is worth: agents trained in it, in reality; policies it never saw.

Two stages, each in one run on this machine, through the id's *default* options (``gym.make(id)``,
``make_sb3_vec_env(id)``), so the figures are what a user gets:

``transfer`` -- agents trained only in the dream, for ``--minutes`` of wall-clock each:

1. ``train_agent(id)`` with the id's recipe (``worldflux-gym train-agent ID``);
2. untuned SB3 PPO (``PPO("MlpPolicy", make_sb3_vec_env(id, num_envs=64))``);
3. beside them, the same untuned PPO on the real env for the same wall-clock time.

Each agent's real return (``--real-episodes`` deterministic episodes) is printed next to the
dream's own estimate of it (the same number of dreamed episodes through ``gym.make(id)``; for a
training variant such as ``Ensemble-Walker-Branched-v5``, through its plain id) and their ratio.
The real steps the dream's data cost are read from the spec's ``data_provenance`` (collection)
and the behaviour runs' records (the real steps that trained the behaviour agents).

``tune`` -- the ensemble's ``noise_scale`` chosen on the policies *in* the data (the data runs'
checkpoints, frozen in ``envs/data_runs/`` where they are, and random; rule in :func:`tune`), before
the held-out figure is taken.

``audit`` -- graded policies the dream's data never saw: every checkpoint of the spec's
``held_out_agents`` runs (other seeds, another algorithm; frozen in ``envs/held_out/``, the same
policies everywhere; ``envs/behaviour.py`` trains a run that is not; ``--held-out-runs`` names other
frozen runs, e.g. a second draw of walkers) and a random policy. Each is
run for ``--episodes`` real and ``--dreamed-episodes`` dreamed episodes (``gym.make(id)``, or one
``gym.make_vec(id)`` batch with ``--vector``; default options, ``--noise-scale`` dreams at another
scale). A sampled dream's mean over a few episodes is noisy, so many dreamed episodes (cheap in one
batch) judge the dream rather than its dice. Printed: each policy's two means, the Spearman
correlation of the two rankings, and the mean absolute error as a share of the real returns' spread.

    python benchmarks/bench_shipped.py WorldFlux/Ensemble-Walker-v3 --stage audit
    python benchmarks/bench_shipped.py WorldFlux/Ensemble-Walker-v3 --stage transfer --minutes 30
    python benchmarks/bench_shipped.py WorldFlux/Ensemble-Walker-v3 --stage tune --checkpoint RUN
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

import worldflux_gym  # noqa: F401  (registers the ids)
from worldflux_gym.agents.train import StopAfterSeconds, train_agent
from worldflux_gym.audit.stats import spearman
from worldflux_gym.core.checkpoint import atomic_write_files, to_json_bytes
from worldflux_gym.dream import make_sb3_vec_env
from worldflux_gym.dream.registration import find_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from behaviour import DATA_RUNS, HELD_OUT, BehaviourRun, load_checkpoint, run_checkpoints  # noqa: E402
from fit_shipped import data_run_blocks  # noqa: E402


def returns_of(policy, env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes of ``policy`` (obs -> action) in ``env``, seeded."""
    out = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return np.asarray(out)


def sb3_policy(agent):
    return lambda obs: agent.predict(obs, deterministic=True)[0]


def data_cost(spec) -> dict:
    """Real steps collected for the dream's data, and real steps that trained its behaviour agents."""
    provenance = json.loads(spec.path.read_text()).get("data_provenance", {})
    behaviour = sum(int(r["steps"]) for r in data_run_blocks(spec.fit)) if "data" in spec.fit else 0
    return {"collected": provenance.get("real_steps"), "behaviour_training": behaviour}


TRANSFER_AGENTS = ("recipe", "untuned", "real")


def transfer(
    dream_id: str, minutes: float, episodes: int, work: Path, agents: list[str], checkpoint: Path | None
) -> None:
    spec = find_spec(dream_id)
    seconds = minutes * 60
    options = checkpoint_option(checkpoint)
    real = gym.make(spec.real_env)
    # a training variant's short penalised dreams are no estimate: its plain id's are
    estimate_id = spec.variant_of or dream_id
    dream = gym.make(estimate_id, **options)
    rows = []
    if "recipe" in agents:
        started = time.perf_counter()
        agent = train_agent(
            dream_id, work / "recipe.zip", steps=10**10, max_seconds=seconds, progress=False,
            tensorboard=False, overwrite=True, checkpoint=checkpoint,
        )  # fmt: skip
        rows.append(("recipe in the dream", agent, time.perf_counter() - started))
    if "untuned" in agents:
        started = time.perf_counter()
        venv = make_sb3_vec_env(dream_id, num_envs=64, **options)
        agent = PPO("MlpPolicy", venv, seed=0, device="cpu", verbose=0)
        agent.learn(10**10, callback=StopAfterSeconds(seconds))
        rows.append(("untuned PPO in the dream (64 envs)", agent, time.perf_counter() - started))
    if "real" in agents:
        started = time.perf_counter()
        agent = PPO("MlpPolicy", gym.make(spec.real_env), seed=0, device="cpu", verbose=0)
        agent.learn(10**10, callback=StopAfterSeconds(seconds))
        rows.append(("untuned PPO on the real env", agent, time.perf_counter() - started))

    print(
        f"\n{dream_id}: {minutes:g} min per agent, {episodes} episodes each, "
        f"{torch.get_num_threads()} threads; dreamed returns from {estimate_id}"
    )
    print(f"{'agent':<36} {'steps':>11} {'real':>16} {'dream':>16} {'dream/real':>10}")
    for name, agent, took in rows:
        r = returns_of(sb3_policy(agent), real, episodes, seed=10_000)
        d = returns_of(sb3_policy(agent), dream, episodes, seed=10_000)
        ratio = d.mean() / r.mean() if r.mean() else float("nan")
        print(
            f"{name:<36} {agent.num_timesteps:>11,} {r.mean():8.1f} +- {r.std():5.1f} "
            f"{d.mean():8.1f} +- {d.std():5.1f} {ratio:10.2f}   ({took:.0f} s)"
        )
    print(f"real steps the dream's data cost: {data_cost(spec)}")


# the first seed of every audited episode, real and dreamed (part of the real-returns cache's key)
EPISODE_SEED = 20_000


class Policy(NamedTuple):
    act: Callable[[np.ndarray], np.ndarray]  # a batch of observations -> a batch of actions
    fingerprint: str  # what it is, for the real-returns cache: its weights' sha256, or "random"

    def act_one(self, obs: np.ndarray) -> np.ndarray:
        return self.act(obs[None])[0]


def policy_set(spec, runs: list[dict], behaviour_work: Path, frozen: Path) -> dict[str, Policy]:
    """A random policy and every checkpoint of ``runs`` (frozen in the folder ``frozen``, else trained
    here if missing), by name."""
    space = gym.make(spec.real_env).action_space
    space.seed(0)
    policies = {"random": Policy(lambda obs: np.stack([space.sample() for _ in range(len(obs))]), "random")}
    for r in runs:
        run = BehaviourRun(spec.real_env, r["algorithm"], int(r["seed"]), int(r["steps"]), int(r["every"]))
        for steps, path in run_checkpoints(run, behaviour_work, frozen).items():
            agent = load_checkpoint(path, run.algorithm, run.env_id, run.seed)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            policies[f"{run.name}_{steps // 1000}k"] = Policy(sb3_policy(agent), digest)
    return policies


def first_episode_returns(policy, envs: gym.vector.VectorEnv, seed: int) -> np.ndarray:
    """Each row's first episode return under ``policy`` (one episode per row of ``envs``)."""
    obs, _ = envs.reset(seed=seed)
    totals = np.zeros(envs.num_envs)
    done = np.zeros(envs.num_envs, dtype=bool)
    while not done.all():
        obs, reward, terminated, truncated, _ = envs.step(policy(obs))
        totals += np.where(done, 0.0, reward)
        done |= terminated | truncated
    return totals


def dream_means(
    policies: dict[str, Policy], dream_id: str, episodes: int, vector: bool, **options
) -> np.ndarray:
    """Mean dreamed return of each policy: ``episodes`` episodes through ``gym.make(dream_id)``
    (default options, or ``options``), or as one ``gym.make_vec(dream_id, num_envs=episodes)`` batch."""
    if vector:
        envs = gym.make_vec(dream_id, num_envs=episodes, **options)
        return np.asarray(
            [first_episode_returns(p.act, envs, seed=EPISODE_SEED).mean() for p in policies.values()]
        )
    env = gym.make(dream_id, **options)
    return np.asarray([returns_of(p.act_one, env, episodes, EPISODE_SEED).mean() for p in policies.values()])


def checkpoint_option(checkpoint: Path | None) -> dict:
    return {} if checkpoint is None else {"checkpoint": checkpoint}


def real_means(policies: dict[str, Policy], real_env: str, episodes: int, cache: Path) -> np.ndarray:
    """Mean real return of each policy over ``episodes`` seeded episodes.

    The same frozen policies are judged against every candidate dream, and their real episodes are
    most of an audit's time, so each policy's returns are kept in ``cache/real_returns.json``, keyed
    by what determines them: the env, the policy's weights, the episodes and seed, the versions of
    gymnasium and torch. The random policy is never kept: its actions depend on the draws before it."""
    path = cache / "real_returns.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    versions = f"gymnasium={gym.__version__} torch={torch.__version__}"
    env = gym.make(real_env)
    means = []
    for policy in policies.values():
        key = f"{real_env} {policy.fingerprint} episodes={episodes} seed={EPISODE_SEED} {versions}"
        if policy.fingerprint == "random" or key not in kept:
            returns = returns_of(policy.act_one, env, episodes, EPISODE_SEED)
            if policy.fingerprint != "random":
                kept[key] = returns.tolist()
                atomic_write_files(cache, {path.name: to_json_bytes(kept)})
        else:
            returns = np.asarray(kept[key])
        means.append(returns.mean())
    return np.asarray(means)


def parse_runs(text: str) -> list[dict]:
    """``"PPO:4:1000000:100000,SAC:2:200000:50000"`` (algorithm:seed:steps:every) as run entries."""
    runs = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise SystemExit(
                f"error: --held-out-runs entry {item!r} is not ALGORITHM:SEED:STEPS:EVERY "
                "(e.g. PPO:4:1000000:100000)"
            )
        algorithm, seed, steps, every = parts
        runs.append({"algorithm": algorithm, "seed": int(seed), "steps": int(steps), "every": int(every)})
    return runs


def fidelity(dream: np.ndarray, real: np.ndarray) -> tuple[float, float]:
    """(Spearman of the two rankings, mean absolute error as a share of the real spread)."""
    spread = real.max() - real.min()
    return spearman(dream, real), float(np.mean(np.abs(dream - real)) / spread)


def audit(
    dream_id: str,
    behaviour_work: Path,
    work: Path,
    episodes: int,
    dreamed_episodes: int,
    vector: bool,
    held_out_from: str | None,
    held_out_runs: list[dict] | None,
    options: dict,
) -> None:
    """``options``: dream options beside the id's defaults (``checkpoint_option``, ``noise_scale``);
    ``held_out_runs``: judge on these runs instead of the spec's ``held_out_agents``."""
    spec = find_spec(dream_id)
    source = find_spec(held_out_from) if held_out_from else spec
    if source.real_env != spec.real_env:
        raise SystemExit(f"error: {held_out_from} is a dream of {source.real_env}, not of {spec.real_env}")
    held_out = held_out_runs or source.fit.get("held_out_agents", [])
    if not held_out:
        raise SystemExit(
            f"error: the spec of {source.id} names no fit.held_out_agents to audit on; pass "
            "--held-out-from ID to use another id's (e.g. WorldFlux/Ensemble-Walker-v3 for Walker2d)"
        )
    dream_env, real_env = gym.make(dream_id, **options), gym.make(spec.real_env)
    dream_shape, real_shape = dream_env.observation_space.shape, real_env.observation_space.shape
    dream_env.close()
    real_env.close()
    if dream_shape != real_shape:
        raise SystemExit(
            f"error: {dream_id} dreams in a latent space (observations {dream_shape}), not in "
            f"{spec.real_env}'s observations {real_shape}: the held-out policies act on real "
            "observations and cannot run there, so this audit does not apply to it"
        )
    policies = policy_set(spec, held_out, behaviour_work, HELD_OUT)
    how = f"make_vec(num_envs={dreamed_episodes})" if vector else "gym.make"
    print(
        f"\n{dream_id}: {len(policies)} held-out policies, {episodes} real and {dreamed_episodes} "
        f"dreamed episodes each ({how}; options {options or 'none'})"
    )
    real = real_means(policies, spec.real_env, episodes, work)
    dream = dream_means(policies, dream_id, dreamed_episodes, vector, **options)
    print(f"{'policy':<16} {'real':>9} {'dream':>9}")
    for name, r, d in zip(policies, real, dream):
        print(f"{name:<16} {r:9.1f} {d:9.1f}")
    rho, error = fidelity(dream, real)
    print(
        f"Spearman {rho:.3f} (target 0.9); mean abs error {100 * error:.1f}% of the real spread (target 15%)"
    )


def tune(
    dream_id: str,
    behaviour_work: Path,
    work: Path,
    episodes: int,
    dreamed_episodes: int,
    scales: list[float],
    checkpoint: Path | None,
) -> None:
    """Choose the ensemble's ``noise_scale`` on the policies *in* the data (never the held-out ones).

    The rule, fixed before any figure: among the scales whose Spearman is >= 0.9, the smallest
    error; without one, the largest Spearman."""
    spec = find_spec(dream_id)
    policies = policy_set(spec, data_run_blocks(spec.fit), behaviour_work, DATA_RUNS)
    real = real_means(policies, spec.real_env, episodes, work)
    results = {}
    for scale in scales:
        options = {**checkpoint_option(checkpoint), "noise_scale": scale}
        dream = dream_means(policies, dream_id, dreamed_episodes, vector=True, **options)
        results[scale] = fidelity(dream, real)
        print(
            f"noise_scale {scale}: Spearman {results[scale][0]:.3f}, error {100 * results[scale][1]:.1f}%",
            flush=True,
        )
    good = [s for s, (rho, _) in results.items() if rho >= 0.9]
    choice = min(good, key=lambda s: results[s][1]) if good else max(results, key=lambda s: results[s][0])
    print(f"chosen by the rule: noise_scale {choice}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dream_id")
    parser.add_argument("--stage", choices=("transfer", "audit", "tune"), required=True)
    parser.add_argument("--agents", default=",".join(TRANSFER_AGENTS), help="transfer: which of them")
    parser.add_argument("--vector", action="store_true", help="audit: dream as one make_vec batch")
    parser.add_argument("--noise-scales", default="0,0.35,0.5,1", help="tune: the candidates")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time per agent (transfer)")
    parser.add_argument("--episodes", type=int, default=10, help="real episodes per policy (audit, tune)")
    parser.add_argument(
        "--dreamed-episodes", type=int, help="audit, tune: dreamed episodes per policy (default: --episodes)"
    )
    parser.add_argument("--real-episodes", type=int, default=10, help="episodes per agent (transfer)")
    parser.add_argument(
        "--work", default="runs/bench_shipped", help="its files (one bench_shipped at a time per folder)"
    )
    parser.add_argument("--behaviour-work", default="runs/behaviour")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--checkpoint", type=Path, help="judge these weights (a fitted run) instead of the shipped ones"
    )
    parser.add_argument(
        "--held-out-from", metavar="ID", help="audit: the held-out agents of this id's spec (same real env)"
    )
    parser.add_argument(
        "--held-out-runs",
        metavar="RUNS",
        help="audit: these frozen runs instead of the spec's held-out agents, ALGORITHM:SEED:STEPS:EVERY "
        "comma-separated (envs/held_out/; e.g. a second draw of walkers)",
    )
    parser.add_argument(
        "--noise-scale", type=float, help="audit: dream at this noise_scale instead of the id's default"
    )
    args = parser.parse_args()
    if args.held_out_from and args.held_out_runs:
        parser.error("--held-out-from and --held-out-runs both name the held-out policies: pass one of them")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dreamed = args.dreamed_episodes or args.episodes
    if args.stage == "transfer":
        agents = args.agents.split(",")
        transfer(args.dream_id, args.minutes, args.real_episodes, work, agents, args.checkpoint)
    elif args.stage == "audit":
        options = checkpoint_option(args.checkpoint)
        if args.noise_scale is not None:
            options["noise_scale"] = args.noise_scale
        audit(
            args.dream_id,
            Path(args.behaviour_work),
            work,
            args.episodes,
            dreamed,
            args.vector,
            args.held_out_from,
            parse_runs(args.held_out_runs) if args.held_out_runs else None,
            options,
        )
    else:
        scales = [float(s) for s in args.noise_scales.split(",")]
        tune(args.dream_id, Path(args.behaviour_work), work, args.episodes, dreamed, scales, args.checkpoint)


if __name__ == "__main__":
    main()
