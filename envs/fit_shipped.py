"""Fit the shipped weights of every dream env in this folder, reproducibly, from data collected here.

    python envs/fit_shipped.py                      # every spec in envs/*.json
    python envs/fit_shipped.py dreamer_walker       # one spec (by file name)

For each spec: collect ``fit.real_steps`` real steps (seeded; random actions, at the action scales of
``fit.action_scales`` in equal shares: small scales keep a walker up longer, so the data holds long
episodes as well as falls), fit ``family:preset`` for ``fit.fit_steps`` updates, measure it on the
held-out episodes (``training/model_quality.py``), and write into ``envs/checkpoints/<name>/`` the
checkpoint plus ``starts.safetensors`` (a bank of real initial observations and real context
windows for branched starts). The spec's ``validation`` block is rewritten with the figures.
Work files (data, trainer state) go to ``--work`` (default ``runs/shipped``), not into the package.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from worldflux_gym.core.checkpoint import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE
from worldflux_gym.data.collect import collect_to_store, scaled_random_policy
from worldflux_gym.data.store import EpisodeStore, is_store
from worldflux_gym.dream.starts import save_starts
from worldflux_gym.training import fit_world_model
from worldflux_gym.training.model_quality import evaluate_model

ENVS = Path(__file__).resolve().parent
SHIPPED_LIMIT_MB = 50.0


def collect(spec: dict, data_dir: Path) -> EpisodeStore:
    fit = spec["fit"]
    total, seed = int(fit["real_steps"]), int(fit.get("seed", 0))
    have = EpisodeStore(data_dir).num_steps() if is_store(data_dir) else 0
    if have >= total:
        return EpisodeStore(data_dir)
    import gymnasium as gym

    action_space = gym.make(spec["real_env"]).action_space
    scales = fit.get("action_scales", [1.0])
    if not isinstance(action_space, gym.spaces.Box):
        scales = [1.0]  # discrete actions: plain random
    share = total // len(scales)
    for i, scale in enumerate(scales):
        policy = None if scale == 1.0 else scaled_random_policy(action_space, scale, seed + i)
        collect_to_store(
            spec["real_env"], share, data_dir, policy=policy, seed=seed + 1000 * i, progress=True
        )
    return EpisodeStore(data_dir)


def ship(name: str, work: Path) -> dict:
    spec_path = ENVS / f"{name}.json"
    spec = json.loads(spec_path.read_text())
    fit = spec["fit"]
    torch.manual_seed(int(fit.get("seed", 0)))
    store = collect(spec, work / name / "data")
    started = time.perf_counter()
    model = fit_world_model(
        spec["real_env"],
        f"{spec['family']}:{spec['preset']}",
        work / name / "run",
        data_dir=store.directory,
        steps=int(fit["fit_steps"]),
        seed=int(fit.get("seed", 0)),
        trainer={"batch_size": fit.get("batch_size"), "validate_every": 1000, "checkpoint_every": 2000},
    )
    fit_seconds = time.perf_counter() - started
    model = model.to("cpu").eval()
    quality = evaluate_model(model, store.buffer("validation"), seed=int(fit.get("seed", 0)))

    destination = ENVS / spec["checkpoint"]
    if destination.exists():
        shutil.rmtree(destination)
    model.save_pretrained(destination)
    train = store.buffer("train")
    rng = np.random.default_rng(int(fit.get("seed", 0)))
    context_obs, context_action = train.sample_contexts(min(2048, train.num_steps), 8, rng)
    save_starts(destination, train.initial_observations().cpu(), context_obs.cpu(), context_action.cpu())
    size_mb = sum(f.stat().st_size for f in destination.iterdir()) / 2**20

    spec["validation"] = {
        "real_steps": store.num_steps(),
        "held_out_episodes": store.num_episodes("validation"),
        "fit_updates": int(fit["fit_steps"]),
        "fit_seconds_cpu": round(fit_seconds, 1),
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
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in ENVS.glob("*.json"))
    for name in names:
        print(f"== {name}")
        print(json.dumps(ship(name, Path(args.work)), indent=2))
    total = sum(f.stat().st_size for f in (ENVS / "checkpoints").rglob("*") if f.is_file()) / 2**20
    print(f"all shipped weights: {total:.1f} MB (limit {SHIPPED_LIMIT_MB:.0f} MB)")
    if total > SHIPPED_LIMIT_MB:
        raise SystemExit("shipped weights exceed the size limit: choose smaller presets")


if __name__ == "__main__":
    main()
