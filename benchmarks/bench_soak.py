"""Soak: a dream vector env stepped for minutes, with its memory and speed sampled along the way.

``gym.make_vec("WorldFlux/Ensemble-Walker-v3", num_envs=256)`` is stepped with random actions for
``--minutes`` (default 10); episodes end and autoreset as they do in training, and every
``--reset-every`` seconds the whole batch is reset with a new seed too. Every ``--every`` seconds
(default 10) the process's resident memory (RSS) and the steps/s since the last sample are printed.
At the end: RSS growth from the first sample to the last and over the second half, and the spread
of steps/s (median, min, max, and the last third's median against the first third's). Memory is
flat when it stops growing after the first samples; speed is steady when the last third runs at
the first third's rate (the machine is shared: compare within the run, not across runs).

    python benchmarks/bench_soak.py [--minutes 10] [--num-envs 256] [--id WorldFlux/Ensemble-Walker-v3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

import worldflux_gym  # noqa: F401  (registers the ids)


def rss_mib() -> float:
    """Resident memory of this process now (Linux /proc; elsewhere the peak from ``resource``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", default="WorldFlux/Ensemble-Walker-v3")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--reset-every", type=float, default=30.0, help="seconds between full resets")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env = gym.make_vec(args.id, num_envs=args.num_envs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    env.action_space.seed(0)
    samples: list[tuple[float, float, float, int]] = []  # (seconds, rss MiB, steps/s, episodes ended)
    started = last_sample = last_reset = time.perf_counter()
    steps = ended = resets = 0
    print(f"{args.id}, num_envs={args.num_envs}, {args.minutes} min, {torch.get_num_threads()} threads")
    print(f"{'t (s)':>7} {'RSS MiB':>9} {'steps/s':>10} {'episodes ended':>15}")
    while True:
        now = time.perf_counter()
        if now - started >= args.minutes * 60:
            break
        if now - last_reset >= args.reset_every:
            resets += 1
            env.reset(seed=int(rng.integers(2**31)))
            last_reset = now
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += args.num_envs
        ended += int(np.count_nonzero(terminated | truncated))
        if now - last_sample >= args.every:
            rate = steps / (now - last_sample)
            samples.append((now - started, rss_mib(), rate, ended))
            print(f"{now - started:7.0f} {samples[-1][1]:9.1f} {rate:10,.0f} {ended:15,}", flush=True)
            steps, last_sample = 0, now
    env.close()

    rss = [s[1] for s in samples]
    rates = [s[2] for s in samples]
    third = max(1, len(rates) // 3)
    half = len(rss) // 2
    print(f"\nsamples: {len(samples)}, full resets: {resets}, episodes ended: {samples[-1][3]:,}")
    print(
        f"RSS: first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB (growth {rss[-1] - rss[0]:+.1f} MiB); "
        f"second half {rss[half]:.1f} -> {rss[-1]:.1f} MiB ({rss[-1] - rss[half]:+.1f} MiB)"
    )
    steady = statistics.median(rates[-third:]) / statistics.median(rates[:third])
    print(
        f"steps/s: median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}); "
        f"last third / first third: {steady:.2f}"
    )


if __name__ == "__main__":
    main()
