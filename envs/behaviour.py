"""Behaviour agents for the shipped dreams' data: SB3 runs on the *real* env, saved along the way.

A dream knows only the behaviour in its data. Checkpoints of a real-env run span the skill range
(an early checkpoint falls, a late one walks), so the shipped specs collect data under several of
them, from more than one algorithm and seed (D4RL's medium-replay idea), and keep other runs (other
seeds, another algorithm) aside to check the dreams on policies they never saw.

    python envs/behaviour.py Walker2d-v5 PPO --seed 0 --steps 1000000 --every 100000
    python envs/behaviour.py Walker2d-v5 SAC --seed 0 --steps 300000 --every 25000

A run writes ``<work>/<env>/<algo>_s<seed>/<algo>_<steps>.zip`` at every save and ``run.json`` with the
wall-clock seconds and the mean real return (10 deterministic episodes from fixed resets) of each
checkpoint. A run that was stopped continues from its last checkpoint (SB3 cannot restore a PPO
rollout or a SAC replay buffer exactly, so a continued run is not bit-for-bit the uninterrupted one;
``run.json`` says so).

**Runs are frozen in the repo**, so that they are the same policies on every machine and in every
session and nobody retrains them (an hour for a Walker2d run, and SB3 does not train bit for bit
alike on two machines): the runs that judge the dreams (``fit.held_out_agents``) in
``envs/held_out/<env>/<algo>_s<seed>/``, so audit figures compare; the runs whose checkpoints log a
shipped dream's data (``fit.data.agents``) in ``envs/data_runs/``, so its data can be collected
again exactly. Each checkpoint keeps only the weights it acts with, as safetensors (nothing to
unpickle), and ``run.json`` its real return measured *with those weights* (same fixed resets).
``--freeze`` trains a run if needed and freezes it into one of the two::

    python envs/behaviour.py Walker2d-v5 PPO --seed 1 --steps 1000000 --every 100000 --freeze held_out
    python envs/behaviour.py Walker2d-v5 PPO --seed 0 --steps 1000000 --every 100000 --freeze data_runs
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from safetensors.torch import load_file, save_file
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from worldflux_gym.agents import evaluate_agent
from worldflux_gym.data.policy import load_sb3_agent

ALGORITHMS = ("PPO", "SAC", "TD3", "A2C")
EVALUATION_EPISODES = 10
EVALUATION_SEED = 50_000  # resets of the checkpoints' scores: the same for every checkpoint and run
HELD_OUT = Path(__file__).resolve().parent / "held_out"  # frozen runs that judge the dreams
DATA_RUNS = Path(__file__).resolve().parent / "data_runs"  # frozen runs that log shipped dreams' data
OFF_POLICY = ("SAC", "TD3")  # these act with their actor alone; their critics stay out of a frozen run


@dataclass(frozen=True)
class BehaviourRun:
    """One SB3 run on a real env: which algorithm, seed and length, and how often it is saved."""

    env_id: str
    algorithm: str
    seed: int
    steps: int
    every: int

    @property
    def name(self) -> str:
        return f"{self.algorithm.lower()}_s{self.seed}"

    def folder(self, work: Path) -> Path:
        return work / self.env_id / self.name

    def checkpoint(self, work: Path, steps: int) -> Path:
        return self.folder(work) / f"{self.algorithm.lower()}_{steps}.zip"

    def checkpoints(self, work: Path) -> dict[int, Path]:
        """Every save of the finished run, by steps."""
        return {s: self.checkpoint(work, s) for s in range(self.every, self.steps + 1, self.every)}

    def record(self, work: Path) -> dict:
        path = self.folder(work) / "run.json"
        return json.loads(path.read_text()) if path.is_file() else {"checkpoints": {}}


class _SaveAndScore(BaseCallback):
    def __init__(self, run: BehaviourRun, work: Path, record: dict, offset_seconds: float):
        super().__init__()
        self.run, self.work, self.record = run, work, record
        self.offset_seconds = offset_seconds

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.run.every:
            return True
        seconds = self.offset_seconds + time.perf_counter() - self.started
        path = self.run.checkpoint(self.work, self.num_timesteps)
        self.model.save(path)
        score = evaluate_agent(self.model, self.run.env_id, EVALUATION_EPISODES, seed=EVALUATION_SEED)
        mean, std = score.mean_return, score.std_return
        self.record["checkpoints"][str(self.num_timesteps)] = {
            "seconds": round(seconds, 1),
            "real_return": round(float(mean), 1),
            "real_return_std": round(float(std), 1),
        }
        _write_record(self.run, self.work, self.record)
        print(
            f"{self.run.name} {self.num_timesteps:>8,} steps {seconds:7.0f} s  real {mean:8.1f} +- {std:.1f}"
        )
        return True


def _write_record(run: BehaviourRun, work: Path, record: dict) -> None:
    path = run.folder(work) / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def train_behaviour(run: BehaviourRun, work: Path) -> dict[int, Path]:
    """Train (or finish) ``run``; returns its checkpoints by steps."""
    if run.algorithm not in ALGORITHMS:
        raise SystemExit(f"algorithm {run.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
    folder = run.folder(work)
    folder.mkdir(parents=True, exist_ok=True)
    record = run.record(work)
    done = sorted(int(s) for s in record["checkpoints"] if run.checkpoint(work, int(s)).is_file())
    if done and done[-1] >= run.steps:
        return run.checkpoints(work)
    cls = getattr(stable_baselines3, run.algorithm)
    env = gym.make(run.env_id)
    torch.manual_seed(run.seed)
    if done:
        agent = load_sb3_agent(run.checkpoint(work, done[-1]), run.algorithm, env=env)
        record["continued_from"] = record.get("continued_from", []) + [done[-1]]
        offset = record["checkpoints"][str(done[-1])]["seconds"]
    else:
        agent = cls("MlpPolicy", env, seed=run.seed, device="cpu", verbose=0)
        record.update(
            env_id=run.env_id, algorithm=run.algorithm, seed=run.seed, hyperparameters="SB3 defaults"
        )
        offset = 0.0
    _write_record(run, work, record)
    agent.learn(
        run.steps - (done[-1] if done else 0),
        callback=_SaveAndScore(run, work, record, offset),
        reset_num_timesteps=not done,
    )
    env.close()
    return run.checkpoints(work)


# --- frozen runs: the weights each checkpoint acts with, as safetensors --------------------------------
def _acting_module(agent: BaseAlgorithm, algorithm: str) -> torch.nn.Module:
    return agent.policy.actor if algorithm in OFF_POLICY else agent.policy


def frozen_weights(run: BehaviourRun, folder: Path, steps: int) -> Path:
    """Where checkpoint ``steps`` of ``run`` keeps its acting weights in ``folder`` (beside where the
    run's own save would be, were ``folder`` its work folder)."""
    return run.checkpoint(folder, steps).with_suffix(".safetensors")


def load_frozen(run: BehaviourRun, steps: int, folder: Path = HELD_OUT) -> BaseAlgorithm:
    """Checkpoint ``steps`` of a frozen run as an SB3 agent (SB3 defaults, as the runs were trained)
    that acts like the checkpoint it was frozen from; it was not saved to be trained further."""
    return load_checkpoint(frozen_weights(run, folder, steps), run.algorithm, run.env_id, run.seed)


def load_checkpoint(path: Path, algorithm: str, env_id: str, seed: int = 0) -> BaseAlgorithm:
    """A checkpoint of an ``algorithm`` run on ``env_id`` as an SB3 agent, from either file
    :func:`run_checkpoints` gives: the run's own save (``.zip``) or its frozen acting weights
    (``.safetensors``; ``seed`` seeds the SB3 constructor they are loaded into)."""
    if Path(path).suffix != ".safetensors":
        return load_sb3_agent(path, algorithm)
    cls = getattr(stable_baselines3, algorithm)
    options = {"buffer_size": 1} if algorithm in OFF_POLICY else {}
    env = gym.make(env_id)
    agent = cls("MlpPolicy", env, seed=seed, device="cpu", **options)
    env.close()  # SB3's constructor only needed its spaces
    _acting_module(agent, algorithm).load_state_dict(load_file(path))
    agent.policy.set_training_mode(False)
    return agent


def freeze(run: BehaviourRun, work: Path, folder: Path = HELD_OUT) -> None:
    """Copy the finished run's acting weights from ``work`` into ``folder`` and score each copy."""
    run.folder(folder).mkdir(parents=True, exist_ok=True)
    trained = run.record(work)
    record = {
        "env_id": run.env_id,
        "algorithm": run.algorithm,
        "seed": run.seed,
        "steps": run.steps,
        "every": run.every,
        "hyperparameters": "SB3 defaults",
        "checkpoints": {},
    }
    if "continued_from" in trained:  # stopped and continued there: not the uninterrupted run
        record["continued_from"] = trained["continued_from"]
    for steps, path in run.checkpoints(work).items():
        module = _acting_module(load_checkpoint(path, run.algorithm, run.env_id), run.algorithm)
        weights = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, frozen_weights(run, folder, steps))
        copy = load_frozen(run, steps, folder)
        score = evaluate_agent(copy, run.env_id, EVALUATION_EPISODES, seed=EVALUATION_SEED)
        record["checkpoints"][str(steps)] = {
            "training_seconds": trained["checkpoints"].get(str(steps), {}).get("seconds"),
            "real_return": round(float(score.mean_return), 1),
            "real_return_std": round(float(score.std_return), 1),
        }
        print(f"froze {run.name} {steps:>8,} steps  real {score.mean_return:8.1f}")
    _write_record(run, folder, record)  # last: a freeze that a kill interrupted is not a frozen run


def frozen_record(run: BehaviourRun, folder: Path = HELD_OUT) -> dict | None:
    """The frozen run's ``run.json`` (``None`` when the run is not frozen); refuses a frozen run that
    is not ``run`` (another length or saving interval than the spec now asks for)."""
    path = run.folder(folder) / "run.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if (record["steps"], record["every"]) != (run.steps, run.every):
        raise SystemExit(
            f"error: {path.parent} holds a {run.name} run of {record['steps']:,} steps saved every "
            f"{record['every']:,}, but {run.steps:,} every {run.every:,} were asked for; freeze the run "
            f"asked for (python envs/behaviour.py {run.env_id} {run.algorithm} --seed {run.seed} "
            f"--steps {run.steps} --every {run.every} --freeze) or ask for the frozen one"
        )
    return record


def run_checkpoints(run: BehaviourRun, work: Path, folder: Path = HELD_OUT) -> dict[int, Path]:
    """Every checkpoint of ``run`` by steps: its frozen weights when the run is frozen in ``folder``,
    else the run's own saves (trained into ``work`` if missing)."""
    if frozen_record(run, folder) is not None:
        return {steps: frozen_weights(run, folder, steps) for steps in run.checkpoints(work)}
    return train_behaviour(run, work)


def checkpoint_agents(run: BehaviourRun, work: Path, folder: Path = HELD_OUT) -> dict[int, BaseAlgorithm]:
    """Every checkpoint of ``run`` as an agent, by steps (from :func:`run_checkpoints`)."""
    return {
        steps: load_checkpoint(path, run.algorithm, run.env_id, run.seed)
        for steps, path in run_checkpoints(run, work, folder).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id")
    parser.add_argument("algorithm", choices=ALGORITHMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--every", type=int, required=True)
    parser.add_argument("--work", default="runs/behaviour", help="where the runs go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--freeze",
        choices=("held_out", "data_runs"),
        help="then freeze the run into envs/held_out (it judges dreams) or envs/data_runs (it logs "
        "a shipped dream's data)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    run = BehaviourRun(args.env_id, args.algorithm, args.seed, args.steps, args.every)
    train_behaviour(run, Path(args.work))
    if args.freeze:
        freeze(run, Path(args.work), HELD_OUT if args.freeze == "held_out" else DATA_RUNS)


if __name__ == "__main__":
    main()
