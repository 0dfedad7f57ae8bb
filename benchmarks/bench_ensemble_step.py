"""Imagination throughput of the ensemble family: transitions/s of ``transition`` + ``decode``.

Measures the ``ensemble:default`` preset (7 members, 5 elites, 4x200) on Walker2d-v5's spaces, at
several batch sizes, with ``report_uncertainty`` on (all elites run on every row) and off (each row
runs only its own member). Peer: mbrl-lib's whole ModelEnv step over the same ensemble, measured side
by side by ``bench_dream_env.py``. The figures of every run: ``benchmarks/RESULTS.md``.

    OMP_NUM_THREADS=2 python benchmarks/bench_ensemble_step.py [--threads 2] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import torch

from worldflux_gym.core import create_world_model


def steps_per_second(
    model, batch: int, report_uncertainty: bool, seconds: float, deterministic: bool
) -> float:
    """Transitions/s of an imagined rollout of ``batch`` rows fed back into itself."""
    generator = torch.Generator().manual_seed(0)
    state = model.encode(torch.randn(batch, model.obs_dim))
    actions = torch.rand(64, batch, 6) * 2 - 1  # pre-drawn: we time the model, not the action sampler

    def step(i: int):
        nonlocal state
        state = model.transition(
            state,
            actions[i % 64],
            deterministic=deterministic,
            generator=generator,
            report_uncertainty=report_uncertainty,
        )
        model.decode(state)
        # Untrained weights drift; restart from real-sized inputs so timing is not about inf/nan.
        if i % 16 == 15:
            state = model.encode(torch.randn(batch, model.obs_dim))

    with torch.inference_mode():
        for i in range(3):  # warm-up
            step(i)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(steps)
            steps += 1
        elapsed = time.perf_counter() - start
    return steps * batch / elapsed


def forward_all_members_per_second(model, batch: int, seconds: float) -> float:
    """Reference under the same load: a bare forward of all members (7 members of 4x200 at batch
    1024: ~42k transitions/s on an idle 2-core machine)."""
    x = torch.randn(model.config.members, batch, model.input_mean.shape[0])
    with torch.inference_mode():
        model._forward(x)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model._forward(x)
            steps += 1
        elapsed = time.perf_counter() - start
    return steps * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per cell")
    parser.add_argument("--batches", default="1,64,1024,16384")
    parser.add_argument("--deterministic", action="store_true", help="time the mean-of-elites step")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    env = gym.make("Walker2d-v5")
    model = create_world_model(f"ensemble:{args.preset}", env.observation_space, env.action_space).eval()
    print(
        f"ensemble:{args.preset} ({model.config.members} members, {model.config.elites} elites, "
        f"{model.config.layers}x{model.config.hidden}), Walker2d-v5 spaces, {args.threads} threads, "
        f"{'deterministic' if args.deterministic else 'sampling'}, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'batch':>7} | {'uncertainty on':>15} | {'uncertainty off':>15} | speed-up | "
        f"{'all-members fwd':>15} | off / (members x fwd)"
    )
    for batch in (int(b) for b in args.batches.split(",")):
        on = steps_per_second(model, batch, True, args.seconds, args.deterministic)
        off = steps_per_second(model, batch, False, args.seconds, args.deterministic)
        ref = forward_all_members_per_second(model, batch, args.seconds)
        # The last column is load-independent: mbrl-lib's ModelEnv reaches ~0.98 of a one-member
        # forward per row (289k/s against 7 x 42k/s at batch 1024/1029 on an idle 2-core machine).
        ratio = off / (model.config.members * ref)
        print(
            f"{batch:>7} | {on:>13,.0f}/s | {off:>13,.0f}/s | {off / on:>7.1f}x | "
            f"{ref:>13,.0f}/s | {ratio:.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
