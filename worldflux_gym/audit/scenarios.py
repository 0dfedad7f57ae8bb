"""The audit's scenarios: a scenario's summary (return interval, uncertainty, unsure share, flag),
and the what-if scenarios: start noise, action noise and the cross-entropy-method (CEM) search over
bounded start perturbations for the starts with the lowest dream return (see ``audit.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from worldflux_gym.audit.dream import Calibration, DreamRollouts, dream_rollouts
from worldflux_gym.audit.real import project_starts
from worldflux_gym.audit.results import AuditConfig, ScenarioResult
from worldflux_gym.audit.stats import bootstrap_ci
from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.policy import Policy
from worldflux_gym.dream.resolve import ResolvedDream


# --- a scenario's summary -------------------------------------------------------------------------
def summarise(
    name: str,
    description: str,
    rollouts: DreamRollouts,
    calibration: Calibration | None,
    config: AuditConfig,
) -> ScenarioResult:
    """Return interval, uncertainty over time, unsure share and return share unsure of ``rollouts``."""
    returns = rollouts.returns
    result = ScenarioResult(
        name=name,
        description=description,
        returns=returns,
        lengths=rollouts.lengths,
        interval=bootstrap_ci(returns, config.confidence, seed=config.seed),
        terminated_share=float(rollouts.terminated.mean()),
    )
    u, alive = rollouts.uncertainty, rollouts.alive
    if u is None or calibration is None:
        return result
    live = np.where(alive, u, np.nan)
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        result.uncertainty_per_step = {
            "mean": np.nanmean(live, axis=1).tolist(),
            "q90": np.nanquantile(live, 0.9, axis=1).tolist(),
        }
    result.uncertainty_mean = float(np.nanmean(live))
    unsure = alive & (u > calibration.threshold)
    result.unsure_share = float(unsure.sum() / max(alive.sum(), 1))
    result.unsure_share_per_episode = unsure.sum(axis=0) / np.maximum(alive.sum(axis=0), 1)
    # rewards above the lowest real reward (a dreamed reward below it counts 0): every step earns >= 0,
    # so a share of the total is defined
    lifted = np.where(alive, np.maximum(rollouts.rewards - calibration.reward_floor, 0.0), 0.0)
    total = lifted.sum()
    result.return_share_unsure = float(lifted[unsure].sum() / total) if total > 0 else 0.0
    sure = alive & ~unsure
    result.reward_rate_sure = float(rollouts.rewards[sure].mean()) if sure.any() else None
    result.reward_rate_unsure = float(rollouts.rewards[unsure].mean()) if unsure.any() else None
    margin = 0.01 * (calibration.reward_ceiling - calibration.reward_floor)  # float noise, not a reward
    above = alive & (rollouts.rewards > calibration.reward_ceiling + margin)
    result.reward_above_real_share = float(above.sum() / max(alive.sum(), 1))
    if result.return_share_unsure > config.flag_share and result.return_share_unsure > result.unsure_share:
        result.flag_reason = "exploitation"
    elif result.unsure_share > config.off_data_share:
        result.flag_reason = "off the data"
    return result


class _quiet_nan_warnings:
    """All-NaN slices (steps after every episode ended) are expected; their warnings are noise."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


# --- what-if scenarios ----------------------------------------------------------------------------
def flat_box(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and len(space.shape) == 1


def perturb_starts(
    starts: np.ndarray,
    scale: np.ndarray,
    noise: np.ndarray,
    space: spaces.Box,
    real_env: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``starts + noise * scale``, mapped onto real states where the real env allows it (so that the
    dream and a real replay start from the same state), and kept inside the observation space."""
    perturbed = (starts + noise * scale).astype(np.float32)
    projected = np.zeros(len(starts), dtype=bool)
    if real_env is not None:
        perturbed, projected = project_starts(real_env, perturbed)
    return np.clip(perturbed, space.low, space.high).astype(np.float32), projected


def adversarial_search(
    model: WorldModel,
    policy: Policy,
    bases: np.ndarray,
    scale: np.ndarray,
    space: spaces.Box,
    real_env: str | None,
    horizon: int,
    config: AuditConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """CEM over start perturbations ``|delta| <= radius`` (per dimension, in units of ``scale``) around
    each base start, minimising the dream return. All bases x candidates run as one dream batch.

    The search dreams deterministically (the model's mean transition), so that CEM follows starts
    that are bad rather than unlucky draws. Returns the worst start found per base, its perturbation
    in units of ``scale``, the deterministic dream return of each unperturbed base, and the mean
    over bases of the worst return found after each iteration.
    """
    rng = np.random.default_rng(config.seed + 7)
    k, d = bases.shape
    p, radius = config.cem_population, config.adversarial_radius
    n_elite = max(2, int(round(config.cem_elite_fraction * p)))
    mean, std = np.zeros((k, d)), np.full((k, d), radius / 2.0)
    worst_start, worst_delta = bases.copy(), np.zeros((k, d))
    worst_return = np.full(k, np.inf)
    base_return = np.zeros(k)
    history = []
    for iteration in range(config.cem_iterations):
        delta = np.clip(mean[:, None] + std[:, None] * rng.standard_normal((k, p, d)), -radius, radius)
        delta[:, 0] = mean  # the current mean competes too
        candidates, _ = perturb_starts(
            np.repeat(bases, p, axis=0), np.asarray(scale), delta.reshape(k * p, d), space, real_env
        )
        returns = dream_rollouts(
            model, policy, candidates, horizon, seed=config.seed + iteration, deterministic=True,
            report_uncertainty=False, keep_obs=False,
        ).returns.reshape(k, p)  # fmt: skip
        if iteration == 0:
            base_return = returns[:, 0].copy()  # the first mean is 0: the unperturbed start
        order = np.argsort(returns, axis=1)
        elites = np.take_along_axis(delta, order[:, :n_elite, None], axis=1)
        mean, std = elites.mean(axis=1), elites.std(axis=1) + 1e-3 * radius
        best = order[:, 0]
        improved = returns[np.arange(k), best] < worst_return
        candidates = candidates.reshape(k, p, d)
        worst_return = np.where(improved, returns[np.arange(k), best], worst_return)
        worst_start[improved] = candidates[improved, best[improved]]
        worst_delta[improved] = ((worst_start - bases) / scale)[improved]
        history.append(float(worst_return.mean()))
    return worst_start.astype(np.float32), worst_delta, base_return, history


def value_at(values: np.ndarray | None, i: int) -> float | None:
    return None if values is None else float(values[i])


def what_if(
    run: Callable[..., ScenarioResult],
    scenarios: dict[str, ScenarioResult],
    worst_cases: list[dict[str, Any]],
    starts: np.ndarray,
    scale: np.ndarray,
    setup: ResolvedDream,
    env_for_starts: str | None,
    policy: Policy,
    config: AuditConfig,
) -> np.ndarray:
    """Start noise, action noise and the adversarial search (``run`` dreams and summarises one
    scenario); adds them to ``scenarios`` and ``worst_cases``, returns the worst start per base."""
    space, horizon = setup.model.observation_space, setup.horizon
    assert horizon is not None  # the audit set it
    assert isinstance(space, spaces.Box)  # the caller checked flat_box
    rng = np.random.default_rng(config.seed + 1)
    noise = config.start_noise * rng.standard_normal(starts.shape)
    noisy, _ = perturb_starts(starts, scale, noise, space, env_for_starts)
    scenarios["start_noise"] = run(
        "start_noise", f"start obs + N(0, ({config.start_noise} x data std)^2)", noisy
    )
    scenarios["action_noise"] = run(
        "action_noise",
        f"actions + N(0, ({config.action_noise} x half range)^2)",
        starts,
        action_noise=config.action_noise,
    )
    k = min(config.adversarial_bases, len(starts))
    worst_start, worst_delta, base_return, history = adversarial_search(
        setup.model, policy, starts[:k], scale, space, env_for_starts, horizon, config
    )
    adversarial = scenarios["adversarial"] = run(
        "adversarial",
        f"CEM ({config.cem_iterations} x {config.cem_population}) over start perturbations "
        f"|delta| <= {config.adversarial_radius} data std; the worst start per base, in the "
        "deterministic dream the search used",
        worst_start,
        deterministic=True,
    )
    for i in np.argsort(adversarial.returns)[: config.worst_cases]:
        worst_cases.append(
            {
                "scenario": "adversarial",
                "base_start": int(i),
                "start_obs": worst_start[i],
                "perturbation_in_std": worst_delta[i],
                "dream_return": float(adversarial.returns[i]),
                "unperturbed_dream_return": float(base_return[i]),  # deterministic, like the search
                "unsure_share": value_at(adversarial.unsure_share_per_episode, i),
                "cem_history": history,
            }
        )
    return worst_start
