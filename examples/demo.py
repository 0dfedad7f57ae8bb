"""The worldflux-gym demo: practise in a dream, then face reality.

1. ``gym.make("WorldFlux/Ensemble-Walker-v5")``: the shipped ensemble model of Walker2d-v5 as an env
   (fitted on random motion, on the checkpoints of three real-env runs, PPO and SAC, and on held
   corners of the action box);
2. train the dream's agent recipe inside it for ``--minutes`` of wall-clock time: PPO over a batch of short
   dreamed walks that branch from real states, with the model's uncertainty as a cost
   (``agents/ppo_walker_branched.json``);
3. evaluate the agent in the real Walker2d-v5 (and in the dream, to see the gap), next to a
   random policy;
4. write ``outputs/demo/dream_vs_real.mp4``: the dream beside the real env, same start, same actions;
5. print a summary table.

    python examples/demo.py                 # about five minutes on two CPU cores
    python examples/demo.py --minutes 1     # quicker, weaker agent
    python examples/demo.py --dream WorldFlux/Ensemble-Pendulum-v0 --minutes 2   # another shipped dream
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import worldflux_gym  # noqa: F401  (registers the WorldFlux/* ids)
from worldflux_gym.agents import evaluate_agent, load_agent, train_agent
from worldflux_gym.dream.registration import find_spec
from worldflux_gym.video import record_dream


def random_return(real_id: str, episodes: int, seed: int) -> float:
    env = gym.make(real_id)
    env.action_space.seed(seed)
    returns = []
    for k in range(episodes):
        env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def dream_return(dream_id: str, agent, episodes: int, seed: int) -> float:
    env = Monitor(gym.make(dream_id))  # SB3 reads episode returns from the Monitor wrapper
    env.reset(seed=seed)
    returns, _ = evaluate_policy(agent, env, n_eval_episodes=episodes, return_episode_rewards=True)
    env.close()
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dream", default="WorldFlux/Ensemble-Walker-v5", help="a shipped WorldFlux/* id")
    parser.add_argument("--minutes", type=float, default=4.0, help="agent training time in the dream")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes")
    parser.add_argument("--video-steps", type=int, default=300)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dream_id, spec = args.dream, find_spec(args.dream)
    real_id = spec.real_env

    env = gym.make(dream_id)
    print(
        f"{dream_id}: the shipped {spec.family}:{spec.preset} model of {real_id}, "
        f"fitted on {spec.validation.get('real_steps')} real steps"
    )
    print(f"  observation space {env.observation_space}, action space {env.action_space}")
    env.close()

    print(f"training an agent ({spec.recipe}) in the dream for {args.minutes:g} minutes ...")
    started = time.perf_counter()
    agent_path = out / f"{spec.recipe}_dream.zip"
    train_agent(
        dream_id, agent_path, seed=args.seed, steps=10**9, max_seconds=args.minutes * 60, overwrite=True
    )
    train_seconds = time.perf_counter() - started
    agent = load_agent(agent_path)

    print("evaluating in the real env and in the dream ...")
    real = evaluate_agent(agent_path, episodes=args.episodes, seed=args.seed)
    dreamed = dream_return(dream_id, agent, args.episodes, args.seed)
    baseline = random_return(real_id, args.episodes, args.seed)

    print("recording the dream beside the real env ...")
    video = record_dream(
        dream_id, out / "dream_vs_real.mp4", agent=agent, steps=args.video_steps, compare=True, overwrite=True
    )

    rows = [
        ("dreamed agent steps", f"{agent.num_timesteps:,}"),
        ("training time (s)", f"{train_seconds:.0f}"),
        ("dreamed steps per second (training)", f"{agent.num_timesteps / train_seconds:,.0f}"),
        ("return in the dream", f"{dreamed:.1f}"),
        (f"return in the real {real_id}", f"{real.mean_return:.1f} +- {real.std_return:.1f}"),
        (f"random policy in the real {real_id}", f"{baseline:.1f}"),
        ("video", str(video)),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
