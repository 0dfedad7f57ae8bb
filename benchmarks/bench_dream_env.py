"""Dream env throughput against the real env, and SB3 PPO training speed in the dream vs. reality.

Measures, in one run (about 6 minutes on 2 CPU cores):

1. real Walker2d-v5 steps/s, one env and a gymnasium ``SyncVectorEnv`` of a few envs (random actions);
2. the bare model's ``transition`` + ``decode`` at N = 1024 (the floor every model env pays,
   mbrl-lib's included); then dream steps/s over the shipped ``WorldFlux/Ensemble-Walker-v3``
   weights (``ensemble:default``: 7 members x 4x200; trained weights so that episodes end, and
   autoreset, at realistic rates): ``DreamEnv`` and ``DreamVectorEnv`` at N = 1, 64, 1024, 16384
   (one member per row, as MBPO/mbrl-lib step), N = 1024 and 16384 with ``precision="bfloat16"``,
   N = 1024 with every member computed for ``info["uncertainty"]`` and N = 1024 starting from
   real env resets (other rows start from a bank of real resets);
3. SB3 PPO fps on ``DreamSB3VecEnv`` (256 envs) against PPO on the real Walker2d-v5 (defaults).

4. the headline ratios from 5 interleaved rounds (median): real one env, dream N=1024 (numpy,
   tensor, bfloat16), the bare model, and mbrl-lib's ``ModelEnv`` over its MBPO ensemble (same 7 x
   4x200 SiLU, one random member per row, N=1029), at equal work (termination by the same learned
   MLP as ours) and with its hand-written Walker2d termination, when mbrl-lib is installed: ``pip install
   --no-deps mbrl==0.2.0 && pip install hydra-core omegaconf termcolor tqdm matplotlib`` in a
   separate venv next to this package. Without it, reference figures for it are used (~206k
   transitions/s at batch 1029 through its numpy path, ~289k through its tensor path, measured with
   2 threads on an idle 2-core machine A of ``benchmarks/RESULTS.md``) and the output says so.

The figures of every run, with dates, machines and commits: ``benchmarks/RESULTS.md``.

Usage: ``python benchmarks/bench_dream_env.py [--quick] [--threads 2]`` on an otherwise idle machine
(with other work on one core, use ``OMP_NUM_THREADS=1 ... --threads 1``: two threads sharing a
busy core run slower than one).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from worldflux_gym import create_world_model
from worldflux_gym.core.checkpoint import from_pretrained
from worldflux_gym.core.model import WorldModel
from worldflux_gym.dream import DreamEnv, DreamSB3VecEnv, DreamVectorEnv

REAL_ENV = "Walker2d-v5"
MODEL = "ensemble:default"
SHIPPED = Path(__file__).resolve().parents[1] / "envs" / "checkpoints" / "ensemble_walker_v3"
MBRL_LIB_NUMPY, MBRL_LIB_TENSOR = 206_000, 289_000  # reference figures, batch 1029 (see the docstring)


def timed(step, budget: float, batch: int = 1, warmup: int = 3, slices: int = 5) -> float:
    """Transitions per second of ``step()`` (each call advances ``batch`` envs) over ``budget`` seconds.

    The budget is cut into ``slices`` and the best slice counts: the machine is shared, and other
    work can only slow a slice down, never speed it up.
    """
    for _ in range(warmup):
        step()
    best = 0.0
    for _ in range(slices):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget / slices:
            step()
            calls += 1
        best = max(best, calls * batch / elapsed)
    return best


def single_env_rate(env: gym.Env, budget: float) -> float:
    """Steps per second of one env under random actions, resetting when an episode ends."""
    env.reset(seed=0)
    env.action_space.seed(0)

    def step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    rate = timed(step, budget)
    env.close()
    return rate


def shipped_or_untrained_model():
    """The shipped Ensemble-Walker weights (``ensemble:default``): trained weights end episodes at
    realistic rates, and autoresets are part of what the env costs. Untrained weights (a coin-flip
    termination head: half the rows reset every step) when the checkpoint is missing."""
    if SHIPPED.is_dir():
        return from_pretrained(SHIPPED, device="auto")
    real = gym.make(REAL_ENV)
    model = create_world_model(MODEL, real.observation_space, real.action_space, device="auto").eval()
    real.close()
    return model


def real_single(budget: float) -> float:
    return single_env_rate(gym.make(REAL_ENV), budget)


def real_sync(num_envs: int, budget: float) -> float:
    envs = gym.make_vec(REAL_ENV, num_envs=num_envs, vectorization_mode="sync")
    envs.reset(seed=0)
    envs.action_space.seed(0)
    rate = timed(lambda: envs.step(envs.action_space.sample()), budget, num_envs)
    envs.close()
    return rate


def real_start_bank(size: int) -> np.ndarray:
    env = gym.make(REAL_ENV)
    bank = np.stack([env.reset(seed=i)[0] for i in range(size)])
    env.close()
    return bank


def dream_single(model, bank: np.ndarray, budget: float) -> float:
    return single_env_rate(DreamEnv(model, starts="bank", start_bank=bank, max_episode_steps=1000), budget)


def dream_vector_stepper(
    model, bank: np.ndarray, num_envs: int, tensor_output: bool = False, **options
) -> tuple[DreamVectorEnv, Callable[[], object]]:
    """A reset ``DreamVectorEnv`` and a function that steps it once with pre-drawn random actions."""
    if options.setdefault("starts", "bank") == "bank":
        options["start_bank"] = bank
    env = DreamVectorEnv(model, num_envs, max_episode_steps=1000, tensor_output=tensor_output, **options)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    # actions drawn once up front: the benchmark times the env, not the action sampler
    actions = rng.uniform(-1, 1, (8, num_envs, 6)).astype(np.float32)
    if tensor_output:
        actions = torch.as_tensor(actions, device=env.model.device)
    counter = iter(range(10**9))
    return env, lambda: env.step(actions[next(counter) % 8])


def dream_vector(
    model, bank: np.ndarray, num_envs: int, budget: float, tensor_output: bool = False, **options
) -> float:
    env, step = dream_vector_stepper(model, bank, num_envs, tensor_output, **options)
    rate = timed(step, budget, num_envs)
    env.close()
    return rate


def raw_model(model, bank: np.ndarray, num_envs: int, budget: float, precision=torch.float32) -> float:
    """The floor any model env pays: ``transition`` + ``decode`` alone, one member per row, no env."""
    generator = torch.Generator().manual_seed(0)
    bf16 = precision == torch.bfloat16
    with torch.inference_mode(), torch.autocast(model.device.type, torch.bfloat16, enabled=bf16):
        start = torch.as_tensor(bank[np.arange(num_envs) % len(bank)], dtype=torch.float32)
        state = model.encode(start.to(model.device))
        action = torch.zeros(num_envs, 6, device=model.device)

        def step():
            model.decode(model.transition(state, action, generator=generator, report_uncertainty=False))

        return timed(step, budget, num_envs)


def mbrl_lib_model_env(
    bank: np.ndarray, batch: int, budget: float, tensors: bool, learned_termination: WorldModel | None = None
) -> float | None:
    """Steps/s of mbrl-lib's ``ModelEnv`` (see :func:`mbrl_lib_stepper`); ``None`` without mbrl-lib."""
    step = mbrl_lib_stepper(bank, batch, tensors, learned_termination)
    return None if step is None else timed(step, budget, batch)


def mbrl_lib_stepper(
    bank: np.ndarray, batch: int, tensors: bool, learned_termination: WorldModel | None = None
) -> Callable[[], object] | None:
    """One step of mbrl-lib's ``ModelEnv`` over its MBPO ensemble (7 x 4x200 SiLU, one random member
    per row), sampling on. Its termination is Walker2d-v5's hand-written function, or with
    ``learned_termination`` (a model of ours) the same learned termination MLP our dream runs, which
    makes the work equal. ``None`` when mbrl-lib is not installed (see the module docstring)."""
    try:
        import mbrl.env.termination_fns as termination_fns
        from mbrl.models import GaussianMLP, ModelEnv, OneDTransitionRewardModel
        from omegaconf import OmegaConf
    except ImportError:
        return None
    real = gym.make(REAL_ENV)
    obs_dim, act_dim = real.observation_space.shape[0], real.action_space.shape[0]
    network = GaussianMLP(
        obs_dim + act_dim, obs_dim + 1, "cpu", num_layers=4, ensemble_size=7, hid_size=200,
        propagation_method="random_model", activation_fn_cfg=OmegaConf.create({"_target_": "torch.nn.SiLU"}),
    )  # fmt: skip
    dynamics = OneDTransitionRewardModel(network, target_is_delta=True, normalize=True, learned_rewards=True)
    termination = termination_fns.walker2d
    if learned_termination is not None:

        def termination(actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
            return (learned_termination._continue_logits(next_obs) < 0).unsqueeze(-1)

    model_env = ModelEnv(real, dynamics, termination, generator=torch.Generator().manual_seed(0))
    start = bank[np.arange(batch) % len(bank)].astype(np.float32)
    state = model_env.reset(start, return_as_np=not tensors)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, batch, act_dim)).astype(np.float32)
    if tensors:
        actions = torch.as_tensor(actions)
    counter = iter(range(10**9))

    def step():
        nonlocal state
        with torch.no_grad():
            _, _, _, state = model_env.step(actions[next(counter) % 8], state, sample=True)

    return step


def head_to_head(
    ours: Callable[[], object], theirs: Callable[[], object], quads: int = 30, calls: int = 30
) -> np.ndarray:
    """Per-quad ratios of their seconds per call to ours (our steps/s over theirs when a call
    advances as many rows on both sides), timed A B B A in windows of ``calls`` calls (~0.1 s each).

    A shared VM can switch between phases within seconds (on machine B of ``benchmarks/RESULTS.md``
    the second vCPU then added ~10% instead of ~45% to AVX-512 code), so rates taken seconds apart
    compare different machines; a quad spans ~0.4 s and the order A B B A cancels a linear drift
    within it."""

    def seconds(step: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        return time.perf_counter() - start

    for _ in range(5):  # warm up both
        ours(), theirs()
    ratios = []
    for _ in range(quads):
        a1, b1, b2, a2 = seconds(ours), seconds(theirs), seconds(theirs), seconds(ours)
        ratios.append((b1 + b2) / (a1 + a2))  # time per call, theirs over ours
    return np.array(ratios)


def ppo_fps(env, total: int, **ppo_kwargs) -> float:
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", env, seed=0, verbose=0, device="cpu", **ppo_kwargs)
    start = time.perf_counter()
    agent.learn(total_timesteps=total)
    return agent.num_timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budgets, for a smoke run")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (default 2: the project machine's cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = 0.5 if args.quick else 3.0

    model = shipped_or_untrained_model()
    bank = real_start_bank(256 if args.quick else 4096)
    print(f"# {MODEL} ({model.num_parameters():,} parameters) on {REAL_ENV} spaces, device {model.device}")
    print(f"# torch threads {torch.get_num_threads()}, budget {budget}s per row, best of 5 slices\n")

    rows: list[tuple[str, float]] = []

    def row(name: str, rate: float) -> None:
        rows.append((name, rate))
        print(f"{name:<58} {rate:>12,.0f}", flush=True)

    real_one = real_single(budget)
    row(f"real {REAL_ENV}, one env", real_one)
    row(f"real {REAL_ENV}, SyncVectorEnv x4", real_sync(4, budget))
    row("model alone: transition + decode, N=1024 (no env)", raw_model(model, bank, 1024, budget))
    row(
        "model alone, bfloat16 products, N=1024 (no env)",
        raw_model(model, bank, 1024, budget, precision=torch.bfloat16),
    )
    row("dream DreamEnv (N=1, uncertainty on)", dream_single(model, bank, budget))
    for n in (1, 64, 1024, 16384):
        row(f"dream DreamVectorEnv N={n}, numpy out", dream_vector(model, bank, n, budget))
    row(
        "dream DreamVectorEnv N=1024, tensor out", dream_vector(model, bank, 1024, budget, tensor_output=True)
    )
    row(
        "dream DreamVectorEnv N=16384, tensor out",
        dream_vector(model, bank, 16384, budget, tensor_output=True),
    )
    for n in (1024, 16384):
        row(
            f"dream DreamVectorEnv N={n}, numpy out, bfloat16",
            dream_vector(model, bank, n, budget, precision="bfloat16"),
        )
    row(
        "dream DreamVectorEnv N=1024, every member (uncertainty)",
        dream_vector(model, bank, 1024, budget, report_uncertainty=True),
    )
    row(
        "dream DreamVectorEnv N=1024, starts from real resets",
        dream_vector(model, bank, 1024, budget, starts="reset", real_env=REAL_ENV),
    )
    rates = dict(rows)
    at_1024 = rates["dream DreamVectorEnv N=1024, numpy out"]
    floor = rates["model alone: transition + decode, N=1024 (no env)"]
    print(f"\nthe env keeps {at_1024 / floor:.0%} of the bare model's rate at N=1024 (numpy out)")
    print(f"ratio dream N=1024 / real one env: {at_1024 / real_one:.1f}x (target >= 50x)")
    bf16_1024 = rates["dream DreamVectorEnv N=1024, numpy out, bfloat16"]
    print(f"ratio dream N=1024 bfloat16 / real one env: {bf16_1024 / real_one:.1f}x")

    # Rows above are timed one after the other, and a shared machine's speed drifts by +-30% over
    # minutes: the headline ratios are taken from interleaved rounds instead (median of 5). The
    # peer is mbrl-lib's ModelEnv when installed (its random-member propagation needs a batch
    # divisible by its 7 members: 1029 = 7 x 147), else the reference figures for it.
    def one_round() -> dict[str, float]:
        measured = {
            "real one env": real_single(budget / 3),
            "dream N=1024 numpy": dream_vector(model, bank, 1024, budget / 3),
            "dream N=1024 tensor": dream_vector(model, bank, 1024, budget / 3, tensor_output=True),
            "dream N=1024 numpy bf16": dream_vector(model, bank, 1024, budget / 3, precision="bfloat16"),
            "bare model N=1024": raw_model(model, bank, 1024, budget / 3),
            "mbrl-lib numpy N=1029": mbrl_lib_model_env(bank, 1029, budget / 3, tensors=False),
            "mbrl-lib tensor N=1029": mbrl_lib_model_env(bank, 1029, budget / 3, tensors=True),
            "mbrl-lib numpy N=1029, learned termination": mbrl_lib_model_env(
                bank, 1029, budget / 3, tensors=False, learned_termination=model
            ),
            "mbrl-lib tensor N=1029, learned termination": mbrl_lib_model_env(
                bank, 1029, budget / 3, tensors=True, learned_termination=model
            ),
        }
        return {k: v for k, v in measured.items() if v is not None}

    rounds = [one_round() for _ in range(1 if args.quick else 5)]
    median = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}

    def ratio(a: str, b: str) -> float:
        return float(np.median([r[a] / r[b] for r in rounds]))

    print(f"\ninterleaved, {len(rounds)} rounds, medians (steps/s):")
    for name, rate in median.items():
        print(f"  {name:<56} {rate:>12,.0f}")
    print(
        f"dream N=1024 numpy / real one env: {ratio('dream N=1024 numpy', 'real one env'):.1f}x "
        "(target >= 50x)"
    )
    print(f"env / bare model at N=1024: {ratio('dream N=1024 numpy', 'bare model N=1024'):.0%}")
    if "mbrl-lib numpy N=1029" in median:
        # Equal work: both sides run the same learned termination MLP. mbrl-lib's hand-written
        # Walker2d function does less (a few comparisons), so those rows favour it.
        for ours, theirs in (
            ("dream N=1024 numpy", "mbrl-lib numpy N=1029, learned termination"),
            ("dream N=1024 tensor", "mbrl-lib tensor N=1029, learned termination"),
            ("dream N=1024 numpy", "mbrl-lib numpy N=1029"),
            ("dream N=1024 tensor", "mbrl-lib tensor N=1029"),
            ("dream N=1024 numpy bf16", "mbrl-lib numpy N=1029, learned termination"),
        ):
            print(f"{ours} / {theirs}: {ratio(ours, theirs):.2f}x")
        # Head to head, both envs built once and timed in alternation (see head_to_head). The
        # per-call ratio is scaled by rows per call: 1024 ours, 1029 theirs.
        print("\nhead to head, A B B A quads of 30 steps each side, ratio of steps/s (ours / mbrl-lib):")
        for tensors in (False, True):
            env, ours_step = dream_vector_stepper(model, bank, 1024, tensor_output=tensors)
            theirs_step = mbrl_lib_stepper(bank, 1029, tensors, learned_termination=model)
            ratios = head_to_head(ours_step, theirs_step, quads=10 if args.quick else 40) * 1024 / 1029
            env.close()
            low, mid, high = np.percentile(ratios, [25, 50, 75])
            kind = "tensor" if tensors else "numpy"
            print(
                f"  dream N=1024 {kind} / mbrl-lib {kind} N=1029, learned termination (equal work): "
                f"median {mid:.2f}x (quartiles {low:.2f}-{high:.2f}, {len(ratios)} quads)"
            )
    else:
        print(
            "mbrl-lib is not installed: vs its reference figures (benchmarks/RESULTS.md), dream N=1024 numpy "
            f"{median['dream N=1024 numpy'] / MBRL_LIB_NUMPY:.2f}x its numpy path, tensor "
            f"{median['dream N=1024 tensor'] / MBRL_LIB_TENSOR:.2f}x its tensor path"
        )

    # --- PPO: dream (SB3 adapter, 256 envs) vs real (defaults, one env) -------------------------
    dream_total = 16_384 if args.quick else 262_144
    real_total = 2_048 if args.quick else 8_192
    dream_env = DreamSB3VecEnv(model, 256, starts="bank", start_bank=bank, max_episode_steps=1000)
    dream_fps = ppo_fps(dream_env, dream_total, n_steps=64, batch_size=4096)
    dream_env.close()
    real_fps = ppo_fps(gym.make(REAL_ENV), real_total)
    print(f"\n{'SB3 PPO in the dream (256 envs, n_steps 64, batch 4096)':<58} {dream_fps:>12,.0f} fps")
    print(f"{'SB3 PPO on real ' + REAL_ENV + ' (defaults)':<58} {real_fps:>12,.0f} fps")
    print(f"ratio PPO dream / real: {dream_fps / real_fps:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
