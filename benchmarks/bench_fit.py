"""Fitting throughput of every registered world-model family: updates/s and samples/s.

A "sample" is one transition the loss sees: ``batch_size`` for one-step families, ``batch_size x T``
for families trained on windows of ``T`` steps. Each update is what the trainer does: draw a batch
from the episode buffer, forward ``model.loss``, backward, clip, AdamW step (no checkpoints or
validation in the timed part). Data: random-action episodes of the real env, collected once.

    OMP_NUM_THREADS=2 python benchmarks/bench_fit.py                      # every family, its presets
    python benchmarks/bench_fit.py --env Pendulum-v1 --presets ci --seconds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from worldflux_gym.core.registry import catalog, create_world_model
from worldflux_gym.data import collect_to_store
from worldflux_gym.training import Trainer, TrainerConfig


def bench(name: str, store, seconds: float, warmup: int, device: str, batch_size: int | None) -> dict:
    """Time ``name`` ("family:preset") for about ``seconds`` after ``warmup`` updates."""
    model = create_world_model(name, store.observation_space, store.action_space, device=device)
    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainerConfig(batch_size=batch_size, progress=False, tensorboard=False)
        trainer = Trainer(model, store, config, run_dir)
        trainer.adapt()
        model.train()
        for _ in range(warmup):
            trainer.update(trainer.sample_batch())
        updates, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            trainer.update(trainer.sample_batch())
            updates += 1
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    horizon = model.sequence_length or 1
    return {
        "batch": trainer.config.batch_size,
        "T": horizon,
        "updates_per_s": updates / elapsed,
        "samples_per_s": updates * trainer.config.batch_size * horizon / elapsed,
        "parameters": model.num_parameters(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Walker2d-v5")
    parser.add_argument("--collect-steps", type=int, default=5000)
    parser.add_argument("--families", nargs="*", help="default: every registered family")
    parser.add_argument("--presets", nargs="*", help="preset names to time (default: every preset)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: each model's own (see TrainerConfig)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        store = collect_to_store(args.env, args.collect_steps, data_dir, progress=False)
        store.episodes()  # load once, outside the timings
        print(
            f"# fitting throughput on {args.env} ({store.num_steps()} random-action steps), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
        )
        print(
            f"{'model':<22} {'maturity':<13} {'params':>10} {'batch':>6} {'T':>4} {'updates/s':>10} "
            f"{'samples/s':>11}"
        )
        for entry in catalog():  # every registered family:preset
            if (args.families and entry.family not in args.families) or (
                args.presets and entry.preset not in args.presets
            ):
                continue
            try:
                r = bench(entry.name, store, args.seconds, args.warmup, args.device, args.batch_size)
            except Exception as err:  # a family under construction must not hide the others' figures
                print(f"{entry.name:<22} failed: {type(err).__name__}: {err}")
                continue
            print(
                f"{entry.name:<22} {entry.maturity:<13} {r['parameters']:>10,} {r['batch']:>6} "
                f"{r['T']:>4} {r['updates_per_s']:>10.1f} {r['samples_per_s']:>11,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
