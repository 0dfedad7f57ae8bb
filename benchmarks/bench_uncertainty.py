"""What uncertainty costs in the latent families: transitions/s with ``report_uncertainty`` off and on.

The ``dreamer`` and ``tdmpc2`` families report uncertainty through a few small Plan2Explore heads
(``uncertainty_heads``, ``uncertainty_hidden`` in their configs). With ``report_uncertainty=False``
the heads are skipped; with ``True`` every row runs all of them. This times ``transition`` +
``decode`` of each preset on Walker2d-v5's spaces at one batch size, both settings side by side in
one run (interleaved, best of ``--repeats`` windows each, so a busy machine hits both alike), plus
the same preset built without heads (``uncertainty_heads=0``, what older checkpoints load as).

    python benchmarks/bench_uncertainty.py [--threads 1] [--batch 1024] [--presets dreamer:small,tdmpc2:small]

Measured on the project machine (2026-12-03; 2 cores shared with fits, load average 2.4 -> 3.6;
1 thread, batch 1024, best of 5 x 1.5 s), transitions/s without heads / heads, uncertainty off / on:

    dreamer:small    10.4k / 10.2k /  8.5k   on/off 0.83
    tdmpc2:small     22.8k / 22.7k / 18.8k   on/off 0.83
    dreamer:default   6.1k /  6.2k /  5.2k   on/off 0.84
    tdmpc2:default   10.8k / 10.8k /  9.1k   on/off 0.84

The default path (off) costs the same as a model without heads (0.99-1.01); asking for the
uncertainty costs ~20% more time per step (5 heads of 2x64 beside the world model's step).
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import torch

from worldflux_gym.core import create_world_model


def steps_per_second(model, batch: int, report_uncertainty: bool, seconds: float) -> float:
    """Transitions/s of an imagined rollout of ``batch`` rows fed back into itself (sampled steps)."""
    generator = torch.Generator().manual_seed(0)
    start_obs = torch.randn(batch, *model.observation_space.shape)
    actions = torch.rand(64, batch, *model.action_space.shape) * 2 - 1  # pre-drawn, Walker's [-1, 1]
    with torch.inference_mode():
        state = model.encode(start_obs)
        for i in range(3):  # warm-up
            state = model.transition(
                state, actions[i], generator=generator, report_uncertainty=report_uncertainty
            )
            model.decode(state)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            state = model.transition(
                state, actions[steps % 64], generator=generator, report_uncertainty=report_uncertainty
            )
            model.decode(state)
            steps += 1
        elapsed = time.perf_counter() - start
    return steps * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="dreamer:small,tdmpc2:small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per cell")
    parser.add_argument("--repeats", type=int, default=3, help="windows per cell; the best counts")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    env = gym.make("Walker2d-v5")
    print(
        f"Walker2d-v5 spaces, batch {args.batch}, {args.threads} thread(s), sampled transition + decode, "
        f"best of {args.repeats} x {args.seconds:.1f} s, load average before: {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'preset':>14} | {'heads':>9} | {'no heads':>11} | {'uncert. off':>11} | {'uncert. on':>11} | "
        f"on / off | off / no heads"
    )
    for name in args.presets.split(","):
        torch.manual_seed(0)
        model = create_world_model(name, env.observation_space, env.action_space).eval()
        bare = create_world_model(name, env.observation_space, env.action_space, uncertainty_heads=0).eval()
        bare.load_state_dict(model.state_dict(), strict=False)
        best = {"bare": 0.0, "off": 0.0, "on": 0.0}
        for _ in range(args.repeats):
            best["bare"] = max(best["bare"], steps_per_second(bare, args.batch, False, args.seconds))
            best["off"] = max(best["off"], steps_per_second(model, args.batch, False, args.seconds))
            best["on"] = max(best["on"], steps_per_second(model, args.batch, True, args.seconds))
        c = model.config
        heads = f"{c.uncertainty_heads}x{c.uncertainty_hidden}"
        print(
            f"{name:>14} | {heads:>9} | {best['bare']:>9,.0f}/s | {best['off']:>9,.0f}/s | "
            f"{best['on']:>9,.0f}/s | {best['on'] / best['off']:>8.2f} | {best['off'] / best['bare']:.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
