"""How well does the dream audit estimate real returns, and does it flag exploitation?

Pendulum-v1 (``--stage all``, or one of ``prepare``, ``ope``, ``exploitation``):

1. **Off-policy evaluation.** Policies of graded quality: checkpoints of one SAC run on the *real*
   env (saved every few hundred steps) plus a uniformly random policy. Each is audited in a dream
   over an ``ensemble:default`` model fitted on real random-action data, with ``real=True``: the
   same start states replayed in the real env. Figures: Spearman rank correlation between the
   dream and the real mean returns (target >= 0.9) and the mean absolute error of the dream mean
   return, relative to the spread (max - min) of the real mean returns (target <= 10%).
2. **Exploitation.** PPO trained for 300k steps in the *deterministic* (too confident) dream of a
   poorly fitted ensemble (50 real random steps; with a whole 200-step episode the Pendulum model
   is already good enough that PPO trained in it does as well in reality as in the dream), against
   the same PPO recipe trained in the stochastic dream of the well fitted one. Each agent is
   audited in the dream it was trained in (what a user would do); the audit should flag the first
   and not the second, and the real replay shows whether the flag was right.

Walker2d-v5 (``--stage walker``, off-policy evaluation only): 11 policies, random and the checkpoints
every 100k steps of one 1M-step PPO run on the real env (SB3 defaults; ``--walker-ppo-seed`` picks
the run, so each seed is another policy set). The model is ``ensemble:default`` fitted on 10k random
steps plus ``--walker-behaviour-steps`` logged steps of each checkpoint, for ``--walker-fit-steps``
updates, ``--walker-fits`` times with trainer seeds 0, 1, ...; a policy's estimate is the mean of
the fits' dream returns. ``--walker-open-loop H`` fits with the ensemble's open-loop term,
``--walker-closed-loop`` fine-tunes every fit with ``fine_tune_closed_loop`` under the checkpoints,
``--walker-dream`` says how the models imagine (``WALKER_DREAMS``) and ``--walker-dream-episodes``
how many episodes they dream per policy (the real env replays ``--episodes``). The setting that
met the targets on held-out policy sets::

    python benchmarks/bench_audit.py --stage walker --walker-ppo-seed 3 --walker-open-loop 8 \
        --walker-fit-steps 10000 --walker-fits 2 --episodes 50 --walker-dream-episodes 1000 \
        --walker-closed-loop --walker-dream sampled

The figures of every run, with dates, machines and commits, are in ``benchmarks/RESULTS.md``
(section "Audit"); what the Walker2d runs taught is in ``docs/audit.md``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_audit.py [--workdir DIR] [--stage STAGE]``.
All artefacts are cached in ``--workdir``, so a rerun only redoes what is missing. Pendulum from
scratch takes about 40 minutes on 2 busy cores (SAC on the real env, two model fits, two 300k-step
PPO trainings in dreams, the audits), the audits alone about 10 minutes. Walker2d takes hours: the
PPO run, then about 25 minutes per open-loop fit and 18 per closed-loop fine-tune on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

REAL_ENV = "Pendulum-v1"
DREAM_ID = "WorldFlux/Ensemble-Pendulum-v0"
SAC_STEPS = 8000
SAC_SAVE_EVERY = 500
SAC_PICK = (500, 1500, 2500, 3500, 4500, 6000, 8000)  # graded: from untrained to good
PPO_STEPS = 300_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- stage 1: real-env agents, world models, dream agents -----------------------------------------
def train_sac_checkpoints(work: Path) -> dict[str, Path]:
    """One SAC run on the real env, saved every ``SAC_SAVE_EVERY`` steps (SB3's CheckpointCallback)."""
    folder = work / "sac"
    paths = {f"sac_{s}": folder / f"sac_{s}_steps.zip" for s in SAC_PICK}
    if all(p.is_file() for p in paths.values()):
        return paths
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import CheckpointCallback

    log(f"SAC on real {REAL_ENV} for {SAC_STEPS} steps")
    env = gym.make(REAL_ENV)
    agent = SAC(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        learning_starts=300,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
        device="cpu",
        verbose=0,
    )
    agent.learn(SAC_STEPS, callback=CheckpointCallback(SAC_SAVE_EVERY, str(folder), name_prefix="sac"))
    env.close()
    return paths


def fit_models(work: Path) -> dict[str, Path]:
    """A well fitted ensemble (10k random real steps) and a poorly fitted one (50 real steps, a quarter of
    one episode: one episode is already enough for a usable Pendulum model, see the docstring)."""
    from worldflux_gym.training import fit_world_model

    runs = {
        "good": (work / "model_good", "ensemble:default", 10_000, 2000),
        "poor": (work / "model_poor_50steps", "ensemble:default", 50, 1000),
    }
    for name, (run, model, collect, steps) in runs.items():
        if not (run / "metadata.json").is_file():
            log(f"fit {model} on {collect} random steps of {REAL_ENV} ({name})")
            fit_world_model(REAL_ENV, model, run, steps=steps, collect_steps=collect, progress=False)
    return {name: spec[0] for name, spec in runs.items()}


def train_dream_agents(work: Path, models: dict[str, Path]) -> dict[str, Path]:
    """The same PPO recipe, trained for ``PPO_STEPS`` dreamed steps in each model's dream.

    In the poor model the dream is deterministic (the elites' mean transition): a too-confident
    dream, the setting in which the World Models controller scored 2086 in the dream and 193 in
    reality. The sound agent practises in the stochastic dream of the well fitted model.
    """
    from worldflux_gym.agents import train_agent

    paths = {}
    for name, checkpoint in models.items():
        out = work / "agents" / f"ppo_{name}_dream.zip"
        if name == "poor":
            out = out.with_name("ppo_poor_50steps_deterministic_dream.zip")
        if not out.is_file():
            log(f"PPO for {PPO_STEPS} steps in the {name} dream")
            train_agent(
                DREAM_ID, out, recipe="ppo_pendulum", steps=PPO_STEPS, checkpoint=checkpoint,
                progress=False, tensorboard=False, env_options={"deterministic": name == "poor"},
            )  # fmt: skip
        paths[name] = out
    return paths


def prepare(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    sac = train_sac_checkpoints(work)
    models = fit_models(work)
    dream_agents = train_dream_agents(work, models)
    return {"sac": sac, "models": models, "dream_agents": dream_agents}


# --- stage 2: the audits -------------------------------------------------------------------------
def random_policy(seed: int = 0):
    """Uniformly random torques (the worst policy of the graded set)."""
    rng = np.random.default_rng(seed)

    def random(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-2.0, 2.0, size=(len(obs), 1)).astype(np.float32)

    return random


def off_policy_evaluation(artefacts: dict, episodes: int, reports: Path) -> dict:
    """Rank the graded policies by their dream return in the well fitted model, against real returns."""
    from worldflux_gym.audit import rank_agents, write_ranking_report
    from worldflux_gym.audit.report import ranking_text

    agents = {"random": random_policy(), **{name: path for name, path in artefacts["sac"].items()}}
    log(f"off-policy evaluation: {len(agents)} policies x {episodes} episodes, dream and real")
    started = time.perf_counter()
    ranking = rank_agents(
        agents, DREAM_ID, checkpoint=artefacts["models"]["good"], real=True, episodes=episodes, what_if=False
    )
    seconds = time.perf_counter() - started
    write_ranking_report(ranking, reports / "ope", overwrite=True)
    print(ranking_text(ranking), flush=True)
    real = ranking.real_means
    return {
        "policies": {
            name: {
                "dream_mean": float(ranking.dream_means[i]),
                "dream_ci": [ranking.audits[i].nominal.interval.low, ranking.audits[i].nominal.interval.high],
                "real_mean": float(real[i]),
                "unsure_share": ranking.audits[i].nominal.unsure_share,
                "flagged": ranking.audits[i].flagged,
            }
            for i, name in enumerate(ranking.names)
        },
        "spearman": ranking.spearman,
        "mean_absolute_error": ranking.mean_absolute_error,
        "real_spread": float(real.max() - real.min()),
        "relative_error": ranking.relative_error,
        "real_split_half_spearman": ranking.real_split_half_spearman,
        "targets_met": bool(ranking.spearman >= 0.9 and ranking.relative_error <= 0.10),
        "seconds": round(seconds, 1),
    }


def exploitation(artefacts: dict, episodes: int, reports: Path) -> dict:
    """Each dream-trained PPO agent audited in its own dream (and the exploiter in the good one)."""
    from worldflux_gym.audit import audit_agent, summary_text, write_report

    cases = {
        "exploiter_in_poor_dream": ("poor", "poor"),
        "sound_in_good_dream": ("good", "good"),
        "exploiter_in_good_dream": ("poor", "good"),
    }
    results = {}
    for label, (agent, model) in cases.items():
        log(f"exploitation case {label}")
        result = audit_agent(
            artefacts["dream_agents"][agent], DREAM_ID, checkpoint=artefacts["models"][model], real=True,
            episodes=episodes, name=label,
        )  # fmt: skip
        write_report(result, reports / label, videos=1, overwrite=True)
        print(summary_text(result), flush=True)
        s = result.nominal
        results[label] = {
            "dream_mean": s.mean_return,
            "dream_ci": [s.interval.low, s.interval.high],
            "real_mean": float(result.real.real_returns.mean()),
            "gap_mean": result.real.gap_interval.mean,
            "unsure_share": s.unsure_share,
            "return_share_unsure": s.return_share_unsure,
            "threshold": result.calibration.threshold,
            "flagged": result.flagged,
            "flag_reason": s.flag_reason,
            "reward_above_real_share": s.reward_above_real_share,
            "verdict": result.verdict(),
            "scenarios": {k: v.mean_return for k, v in result.scenarios.items()},
            "seconds": result.seconds,
        }
    results["detected"] = bool(
        results["exploiter_in_poor_dream"]["flagged"] and not results["sound_in_good_dream"]["flagged"]
    )
    return results


# --- Walker2d-v5: off-policy evaluation only --------------------------------------------------------
WALKER_ENV, WALKER_DREAM = "Walker2d-v5", "WorldFlux/Ensemble-Walker-v3"
WALKER_PPO_STEPS, WALKER_SAVE_EVERY = 1_000_000, 100_000
WALKER_FIT_STEPS = 20_000
WALKER_FITS = 3  # models fitted on the same data (trainer seeds 0, 1, 2); their dream returns are averaged
WALKER_WINDOWS = 128  # windows per update when fitting open loop
WALKER_RANDOM_STEPS, WALKER_BEHAVIOUR_STEPS = 10_000, 50_000  # logged data: random, then per checkpoint
# How a fitted model dreams in the Walker audit: "mean" transitions (the mean of the elites' means
# each step; the default: over Walker's 1000-step episodes a sampled dream at the members' full std
# compounds its noise and every walking policy falls early), "sampled" ones (a random elite per row
# and step, sampling its Gaussian with its std x the model's noise_scale: 0.35 for closed-loop
# fine-tuned models), or "each-elite": every elite member rolls out alone with its own mean (what
# open-loop training optimises), and a policy's estimate is the average over elites (PETS' TS-inf,
# mean transitions); "sampled-tsinf": sampled, but each dreamed episode keeps one elite
# (``propagation`` "tsinf"). Their figures: benchmarks/RESULTS.md.
WALKER_DREAMS = ("mean", "sampled", "each-elite", "sampled-tsinf")


class TimedCheckpoints(BaseCallback):
    """Save every ``every`` steps and record the training seconds at each save (``times.json``), so
    the same run also gives PPO's wall-clock to a real return."""

    def __init__(self, every: int, folder: Path):
        super().__init__()
        self.every, self.folder = every, folder
        self.times: dict[str, float] = {}

    def _on_training_start(self) -> None:
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.model.save(self.folder / f"ppo_{self.num_timesteps}_steps.zip")
            self.times[str(self.num_timesteps)] = round(time.perf_counter() - self.started, 1)
            (self.folder / "times.json").write_text(json.dumps(self.times, indent=1) + "\n")
        return True


def train_walker_ppo(folder: Path, seed: int = 0) -> dict[str, Path]:
    """One PPO run (SB3 defaults) on the real Walker2d-v5, saved every ``WALKER_SAVE_EVERY`` steps."""
    picks = range(WALKER_SAVE_EVERY, WALKER_PPO_STEPS + 1, WALKER_SAVE_EVERY)
    policies = {f"ppo_{s // 1000}k": folder / f"ppo_{s}_steps.zip" for s in picks}
    if not all(p.is_file() for p in policies.values()):
        import gymnasium as gym
        from stable_baselines3 import PPO

        log(f"PPO on real {WALKER_ENV} for {WALKER_PPO_STEPS} steps")
        folder.mkdir(parents=True, exist_ok=True)
        env = gym.make(WALKER_ENV)
        agent = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
        agent.learn(WALKER_PPO_STEPS, callback=TimedCheckpoints(WALKER_SAVE_EVERY, folder))
        env.close()
    return policies


def walker(
    work: Path,
    episodes: int,
    behaviour_steps: int = WALKER_BEHAVIOUR_STEPS,
    fit_steps: int = WALKER_FIT_STEPS,
    fits: int = WALKER_FITS,
    ppo_seed: int = 0,
    open_loop: int = 1,
    dream: str = "mean",
    closed_loop: bool = False,
    dream_episodes: int | None = None,
) -> dict:
    """Checkpoints of one PPO run on the real Walker2d-v5 (every 100k steps, so they span random to
    walking) plus random actions, audited in ``ensemble:default`` dreams fitted on the logged data
    of those behaviour policies (the DOPE setting: random data alone never shows walking).

    ``fits`` models are fitted on the same data with trainer seeds 0, 1, ...; one ranking over all of
    them (``rank_agents(checkpoints=...)``) gives the estimate, the mean of their dream returns per
    policy, and each fit's own Spearman and error are reported beside it: from fit to fit the
    dreamed walkers' returns can move by more than the real gaps between them
    (``benchmarks/RESULTS.md``). Minutes per fit and per audit on one core, once the PPO run exists.

    ``open_loop`` H > 1 fits the ensemble with its open-loop term over ``WALKER_WINDOWS`` windows of
    H steps per update (H=8: 1024 transitions per update, ~7x the seconds of a one-step update).

    ``dream``: how each fitted model imagines, see ``WALKER_DREAMS``. Fits already in ``work`` are
    reused, so another ``dream`` re-audits the same models.

    ``closed_loop``: each fit is then fine-tuned with ``fine_tune_closed_loop`` under the ten PPO
    checkpoints that logged the behaviour data (``ClosedLoopConfig`` defaults, ~18 minutes per fit on
    one core) into ``<fit>_closed_loop``, and those are audited; their sampled dreams use 0.35 of the
    members' std with ``--walker-dream sampled`` (a ``<fit>_closed_loop`` written by an older version
    keeps the scale it was saved with: 1.0 before ``noise_scale`` existed, then 0.5). The policies
    audited are the behaviour policies themselves, so this measures how well a model dreams the
    policies it was tuned under, not an unseen one.

    ``dream_episodes``: dreamed episodes per policy and model (default ``episodes``); the real env
    replays the first ``episodes`` of the same starts. A sampled dream's return over 1000 steps
    varies as much as the real one (sd ~1000 for a walker that may fall), so at 50 episodes its
    Monte-Carlo noise alone reorders walkers whose real means lie within ~100 of each other."""
    from worldflux_gym.audit import rank_agents, write_ranking_report
    from worldflux_gym.audit.ranking import estimate_errors
    from worldflux_gym.audit.report import ranking_text
    from worldflux_gym.data import collect_to_store
    from worldflux_gym.pipelines import fine_tune_closed_loop
    from worldflux_gym.training import fit_world_model

    folder = work / "walker"
    policies = train_walker_ppo(folder / "ppo", ppo_seed)
    data = folder / "data"
    if not data.is_dir():
        log("collect behaviour data")
        collect_to_store(WALKER_ENV, WALKER_RANDOM_STEPS, data, seed=0, progress=False)
        for i, path in enumerate(policies.values()):
            collect_to_store(
                WALKER_ENV, behaviour_steps, data, policy=path, seed=1000 * (i + 1), progress=False
            )
    runs = [folder / ("model" if seed == 0 else f"model_seed{seed}") for seed in range(fits)]
    for seed, run in enumerate(runs):
        if not (run / "metadata.json").is_file():
            log(f"fit ensemble:default, trainer seed {seed}")
            windows = {"sequence_length": open_loop, "batch_size": WALKER_WINDOWS} if open_loop > 1 else {}
            fit_world_model(
                WALKER_ENV, "ensemble:default", run, data_dir=data, steps=fit_steps, seed=seed,
                progress=False, **windows,
            )  # fmt: skip
    if closed_loop:
        tuned = [run.with_name(run.name + "_closed_loop") for run in runs]
        for run, out in zip(runs, tuned):
            if not (out / "config.json").is_file():
                log(f"closed-loop fine-tune of {run.name}")
                fine_tune_closed_loop(run, list(policies.values()), out, device="cpu", progress=False)
        runs = tuned
    dream_episodes = dream_episodes or episodes
    log(
        f"Walker2d off-policy evaluation: {len(policies) + 1} policies x {dream_episodes} dreamed episodes "
        f"x {fits} models, {episodes} real episodes"
    )
    models_per_fit = [_walker_dream_models(run, dream) for run in runs]
    ranking = rank_agents(
        {"random": _walker_random(), **policies},
        WALKER_DREAM,
        checkpoints=[model for models in models_per_fit for model in models],
        episodes=dream_episodes,
        real_episodes=episodes,
        what_if=False,
        deterministic=not dream.startswith("sampled"),
        real=True,
    )
    tag = "_closed_loop" if closed_loop else ""
    write_ranking_report(ranking, work / "reports" / f"walker_ope_{dream}_{fits}fits{tag}", overwrite=True)
    print(ranking_text(ranking), flush=True)
    real, mean_dream = ranking.real_means, ranking.dream_means
    rho, error, relative = ranking.spearman, ranking.mean_absolute_error, ranking.relative_error
    per_model = ranking.dream_means_per_model
    per_model = ranking.dream_means[None] if per_model is None else per_model  # one model: one row
    estimates, per_fit, row = [], [], 0
    for seed, models in enumerate(models_per_fit):
        estimates.append(per_model[row : row + len(models)].mean(axis=0))
        row += len(models)
        fit_rho, fit_error, fit_relative = estimate_errors(estimates[-1], real)
        per_fit.append(
            {
                "seed": seed,
                "spearman": fit_rho,
                "mean_absolute_error": fit_error,
                "relative_error": fit_relative,
            }
        )
    return {
        "policies": {
            n: {
                "dream_mean": float(d),
                "real_mean": float(r),
                "dream_mean_per_fit": [float(x[i]) for x in estimates],
            }
            for i, (n, d, r) in enumerate(zip(ranking.names, mean_dream, real))
        },
        "dream": dream,
        "closed_loop": closed_loop,
        "per_fit": per_fit,
        "spearman": rho,
        # how well two halves of the real episodes agree on the ranking: near 1, the target is fair
        "real_split_half_spearman": ranking.real_split_half_spearman,
        "dream_episodes": dream_episodes,
        "dream_split_half_spearman": ranking.dream_split_half_spearman,
        "mean_absolute_error": error,
        "real_spread": float(real.max() - real.min()),
        "relative_error": relative,
        "error_sources": _error_sources(ranking),
    }


def _error_sources(ranking) -> dict:
    """Which factor of a return, steps alive x reward per step, the estimate gets wrong: the first
    model's estimate with each factor replaced by the real one in turn (Spearman, error / spread)."""
    from worldflux_gym.audit.ranking import estimate_errors

    real_lengths = np.array([a.real.real_lengths.mean() for a in ranking.audits])
    real_returns = ranking.real_means
    dream_lengths = np.array([a.nominal.lengths.mean() for a in ranking.audits])
    dream_returns = np.array([a.nominal.mean_return for a in ranking.audits])
    estimates = {
        "dreamed_reward_per_step_real_lengths": real_lengths * dream_returns / dream_lengths,
        "dreamed_lengths_real_reward_per_step": dream_lengths * real_returns / real_lengths,
    }
    sources = {}
    for name, estimate in estimates.items():
        rho, _, relative = estimate_errors(estimate, real_returns)
        sources[name] = {"spearman": rho, "relative_error": relative}
    return sources


def _walker_dream_models(run: Path, dream: str) -> list[Path | torch.nn.Module]:
    """What one fit dreams with: its checkpoint, or, for ``each-elite``, one model per elite member
    (the same weights, each imagining with that member alone), or for ``sampled-tsinf`` the fit
    with ``propagation`` "tsinf" (in memory: the checkpoint is not touched)."""
    if dream not in ("each-elite", "sampled-tsinf"):
        return [run]
    import copy

    from worldflux_gym.core.checkpoint import from_pretrained

    fitted = from_pretrained(run, device="cpu")
    if dream == "sampled-tsinf":
        fitted.config.propagation = "tsinf"
        return [fitted]
    models = []
    for member in fitted.elite_index.tolist():
        model = copy.deepcopy(fitted)
        model.elite_index = torch.tensor([member])  # deterministic transitions: this member's mean alone
        models.append(model)
    return models


def _walker_random():
    rng = np.random.default_rng(0)

    def random(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(len(obs), 6)).astype(np.float32)

    return random


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/worldflux-bench-audit")
    parser.add_argument("--stage", choices=("prepare", "ope", "exploitation", "all", "walker"), default="all")
    parser.add_argument("--episodes", type=int, default=100, help="audited episodes per policy")
    parser.add_argument(
        "--walker-behaviour-steps", type=int, default=WALKER_BEHAVIOUR_STEPS, help="logged steps each"
    )
    parser.add_argument("--walker-fit-steps", type=int, default=WALKER_FIT_STEPS, help="model updates")
    parser.add_argument(
        "--walker-fits", type=int, default=WALKER_FITS, help="models averaged (seeds 0, 1, ...)"
    )
    parser.add_argument(
        "--walker-ppo-seed", type=int, default=0, help="seed of the real PPO run (the policies)"
    )
    parser.add_argument(
        "--walker-dream",
        choices=WALKER_DREAMS,
        default="mean",
        help="how the models imagine (see WALKER_DREAMS)",
    )
    parser.add_argument(
        "--walker-open-loop", type=int, default=1, help="fit with the open-loop term over H steps (1: off)"
    )
    parser.add_argument(
        "--walker-closed-loop",
        action="store_true",
        help="fine-tune every fit closed loop under the behaviour policies, audit those",
    )
    parser.add_argument(
        "--walker-dream-episodes",
        type=int,
        help="dreamed episodes per policy and model (default --episodes, which the real env replays)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    if args.stage == "walker":  # separate: about 15 minutes more on 2 busy cores
        results = walker(
            work,
            args.episodes,
            args.walker_behaviour_steps,
            args.walker_fit_steps,
            args.walker_fits,
            args.walker_ppo_seed,
            args.walker_open_loop,
            args.walker_dream,
            args.walker_closed_loop,
            args.walker_dream_episodes,
        )
        (work / "results_walker.json").write_text(json.dumps(results, indent=2) + "\n")
        for fit in results["per_fit"]:
            print(
                f"fit seed {fit['seed']}: Spearman {fit['spearman']:.3f}, error {fit['relative_error']:.1%}"
            )
        print(
            f"\nWalker2d-v5 OPE, dream returns averaged over {len(results['per_fit'])} fits: Spearman "
            f"{results['spearman']:.3f} (target >= 0.9), MAE {results['mean_absolute_error']:.1f} = "
            f"{results['relative_error']:.1%} of the real spread {results['real_spread']:.0f} (target <= 10%)"
        )
        labels = {
            "dreamed_reward_per_step_real_lengths": "dreamed reward per step x real episode lengths",
            "dreamed_lengths_real_reward_per_step": "dreamed episode lengths x real reward per step",
        }
        for name, figures in results["error_sources"].items():
            print(
                f"first model, {labels[name]}: Spearman {figures['spearman']:.3f}, "
                f"error {figures['relative_error']:.1%}"
            )
        return
    artefacts = prepare(work)
    log("prepared: " + json.dumps({k: {n: str(p) for n, p in v.items()} for k, v in artefacts.items()}))
    if args.stage == "prepare":
        return
    reports = work / "reports"
    if args.stage in ("ope", "all"):
        ope = off_policy_evaluation(artefacts, args.episodes, reports)
        (work / "results_ope.json").write_text(json.dumps(ope, indent=2) + "\n")
    if args.stage in ("exploitation", "all"):
        exp = exploitation(artefacts, args.episodes, reports)
        (work / "results_exploitation.json").write_text(json.dumps(exp, indent=2) + "\n")
    if args.stage != "all":
        return
    print(
        f"\nPendulum-v1 OPE: Spearman {ope['spearman']:.3f} (target >= 0.9), "
        f"MAE {ope['mean_absolute_error']:.1f} = {ope['relative_error']:.1%} of the real spread "
        f"{ope['real_spread']:.0f} (target <= 10%)"
    )
    for label in ("exploiter_in_poor_dream", "sound_in_good_dream", "exploiter_in_good_dream"):
        r = exp[label]
        print(
            f"{label}: dream {r['dream_mean']:.0f}, real {r['real_mean']:.0f}, "
            f"unsure {r['unsure_share']:.1%}, flagged {r['flagged']}"
        )
    print(f"exploitation detected (exploiter flagged, sound agent not): {exp['detected']}")
    log(f"results in {work / 'results.json'}, reports in {reports}")


if __name__ == "__main__":
    main()
