"""How well each family models Walker2d-v5, on held-out real episodes.

One data set for every family (seeded random actions at mixed action scales, so that held-out
episodes are long enough for 50-step open-loop windows), one fit per ``family:preset`` of
``--updates`` updates (its wall-clock time is reported), then ``training/model_quality.py``'s
figures: open-loop observation error at horizons 1, 5, 10, 25, 50 relative to the persistence
baseline (latent space for TD-MPC2), reward correlation, termination balanced accuracy, and the
fitting time.

    python benchmarks/bench_model_quality.py                          # ci presets, ~5 min
    python benchmarks/bench_model_quality.py --models ensemble:default dreamer:small tdmpc2:small \
        --real-steps 50000 --updates 3000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium as gym

from worldflux_gym.data.collect import collect_to_store, scaled_random_policy
from worldflux_gym.data.store import EpisodeStore
from worldflux_gym.training import fit_world_model
from worldflux_gym.training.model_quality import evaluate_model

HORIZONS = (1, 5, 10, 25, 50)
SCALES = (1.0, 0.5, 0.2, 0.05)


def collect(env_id: str, steps: int, directory: Path, seed: int) -> EpisodeStore:
    action_space = gym.make(env_id).action_space
    for i, scale in enumerate(SCALES):
        policy = None if scale == 1.0 else scaled_random_policy(action_space, scale, seed + i)
        collect_to_store(
            env_id, steps // len(SCALES), directory, policy=policy, seed=seed + 1000 * i, progress=False
        )
    return EpisodeStore(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--models", nargs="+", default=["ensemble:ci", "dreamer:ci", "tdmpc2:ci"])
    parser.add_argument("--real-steps", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=500, help="gradient updates per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = collect(args.env, args.real_steps, Path(tmp) / "data", args.seed)
        held_out = store.buffer("validation")
        print(
            f"{args.env}: {store.num_steps('train')} training steps, "
            f"{store.num_steps('validation')} held-out steps in {store.num_episodes('validation')} episodes"
        )
        header = "model               updates  fit s  " + "  ".join(f"h={h:<4}" for h in HORIZONS)
        print(header + "  reward r  term bacc")
        for name in args.models:
            started = time.perf_counter()
            model = fit_world_model(
                args.env,
                name,
                Path(tmp) / name.replace(":", "_"),
                data_dir=store.directory,
                steps=args.updates,
                seed=args.seed,
                trainer={"validate_every": args.updates},
                progress=False,
            )
            seconds = time.perf_counter() - started
            quality = evaluate_model(model.eval(), held_out, horizons=HORIZONS)
            errors = "  ".join(
                "  n/a " if quality.open_loop_error[h] is None else f"{quality.open_loop_error[h]:6.3f}"
                for h in HORIZONS
            )
            reward = "n/a" if quality.reward_correlation is None else f"{quality.reward_correlation:.3f}"
            term = (
                "n/a"
                if quality.termination_balanced_accuracy is None
                else f"{quality.termination_balanced_accuracy:.3f}"
            )
            print(
                f"{name:<18}  {args.updates:>7}  {seconds:5.0f}  {errors}  {reward:>8}  {term:>9}", flush=True
            )
    print("open-loop error: model / persistence MSE in data-std units (below 1 beats persistence)")


if __name__ == "__main__":
    main()
