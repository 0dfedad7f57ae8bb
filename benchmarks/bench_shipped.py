"""A shipped dream judged by what it is worth: agents trained in it, in reality; policies it never saw.

Two stages, each in one run on this machine, through the id's *default* options (``gym.make(id)``,
``make_sb3_vec_env(id)``), so the figures are what a user gets:

``transfer`` -- agents trained only in the dream, for ``--minutes`` of wall-clock each:

1. ``train_agent(id)`` with the id's recipe (``worldflux-gym train-agent ID``);
2. untuned SB3 PPO (``PPO("MlpPolicy", make_sb3_vec_env(id, num_envs=64))``);
3. beside them, the same untuned PPO on the real env for the same wall-clock time.

Each agent's real return (``--real-episodes`` deterministic episodes) is printed next to the
dream's own estimate of it (the same number of dreamed episodes through ``gym.make(id)``) and
their ratio. The real steps the dream's data cost are read from the spec's ``data_provenance``
(collection) and the behaviour runs' records (the real steps that trained the behaviour agents).

``audit`` -- graded policies the dream's data never saw: every checkpoint of the spec's
``held_out_agents`` runs (other seeds, another algorithm; ``envs/behaviour.py`` trains them if they
are missing) and a random policy. Each is run for ``--episodes`` real and dreamed episodes
(``gym.make(id)``, default options); printed: each policy's two means, the Spearman correlation of
the two rankings, and the mean absolute error as a share of the real returns' spread.

    python benchmarks/bench_shipped.py WorldFlux/Ensemble-Walker-v1 --stage audit
    python benchmarks/bench_shipped.py WorldFlux/Ensemble-Walker-v1 --stage transfer --minutes 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO

import worldflux_gym  # noqa: F401  (registers the ids)
from worldflux_gym.agents.train import StopAfterSeconds, train_agent
from worldflux_gym.audit.stats import spearman
from worldflux_gym.dream import make_sb3_vec_env
from worldflux_gym.dream.registration import find_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))
from behaviour import BehaviourRun, train_behaviour  # noqa: E402


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
    behaviour = sum(int(r["steps"]) for r in spec.fit.get("data", {}).get("agents", []))
    return {"collected": provenance.get("real_steps"), "behaviour_training": behaviour}


def transfer(dream_id: str, minutes: float, episodes: int, work: Path) -> None:
    spec = find_spec(dream_id)
    seconds = minutes * 60
    real = gym.make(spec.real_env)
    dream = gym.make(dream_id)
    rows = []

    started = time.perf_counter()
    agent = train_agent(dream_id, work / "recipe.zip", max_seconds=seconds, progress=False, tensorboard=False)
    rows.append(("recipe in the dream", agent, time.perf_counter() - started))

    started = time.perf_counter()
    agent = PPO("MlpPolicy", make_sb3_vec_env(dream_id, num_envs=64), seed=0, device="cpu", verbose=0)
    agent.learn(10**10, callback=StopAfterSeconds(seconds))
    rows.append(("untuned PPO in the dream (64 envs)", agent, time.perf_counter() - started))

    started = time.perf_counter()
    agent = PPO("MlpPolicy", gym.make(spec.real_env), seed=0, device="cpu", verbose=0)
    agent.learn(10**10, callback=StopAfterSeconds(seconds))
    rows.append(("untuned PPO on the real env", agent, time.perf_counter() - started))

    print(
        f"\n{dream_id}: {minutes:g} min per agent, {episodes} episodes each, "
        f"{torch.get_num_threads()} threads"
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


def audit(dream_id: str, episodes: int, behaviour_work: Path) -> None:
    spec = find_spec(dream_id)
    real = gym.make(spec.real_env)
    dream = gym.make(dream_id)
    space = real.action_space
    space.seed(0)
    policies = {"random": lambda obs: space.sample()}
    for r in spec.fit.get("held_out_agents", []):
        run = BehaviourRun(spec.real_env, r["algorithm"], int(r["seed"]), int(r["steps"]), int(r["every"]))
        cls = getattr(stable_baselines3, run.algorithm)
        for steps, path in train_behaviour(run, behaviour_work).items():
            policies[f"{run.name}_{steps // 1000}k"] = sb3_policy(cls.load(path, device="cpu"))
    print(f"\n{dream_id}: {len(policies)} held-out policies, {episodes} real and dreamed episodes each")
    print(f"{'policy':<16} {'real':>16} {'dream':>16}")
    real_means, dream_means = [], []
    for name, policy in policies.items():
        r = returns_of(policy, real, episodes, seed=20_000)
        d = returns_of(policy, dream, episodes, seed=20_000)
        real_means.append(r.mean())
        dream_means.append(d.mean())
        print(f"{name:<16} {r.mean():8.1f} +- {r.std():5.1f} {d.mean():8.1f} +- {d.std():5.1f}", flush=True)
    real_means, dream_means = np.asarray(real_means), np.asarray(dream_means)
    spread = real_means.max() - real_means.min()
    error = float(np.mean(np.abs(dream_means - real_means)))
    print(
        f"Spearman {spearman(dream_means, real_means):.3f} (target 0.9); mean abs error {error:.1f} = "
        f"{100 * error / spread:.1f}% of the real spread {spread:.1f} (target 15%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dream_id")
    parser.add_argument("--stage", choices=("transfer", "audit"), required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="training time per agent (transfer)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per policy (audit)")
    parser.add_argument("--real-episodes", type=int, default=10, help="episodes per agent (transfer)")
    parser.add_argument("--work", default="runs/bench_shipped")
    parser.add_argument("--behaviour-work", default="runs/behaviour")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.stage == "transfer":
        transfer(args.dream_id, args.minutes, args.real_episodes, work)
    else:
        audit(args.dream_id, args.episodes, Path(args.behaviour_work))


if __name__ == "__main__":
    main()
