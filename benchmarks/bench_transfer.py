"""Transfer benchmark: an agent trained only in the dream, judged in the real env.

For each task, in one run on one machine:

- the dream pipeline (``run_dyna``: random warm-up, fit, train the agent in the dream, collect with
  it, refit ...) within a real-step budget: the agent's real return, the real steps it used, its
  wall-clock time (collection and fitting included);
- the same SB3 algorithm trained on the real env for the same wall-clock time;
- the same algorithm on the real env for the same number of agent steps (capped by
  ``--max-baseline-seconds``; a capped run says so).

    python benchmarks/bench_transfer.py CartPole-v1 Pendulum-v1      # ~10-20 min on 2 cores
    python benchmarks/bench_transfer.py Walker2d-v5                  # hours on CPU
    python benchmarks/bench_transfer.py Walker2d-v5-prior --prior-model RUN --prior-data STORE

``Walker2d-v5-prior`` starts from a fitted model and the store it was fitted on (their real steps are
reported beside the run's own), draws half of each fit batch and of the dream's starts from the
agent's own data, and keeps the best agent by a 5-episode real evaluation each round; the best agent
and the last are both evaluated on 10 fresh episodes.

Targets: CartPole-v1 500 with <= 10k real steps; Pendulum-v1 >= -250 with <= 10k; Walker2d-v5
>= 3000 with <= 300k. The figures of every run: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from stable_baselines3.common.env_util import make_vec_env

from worldflux_gym.agents import evaluate_agent, load_agent, load_recipe
from worldflux_gym.agents.train import StopAfterSeconds, build_agent
from worldflux_gym.pipelines.dyna import DynaConfig, run_dyna

TASKS = {
    "CartPole-v1": dict(
        model="ensemble:small",
        config=DynaConfig(
            real_steps=10_000,
            recipe="ppo_cartpole",
            initial_steps=4_000,
            steps_per_round=2_000,
            fit_steps_per_round=1_500,
            agent_steps_per_round=40_000,
            starts="reset",
            dream_horizon=500,
        ),
    ),
    "Pendulum-v1": dict(
        model="ensemble:small",
        config=DynaConfig(
            real_steps=10_000,
            recipe="sac_pendulum",
            initial_steps=4_000,
            steps_per_round=2_000,
            fit_steps_per_round=1_500,
            agent_steps_per_round=12_000,
            starts="reset",
            dream_horizon=200,
        ),
    ),
    "Walker2d-v5": dict(
        model="ensemble:default",
        config=DynaConfig(
            real_steps=300_000,
            recipe="ppo_walker",
            initial_steps=20_000,
            steps_per_round=20_000,
            fit_steps_per_round=2_000,
            agent_steps_per_round=600_000,
            starts="branched",
            dream_horizon=100,
        ),
    ),
    "Walker2d-v5-prior": dict(
        env="Walker2d-v5",
        model="ensemble:default",
        config=DynaConfig(
            real_steps=130_000,
            recipe="ppo_walker_branched",
            initial_steps=0,
            steps_per_round=10_000,
            fit_steps_per_round=1_000,
            agent_steps_per_round=1_000_000,
            initial_agent_steps=6_000_000,
            own_share=0.5,
            eval_episodes=5,
        ),
    ),
}


def real_baseline(env_id: str, recipe_name: str, steps: int, seconds: float, seed: int, out: Path) -> dict:
    recipe = load_recipe(recipe_name)
    venv = make_vec_env(env_id, n_envs=min(recipe.num_envs, 8), seed=seed)
    agent = build_agent(recipe, venv, seed=seed)
    started = time.perf_counter()
    agent.learn(steps, callback=StopAfterSeconds(seconds))
    wall = time.perf_counter() - started
    agent.save(out)
    result = evaluate_agent(load_agent(out, algo=recipe.algorithm), env_id=env_id, episodes=10, seed=seed)
    return {
        "agent_steps": int(agent.num_timesteps),
        "seconds": round(wall, 1),
        "real_return": result.mean_return,
    }


def run_task(name: str, work: Path, seed: int, max_baseline_seconds: float, **prior: str | None) -> dict:
    task = TASKS[name]
    env_id = task.get("env", name)
    config = dataclasses.replace(task["config"], seed=seed, **prior)
    started = time.perf_counter()
    record = run_dyna(env_id, task["model"], work / "dyna", config, progress=False)
    dream_seconds = time.perf_counter() - started
    agent_path = work / "dyna" / "agent.zip"
    algorithm = load_recipe(config.recipe).algorithm
    # fresh resets, apart from the rounds' evaluation (worldflux_gym.pipelines.dyna.EVAL_SEED)
    dream = evaluate_agent(agent_path, env_id=env_id, episodes=10, seed=seed, algo=algorithm)
    best = None
    if config.eval_episodes:
        kept = evaluate_agent(
            work / "dyna" / "best_agent.zip", env_id=env_id, episodes=10, seed=seed, algo=algorithm
        )
        best = {**record["best"], "fresh_return": kept.mean_return, "fresh_std": kept.std_return}
    agent_steps = int(load_agent(agent_path, algo=load_recipe(config.recipe).algorithm).num_timesteps)
    same_time = real_baseline(env_id, config.recipe, 10**9, dream_seconds, seed, work / "same_time.zip")
    same_steps = real_baseline(
        env_id, config.recipe, agent_steps, max_baseline_seconds, seed, work / "same_steps.zip"
    )
    return {
        "env": env_id,
        "model": task["model"],
        "recipe": config.recipe,
        "dream": {
            "real_steps": record["rounds"][-1]["real_steps"] if record["rounds"] else config.initial_steps,
            "prior_steps": record.get("prior_steps", 0),
            "agent_steps": agent_steps,
            "seconds": round(dream_seconds, 1),
            "real_return": dream.mean_return,
            "best_agent": best,
            "rounds": record["rounds"],
        },
        "real_same_wall_clock": same_time,
        "real_same_agent_steps": {**same_steps, "capped": same_steps["agent_steps"] < agent_steps},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="*", default=["CartPole-v1", "Pendulum-v1"], choices=sorted(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-baseline-seconds", type=float, default=600.0)
    parser.add_argument("--prior-model", help="Walker2d-v5-prior: the fitted run to start from")
    parser.add_argument("--prior-data", help="Walker2d-v5-prior: the store it was fitted on")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if "Walker2d-v5-prior" in args.envs and not args.prior_model:
        parser.error("Walker2d-v5-prior needs --prior-model (and --prior-data unless the run holds data/)")
    prior = {"prior_model": args.prior_model, "prior_data": args.prior_data}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.envs:
            with_prior = prior if name.endswith("-prior") else {}
            results.append(
                run_task(name, Path(tmp) / name, args.seed, args.max_baseline_seconds, **with_prior)
            )
            r = results[-1]
            best = r["dream"]["best_agent"]
            kept = f" (kept best: round {best['round']}, {best['fresh_return']:.1f})" if best else ""
            print(
                f"{name}: dream pipeline {r['dream']['real_return']:.1f}{kept} real return with "
                f"{r['dream']['real_steps']} real steps (+{r['dream']['prior_steps']} prior) in "
                f"{r['dream']['seconds']:.0f} s | real env, same "
                f"wall-clock: {r['real_same_wall_clock']['real_return']:.1f} "
                f"({r['real_same_wall_clock']['agent_steps']} steps) | real env, same agent steps: "
                f"{r['real_same_agent_steps']['real_return']:.1f} "
                f"({r['real_same_agent_steps']['agent_steps']} steps"
                f"{', capped' if r['real_same_agent_steps']['capped'] else ''})",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
