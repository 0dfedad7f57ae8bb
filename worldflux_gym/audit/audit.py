"""Auditing a policy inside the imagination: what return to expect, where the model is unsure, and
whether the return comes from there.

An agent that practised in a dream can learn the model's mistakes instead of the task (World
Models: 2086 in the dream, 193 in reality). The audit runs the agent in the dream from many real
starts and reports, per scenario:

- the expected return with a 95% **percentile bootstrap** interval over episodes;
- the model's per-step uncertainty (ensemble disagreement) over time;
- the **unsure share**: the share of dreamed steps whose uncertainty exceeds the ``quantile``
  (0.99 by default) of the model's uncertainty on *real* transitions (held-out episodes of the
  checkpoint's data when it has them, else fresh random-action steps of the real env, the data the
  shipped models are fitted on). On real data 1% of steps lie above this level by construction,
  so an agent that spends far more of its time there is off the data the model knows;
- the **return share unsure**: the share of the return earned on those steps, with each reward
  counted above the lowest real reward in the same data, and dreamed rewards below it as 0 (so
  that a share means something for envs whose rewards are all negative, like Pendulum);
- the share of dreamed steps whose reward is above the highest real reward in the same data
  (rewards the real env never paid: a model error the agent may be living on, whatever the
  ensemble's agreement);
- a **flag**, for one of two reasons. *Exploitation*: more than ``flag_share`` (25%) of the return
  is earned on unsure steps and the agent earns more there than elsewhere (return share unsure >
  unsure share). *Off the data*: more than ``off_data_share`` (30%, thirty times the real data's
  rate) of the steps are unsure, whatever is earned there: the return of an agent that lives off
  the data is unverified, and the ensemble can agree on the same wrong extrapolation (the
  benchmark's exploiter earns part of its inflated dream return where its members agree). Both
  levels were set on the Pendulum benchmark, between the shares of sound agents and of a
  dream-trained exploiter (``benchmarks/RESULTS.md``, "Exploitation"); the flag is about returns
  the dream may inflate. They are heuristics, not guarantees (``docs/audit.md``).

Scenarios: ``nominal`` (real starts), ``start_noise`` (Gaussian noise on the start observation, in
units of the real data's per-dimension std), ``action_noise`` (Gaussian noise on every action, in
units of half the action range), and ``adversarial``: a cross-entropy-method (CEM) search over
bounded start perturbations for the starts with the lowest dream return. With ``real``, the
nominal starts and the adversarial worst starts are replayed in the real env (``real.py``) and the
report gives the dream-minus-real return gap per episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from worldflux_gym.audit.dream import (
    Calibration,
    DreamRollouts,
    calibrate,
    calibration_buffer,
    dream_rollouts,
)
from worldflux_gym.audit.real import can_set_state, draw_real_starts, project_starts, real_rollouts
from worldflux_gym.audit.stats import Interval, bootstrap_ci, spearman, split_half_spearman
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.core.validate import (
    check_float,
    check_int,
    check_optional_positive_int,
    check_positive_int,
    check_seed,
)
from worldflux_gym.data.policy import Agent, Policy, agent_name, as_policy
from worldflux_gym.dream.core import checkpoint_dir_of, latent_observation_space, latent_of, load_model


@dataclass
class AuditConfig:
    """Settings of an audit; every one is written to ``report.json``."""

    episodes: int = 100  # starts of the nominal scenario (one dreamed episode each)
    # With a real env: how many of those starts (the first ones) to replay there; None: all. Dreamed
    # episodes are cheap and real ones are not, and over long horizons a stochastic dream needs
    # many more episodes than the real env to rank policies reproducibly (``Ranking``).
    real_episodes: int | None = None
    horizon: int | None = None  # dream steps per episode; None: the dream id's episode limit
    seed: int = 0
    deterministic: bool = False  # False: the stochastic dream agents practise in
    unsure_quantile: float = 0.99  # the "unsure" threshold, as a quantile of real-data uncertainty
    flag_share: float = 0.25  # flag when more than this share of the return is earned while unsure
    off_data_share: float = 0.30  # flag when more than this share of steps is unsure (30x real data)
    what_if: bool = True  # run the start-noise, action-noise and adversarial scenarios
    start_noise: float = 0.1  # std of start noise, in units of the real data's per-dimension std
    action_noise: float = 0.1  # std of action noise, in units of half the action range
    adversarial_bases: int = 8  # real starts the CEM searches around (one worst case each)
    adversarial_radius: float = 0.5  # max |perturbation| per dimension, in units of the data's std
    cem_iterations: int = 5
    cem_population: int = 32
    cem_elite_fraction: float = 0.2
    worst_cases: int = 5  # worst cases listed in the report
    calibration_steps: int = 3000  # fresh real steps when the checkpoint holds no data
    confidence: float = 0.95

    def __post_init__(self) -> None:
        """Every setting is checked here, where it is given: ``episodes=0`` or ``horizon=0`` would
        otherwise fail deep inside (or, for ``horizon``, silently mean the default)."""
        for name in (
            "episodes",
            "adversarial_bases",
            "cem_iterations",
            "cem_population",
            "calibration_steps",
        ):
            setattr(self, name, check_positive_int(getattr(self, name), name))
        self.worst_cases = check_int(self.worst_cases, "worst_cases", minimum=0)
        self.real_episodes = check_optional_positive_int(self.real_episodes, "real_episodes")
        self.horizon = check_optional_positive_int(self.horizon, "horizon")
        self.seed = check_seed(self.seed)
        for name in ("unsure_quantile", "flag_share", "off_data_share", "cem_elite_fraction", "confidence"):
            value = check_float(getattr(self, name), name, minimum=0.0, maximum=1.0)
            if name in ("unsure_quantile", "cem_elite_fraction", "confidence") and value == 0.0:
                raise ConfigError(f"{name} must be a finite number > 0 and <= 1, got {value}")
            setattr(self, name, value)
        for name in ("start_noise", "action_noise", "adversarial_radius"):
            setattr(self, name, check_float(getattr(self, name), name, minimum=0.0))


@dataclass
class ScenarioResult:
    """The dreamed episodes of one scenario, summarised."""

    name: str
    description: str
    returns: np.ndarray
    lengths: np.ndarray
    interval: Interval
    terminated_share: float
    uncertainty_mean: float | None = None
    uncertainty_per_step: dict[str, list[float]] | None = None  # mean / q90 over live episodes
    unsure_share: float | None = None
    unsure_share_per_episode: np.ndarray | None = None
    return_share_unsure: float | None = None
    reward_rate_sure: float | None = None
    reward_rate_unsure: float | None = None
    reward_above_real_share: float | None = None  # steps paid more than any real step in the data
    flag_reason: str | None = None  # "exploitation", "off the data" or None

    @property
    def flagged(self) -> bool:
        return self.flag_reason is not None

    @property
    def mean_return(self) -> float:
        return self.interval.mean

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "interval"}
        data["interval"] = self.interval.as_dict()
        data["flagged"] = self.flagged
        return _jsonable(data)


@dataclass
class RealComparison:
    """The first ``real_episodes`` of the nominal starts in the real env: returns, and the
    dream-minus-real gap per episode (``dream_returns`` are those starts' dreamed returns)."""

    env_id: str
    method: str
    dream_returns: np.ndarray
    real_returns: np.ndarray
    dream_lengths: np.ndarray  # [N] steps: a dream that ends episodes early or late shows here first
    real_lengths: np.ndarray
    start_reproduced: np.ndarray  # [N] bool: the real start equals the dream's (to 1e-4)
    real_interval: Interval
    gap_interval: Interval  # of dream - real, per episode
    episode_correlation: float | None  # Pearson, dream vs real return per episode

    @property
    def gaps(self) -> np.ndarray:
        return self.dream_returns - self.real_returns

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.endswith("interval")}
        data.update(
            gaps=self.gaps,
            real_interval=self.real_interval.as_dict(),
            gap_interval=self.gap_interval.as_dict(),
        )
        return _jsonable(data)


@dataclass
class AuditResult:
    """Everything an audit measured: per scenario, the calibration, worst cases and the real replay.

    ``as_dict()`` is what ``report.json`` holds; ``rollouts`` (the raw dreamed episodes, for your own
    plots) are kept out of it.
    """

    agent: str
    dream_id: str | None
    real_env: str | None
    checkpoint: str | None
    config: AuditConfig
    calibration: Calibration | None
    scenarios: dict[str, ScenarioResult]
    worst_cases: list[dict[str, Any]]
    real: RealComparison | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rollouts: dict[str, DreamRollouts] = field(default_factory=dict, repr=False)  # not in the JSON
    agent_path: str | None = None  # the agent's .zip, when it was given as one (for videos)

    @property
    def nominal(self) -> ScenarioResult:
        return self.scenarios["nominal"]

    @property
    def flagged(self) -> bool:
        return self.nominal.flagged

    def verdict(self) -> str:
        """One sentence on whether the dream return can be trusted."""
        s = self.nominal
        if s.unsure_share is None:
            return "the model reports no uncertainty: the dream return cannot be checked for exploitation"
        q = f"{self.calibration.quantile:.0%}" if self.calibration else "most"
        text = (
            f"{s.unsure_share:.1%} of dreamed steps are beyond the uncertainty of {q} of real transitions "
            f"and earn {s.return_share_unsure:.1%} of the return"
        )
        if s.reward_above_real_share:
            text += f"; {s.reward_above_real_share:.1%} of steps are paid more than any real step in the data"
        if s.flag_reason == "exploitation":
            return "FLAGGED (exploitation): " + text + ": the dream return is likely inflated by model errors"
        if s.flag_reason == "off the data":
            return "FLAGGED (off the data): " + text + ": the dream return is unverified there"
        return "OK: " + text

    def as_dict(self) -> dict:
        return _jsonable(
            {
                "agent": self.agent,
                "dream_id": self.dream_id,
                "real_env": self.real_env,
                "checkpoint": self.checkpoint,
                "config": asdict(self.config),
                "calibration": self.calibration.as_dict() if self.calibration else None,
                "verdict": self.verdict(),
                "flagged": self.flagged,
                "scenarios": {k: v.as_dict() for k, v in self.scenarios.items()},
                "worst_cases": self.worst_cases,
                "real": self.real.as_dict() if self.real else None,
                "notes": self.notes,
                "seconds": self.seconds,
            }
        )


# --- the dream an audit runs in -------------------------------------------------------------------
@dataclass
class DreamSetup:
    model: WorldModel
    dream_id: str | None
    real_env: str | None
    horizon: int
    checkpoint: Path | None


def resolve_dream(
    dream_id: str | None,
    checkpoint: str | Path | WorldModel | None = None,
    real_env: str | None = None,
    horizon: int | None = None,
    device: str = "auto",
) -> DreamSetup:
    """The model, real env and horizon of a registered dream id (``checkpoint`` replaces its weights),
    or of a bare checkpoint / model with ``real_env`` and ``horizon`` given."""
    spec = None
    if dream_id is not None:
        from worldflux_gym.dream.registration import find_spec, resolve_checkpoint

        spec = find_spec(dream_id)
        if not isinstance(checkpoint, WorldModel):
            checkpoint = resolve_checkpoint(spec, checkpoint)
    if checkpoint is None:
        raise ConfigError("name a dream id (WorldFlux/...) or give a fitted checkpoint to audit in")
    real_env = real_env or (spec.real_env if spec else None)
    horizon = check_optional_positive_int(horizon, "horizon")
    if horizon is None:
        horizon = spec.max_episode_steps if spec else None
    if horizon is None:
        raise ConfigError("a bare checkpoint has no episode limit: pass horizon=")
    # its directory's data calibrates the audit, its weights render the videos
    path = checkpoint_dir_of(checkpoint)
    return DreamSetup(load_model(checkpoint, device), dream_id, real_env, int(horizon), path)


# --- summaries ------------------------------------------------------------------------------------
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


def _jsonable(value: Any) -> Any:
    """numpy arrays and scalars to lists and numbers; NaN and inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


# --- what-if scenarios ----------------------------------------------------------------------------
def _flat_box(space: spaces.Space) -> bool:
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


# --- the audit ------------------------------------------------------------------------------------
def audit_agent(
    agent: Agent,
    dream_id: str | None = None,
    *,
    checkpoint: str | Path | WorldModel | None = None,
    real: bool | str = False,
    config: AuditConfig | None = None,
    starts: np.ndarray | None = None,
    real_env: str | None = None,
    calibration: Calibration | None = None,
    name: str | None = None,
    **overrides: Any,
) -> AuditResult:
    """Audit ``agent`` in the dream ``dream_id`` (a ``WorldFlux/*`` id; ``checkpoint`` replaces its
    weights) or in a bare ``checkpoint`` / model (then give ``real_env`` and ``horizon``).

    ``agent``: an SB3 ``.zip``, an SB3 model, or a callable from a batch of observations to a batch
    of actions. ``real``: ``True`` replays the starts in the dream's real env, a string names
    another env id. ``starts``: the start observations ``[N, *obs_shape]`` to use instead of
    ``config.episodes`` real resets. ``overrides``: :class:`AuditConfig` fields
    (``audit_agent(a, id, episodes=50)``). See the module docstring for what is measured and
    ``docs/audit.md`` for how to read the result; ``write_report`` writes it to a folder.

    >>> import numpy as np
    >>> from worldflux_gym.audit import audit_agent
    >>> def still(obs):  # no torque
    ...     return np.zeros((len(obs), 1), np.float32)
    >>> result = audit_agent(
    ...     still, "WorldFlux/Ensemble-Pendulum-v0", episodes=10, what_if=False, calibration_steps=500
    ... )
    >>> result.nominal.returns.shape, result.flagged
    ((10,), False)
    """
    config = config or AuditConfig()
    if overrides:
        unknown = set(overrides) - set(AuditConfig.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown audit settings {sorted(unknown)}; see AuditConfig")
        config = AuditConfig(**{**asdict(config), **overrides})
    if config.real_episodes is not None and not 1 <= config.real_episodes <= config.episodes:
        raise ConfigError(
            f"real_episodes={config.real_episodes}: replay between 1 and episodes={config.episodes} "
            "of the dreamed starts in the real env (None: all of them)"
        )
    started = time.perf_counter()
    setup = resolve_dream(dream_id, checkpoint, real_env, config.horizon)
    model, horizon = setup.model, setup.horizon
    real_id = setup.real_env if real is True else (real or None)
    env_for_starts = real_id or setup.real_env
    if isinstance(real, str) and real:
        _check_real_env(real, model)
    policy = as_policy(
        agent,
        observation_space=model.observation_space
        if model.capabilities.decodes_observations
        else latent_observation_space(model),
        action_space=model.action_space,
        where=f"the dream {setup.dream_id or setup.checkpoint}",
        hint="audit it in a dream of the env it was trained for",
    )
    notes: list[str] = []

    # real data: the uncertainty threshold and the scale of perturbations
    buffer, source = calibration_buffer(
        setup.checkpoint, env_for_starts, config.calibration_steps, config.seed
    )
    if calibration is None:
        calibration = calibrate(model, buffer, source, config.unsure_quantile, seed=config.seed)
    if calibration is None:
        notes.append(f"the {model.family!r} family reports no uncertainty: no unsure share, no flag")
    scale = buffer.obs.reshape(len(buffer.obs), -1).std(axis=0).astype(np.float32)
    scale = np.where(scale > 1e-6, scale, 1.0)

    if starts is None:
        if env_for_starts is None:
            raise ConfigError("without a real env to reset, pass the start observations (starts=)")
        starts, seeds = draw_real_starts(env_for_starts, config.episodes, config.seed)
        start_source = f"{len(starts)} seeded resets of {env_for_starts} (seeds {seeds[0]}..{seeds[-1]})"
        reset_seeds = True
    else:
        starts = np.asarray(starts, dtype=np.float32)
        seeds = [config.seed + i for i in range(len(starts))]
        start_source = f"{len(starts)} start observations given by the caller"
        reset_seeds = False  # the seeds only seed the real envs before their state is set
    notes.append(f"starts: {start_source}")

    def run(name: str, description: str, start_obs: np.ndarray, **kwargs: Any) -> ScenarioResult:
        kwargs.setdefault("deterministic", config.deterministic)
        rollouts = dream_rollouts(model, policy, start_obs, horizon, seed=config.seed, **kwargs)
        rollouts_by_name[name] = rollouts
        return summarise(name, description, rollouts, calibration, config)

    rollouts_by_name: dict[str, DreamRollouts] = {}
    scenarios = {"nominal": run("nominal", "real starts, the agent's own actions", starts)}
    worst_cases: list[dict[str, Any]] = []
    worst_start = None
    if config.what_if and _flat_box(model.observation_space):
        worst_start = _what_if(
            run, scenarios, worst_cases, starts, scale, setup, env_for_starts, policy, config
        )
    elif config.what_if:
        notes.append(f"what-if scenarios need a 1-D Box observation space, not {model.observation_space}")
    nominal = scenarios["nominal"]
    for i in np.argsort(nominal.returns)[: config.worst_cases]:
        worst_cases.append(
            {
                "scenario": "nominal",
                "start": int(i),
                "seed": seeds[i] if reset_seeds else None,  # the real reset this start came from
                "start_obs": starts[i],
                "dream_return": float(nominal.returns[i]),
                "unsure_share": _at(nominal.unsure_share_per_episode, i),
            }
        )
    comparison = None
    if real_id:
        comparison = _replay(
            real_id, setup, policy, nominal, starts, seeds, worst_start, worst_cases, notes, config
        )

    result = AuditResult(
        agent=name or agent_name(agent),
        dream_id=setup.dream_id,
        real_env=real_id or setup.real_env,
        checkpoint=str(setup.checkpoint) if setup.checkpoint else None,
        config=config,
        calibration=calibration,
        scenarios=scenarios,
        worst_cases=_jsonable(worst_cases),
        real=comparison,
        notes=notes,
        rollouts=rollouts_by_name,
        agent_path=str(agent) if isinstance(agent, (str, Path)) else None,
    )
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _check_real_env(env_id: str, model: WorldModel) -> None:
    """The real env named for the replay exists and has the spaces the model was fitted for."""
    from worldflux_gym.core.envs import make_env
    from worldflux_gym.core.errors import SpaceError
    from worldflux_gym.core.spaces import spaces_fit

    env = make_env(env_id, "real")
    try:
        if not (
            spaces_fit(env.observation_space, model.observation_space)
            and spaces_fit(env.action_space, model.action_space)
        ):
            raise SpaceError(
                f"real={env_id!r} has spaces {env.observation_space} / {env.action_space}, but the model "
                f"was fitted for {model.observation_space} / {model.action_space}: replay in the env "
                "the model was fitted on (bare --real: the dream's own)"
            )
    finally:
        env.close()


def _at(values: np.ndarray | None, i: int) -> float | None:
    return None if values is None else float(values[i])


def _what_if(
    run: Callable[..., ScenarioResult],
    scenarios: dict[str, ScenarioResult],
    worst_cases: list[dict[str, Any]],
    starts: np.ndarray,
    scale: np.ndarray,
    setup: DreamSetup,
    env_for_starts: str | None,
    policy: Policy,
    config: AuditConfig,
) -> np.ndarray:
    """Start noise, action noise and the adversarial search; returns the worst start per base."""
    space, horizon = setup.model.observation_space, setup.horizon
    assert isinstance(space, spaces.Box)  # the caller checked _flat_box
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
                "unsure_share": _at(adversarial.unsure_share_per_episode, i),
                "cem_history": history,
            }
        )
    return worst_start


def _replay(
    real_id: str,
    setup: DreamSetup,
    policy: Policy,
    nominal: ScenarioResult,
    starts: np.ndarray,
    seeds: list[int],
    worst_start: np.ndarray | None,
    worst_cases: list[dict[str, Any]],
    notes: list[str],
    config: AuditConfig,
) -> RealComparison:
    """The nominal starts (and the adversarial worst starts) in the real env; the dream-real comparison."""
    model, horizon = setup.model, setup.horizon
    observe = None if model.capabilities.decodes_observations else _encoder(model)
    count = config.real_episodes or len(starts)
    replay = real_rollouts(real_id, policy, starts[:count], seeds[:count], horizon, observe)
    for case in worst_cases:
        if case["scenario"] == "nominal" and case["start"] < count:
            case["real_return"] = float(replay.returns[case["start"]])
    if worst_start is not None:
        if can_set_state(real_id):
            worst = real_rollouts(real_id, policy, worst_start, seeds[: len(worst_start)], horizon, observe)
            for case in worst_cases:
                if case["scenario"] == "adversarial":
                    case["real_return"] = float(worst.returns[case["base_start"]])
        else:
            notes.append(f"{real_id}'s state cannot be set from an observation: worst starts not replayed")
    return compare(real_id, nominal, replay, config)


def _encoder(model: WorldModel):
    """Real observations -> the latents a latent family's agent sees (as EncodeObservation does)."""

    def observe(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.as_tensor(obs, dtype=torch.float32, device=model.device)
            return latent_of(model, model.encode(tensor)).float().cpu().numpy()

    return observe


def compare(env_id: str, dream: ScenarioResult, replay, config: AuditConfig) -> RealComparison:
    """Dream against real episode by episode: the replay holds the first of the dreamed starts."""
    count = len(replay.returns)
    dream_returns = dream.returns[:count]
    gaps = dream_returns - replay.returns
    correlation = None
    if dream_returns.std() > 0 and replay.returns.std() > 0:
        correlation = float(np.corrcoef(dream_returns, replay.returns)[0, 1])
    return RealComparison(
        env_id=env_id,
        method=replay.method,
        dream_returns=dream_returns,
        real_returns=replay.returns,
        dream_lengths=dream.lengths[:count],
        real_lengths=replay.lengths,
        start_reproduced=replay.start_error <= 1e-4,
        real_interval=bootstrap_ci(replay.returns, config.confidence, seed=config.seed),
        gap_interval=bootstrap_ci(gaps, config.confidence, seed=config.seed),
        episode_correlation=correlation,
    )


# --- ranking --------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """Agents ordered by dream return, with the Spearman correlation against real returns."""

    names: list[str]
    dream_means: np.ndarray
    real_means: np.ndarray | None
    spearman: float | None
    mean_absolute_error: float | None  # |dream - real| of the means, averaged over agents
    relative_error: float | None  # the same, over the spread (max - min) of the real means
    audits: list[AuditResult]
    # How reproducible the real ranking itself is (``stats.split_half_spearman`` of the replayed
    # episodes); a low figure means the real means are too close to rank. None without replays.
    real_split_half_spearman: float | None = None
    # Ranked over several fitted models (``rank_agents(checkpoints=...)``): each model's dream means
    # [models, agents]; ``dream_means`` is their mean and ``audits`` are the first model's.
    dream_means_per_model: np.ndarray | None = None
    # The same for the dream: two random halves of each agent's dreamed episodes (of every model).
    # Below the real figure, the dream's Monte-Carlo noise is reordering agents: dream more episodes.
    dream_split_half_spearman: float | None = None

    @property
    def model_spread(self) -> np.ndarray | None:
        """Per agent, the std of the dream means over the fitted models (None for one model): where
        it is large against the gaps between agents, their order is the models' guess."""
        per_model = self.dream_means_per_model
        return None if per_model is None else per_model.std(axis=0, ddof=1)

    def order(self) -> list[int]:
        return list(np.argsort(-self.dream_means, kind="stable"))

    def as_dict(self) -> dict:
        rows = []
        for rank, i in enumerate(self.order(), start=1):
            audit = self.audits[i]
            rows.append(
                {
                    "rank": rank,
                    "agent": self.names[i],
                    "dream_return": self._dream_return(i),
                    "real_return": None if audit.real is None else audit.real.real_interval.as_dict(),
                    "unsure_share": audit.nominal.unsure_share,
                    "flagged": audit.flagged,
                }
            )
        return _jsonable(
            {
                "rows": rows,
                "spearman": self.spearman,
                "mean_absolute_error": self.mean_absolute_error,
                "relative_error": self.relative_error,
                "real_split_half_spearman": self.real_split_half_spearman,
                "dream_split_half_spearman": self.dream_split_half_spearman,
                "models": 1 if self.dream_means_per_model is None else len(self.dream_means_per_model),
            }
        )

    def _dream_return(self, i: int) -> dict:
        if self.dream_means_per_model is None:
            return self.audits[i].nominal.interval.as_dict()
        return {
            "mean": float(self.dream_means[i]),
            "per_model": self.dream_means_per_model[:, i].tolist(),
            "model_spread": float(self.dream_means_per_model[:, i].std(ddof=1)),
        }


def estimate_errors(
    dream_means: np.ndarray, real_means: np.ndarray
) -> tuple[float | None, float, float | None]:
    """How well dream means estimate real means: Spearman rank correlation, mean absolute error,
    and that error over the spread (max - min) of the real means (None when they have no spread)."""
    dream_means, real_means = np.asarray(dream_means, np.float64), np.asarray(real_means, np.float64)
    mae = float(np.abs(dream_means - real_means).mean())
    spread = float(real_means.max() - real_means.min())
    return spearman(dream_means, real_means), mae, (mae / spread if spread > 0 else None)


def ranking_of(audits: list[AuditResult], real_means: np.ndarray | None = None) -> Ranking:
    """Rank audited agents; real means come from the audits' replays unless given."""
    names = [a.agent for a in audits]
    dream = np.array([a.nominal.mean_return for a in audits])
    replays = [a.real for a in audits if a.real is not None]
    replayed = len(replays) == len(audits)
    if real_means is None and replayed:
        real_means = np.array([r.real_returns.mean() for r in replays])
    reproducibility = split_half_spearman([r.real_returns for r in replays]) if replayed else None
    rho = mae = relative = None
    if real_means is not None:
        real_means = np.asarray(real_means, dtype=np.float64)
        rho, mae, relative = estimate_errors(dream, real_means)
    dream_reproducibility = split_half_spearman([a.nominal.returns for a in audits])
    return Ranking(
        names, dream, real_means, rho, mae, relative, audits, reproducibility,
        dream_split_half_spearman=dream_reproducibility,
    )  # fmt: skip


def rank_agents(
    agents: list[Agent] | dict[str, Agent],
    dream_id: str | None = None,
    *,
    checkpoints: Sequence[str | Path | WorldModel] | None = None,
    real_returns: list[float] | np.ndarray | None = None,
    **audit_options: Any,
) -> Ranking:
    """Audit every agent from the same starts and rank them by dream return.

    The Spearman rank correlation with real returns is reported when ``real_returns`` (one mean per
    agent) is given or when the audits replay in the real env (``real=True``).

    ``checkpoints``: several models fitted on the same data (e.g. trainer seeds 0, 1, 2), in place of
    one ``checkpoint``. Every agent is audited in each; the estimate is the mean of their dream
    means and ``Ranking.model_spread`` shows where they disagree. From one fit to the next the
    dreamed return of a policy can move by more than the real gaps between policies
    (``benchmarks/RESULTS.md``, Walker2d-v5); averaging fits takes out that part of the error, not
    a bias they share. The real replay runs with the first model only (it does not depend on the
    model).

    >>> import numpy as np
    >>> from worldflux_gym.audit import rank_agents
    >>> def still(obs):
    ...     return np.zeros((len(obs), 1), np.float32)
    >>> def push(obs):  # full torque: it spins the pendulum, far from the data
    ...     return np.full((len(obs), 1), 2.0, np.float32)
    >>> ranking = rank_agents(
    ...     {"still": still, "push": push}, "WorldFlux/Ensemble-Pendulum-v0",
    ...     episodes=10, what_if=False, calibration_steps=500, real=True, real_episodes=3,
    ... )
    >>> [ranking.names[i] for i in ranking.order()], ranking.spearman
    (['still', 'push'], 1.0)
    """
    named = agents if isinstance(agents, dict) else {agent_name(a): a for a in agents}
    if len(named) != (len(agents)):
        raise ConfigError("two agents have the same name; pass a dict {name: agent}")
    real_means = None if real_returns is None else np.asarray(real_returns)
    if checkpoints is not None:
        if "checkpoint" in audit_options:
            raise ConfigError("give either checkpoint= (one model) or checkpoints= (several), not both")
        if not checkpoints:
            raise ConfigError("checkpoints= is empty: give one or more fitted models")
        if audit_options.get("calibration") is not None:
            raise ConfigError("calibration= is one model's; with checkpoints= each model calibrates itself")
        audit_options["checkpoint"] = checkpoints[0]
    first = ranking_of(_audit_all(named, dream_id, audit_options), real_means)
    if checkpoints is None or len(checkpoints) == 1:
        return first
    per_model = [first.dream_means]
    returns = [[a.nominal.returns] for a in first.audits]  # per agent, each model's dreamed returns
    for checkpoint in checkpoints[1:]:  # the real replay is the first model's: it needs no model
        audits = _audit_all(named, dream_id, {**audit_options, "checkpoint": checkpoint, "real": False})
        per_model.append(np.array([a.nominal.mean_return for a in audits]))
        for agent_returns, audit in zip(returns, audits):
            agent_returns.append(audit.nominal.returns)
    dream_means = np.mean(per_model, axis=0)
    rho = mae = relative = None
    if first.real_means is not None:
        rho, mae, relative = estimate_errors(dream_means, first.real_means)
    # every model dreams as many episodes, so the mean of model means is the mean of all episodes
    dream_reproducibility = split_half_spearman([np.concatenate(r) for r in returns])
    return Ranking(
        first.names, dream_means, first.real_means, rho, mae, relative, first.audits,
        first.real_split_half_spearman, np.stack(per_model), dream_reproducibility,
    )  # fmt: skip


def _audit_all(named: dict[str, Agent], dream_id: str | None, audit_options: dict) -> list[AuditResult]:
    audits: list[AuditResult] = []
    options = dict(audit_options)
    for name, agent in named.items():
        # one calibration for all: it depends on the model and its data, not on the agent
        calibration = audits[0].calibration if audits else options.pop("calibration", None)
        audits.append(audit_agent(agent, dream_id, name=name, calibration=calibration, **options))
    return audits
