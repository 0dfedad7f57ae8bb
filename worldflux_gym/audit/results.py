"""What an audit measured, as data: the settings (:class:`AuditConfig`), one scenario's summary
(:class:`ScenarioResult`), the dream-vs-real comparison (:class:`RealComparison`) and the whole
audit (:class:`AuditResult`), each with ``as_dict()`` for ``report.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldflux_gym.audit.dream import Calibration, DreamRollouts
from worldflux_gym.audit.stats import Interval
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.validate import (
    check_float,
    check_int,
    check_optional_positive_int,
    check_positive_int,
    check_seed,
)


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
    # With a real replay: flag when the dream overrates the real return on the same starts by more than
    # this share of it (and the gap's interval lies above 0). Ensemble members can agree on a gait that
    # reality drops, which no uncertainty share sees; the replay does.
    overrate_share: float = 0.25
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
        for name in ("start_noise", "action_noise", "adversarial_radius", "overrate_share"):
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
        return jsonable(data)


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

    def overrates(self, share: float) -> bool:
        """The dream's return is above the real one on these starts, beyond chance (the gap's interval
        lies above 0), and by more than ``share`` of the real return's magnitude on average."""
        gap = self.gap_interval
        return gap.low > 0 and gap.mean > share * abs(self.real_interval.mean)

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.endswith("interval")}
        data.update(
            gaps=self.gaps,
            real_interval=self.real_interval.as_dict(),
            gap_interval=self.gap_interval.as_dict(),
        )
        return jsonable(data)


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
    def flag_reason(self) -> str | None:
        """The real replay's evidence first ("overrated in reality"), else the nominal scenario's."""
        if self.real is not None and self.real.overrates(self.config.overrate_share):
            return "overrated in reality"
        return self.nominal.flag_reason

    @property
    def flagged(self) -> bool:
        return self.flag_reason is not None

    def verdict(self) -> str:
        """One sentence on whether the dream return can be trusted."""
        s = self.nominal
        if self.flag_reason == "overrated in reality":
            assert self.real is not None
            gap, real = self.real.gap_interval, self.real.real_interval
            return (
                f"FLAGGED (overrated in reality): on the {len(self.real.real_returns)} replayed starts the "
                f"dream's return exceeds the real one by {gap.mean:.1f} per episode [{gap.low:.1f}, "
                f"{gap.high:.1f}], more than {self.config.overrate_share:.0%} of the real return "
                f"{real.mean:.1f}: the dream return is inflated for this agent"
            )
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
        return jsonable(
            {
                "agent": self.agent,
                "dream_id": self.dream_id,
                "real_env": self.real_env,
                "checkpoint": self.checkpoint,
                "config": asdict(self.config),
                "calibration": self.calibration.as_dict() if self.calibration else None,
                "verdict": self.verdict(),
                "flagged": self.flagged,
                "flag_reason": self.flag_reason,
                "scenarios": {k: v.as_dict() for k, v in self.scenarios.items()},
                "worst_cases": self.worst_cases,
                "real": self.real.as_dict() if self.real else None,
                "notes": self.notes,
                "seconds": self.seconds,
            }
        )


def jsonable(value: Any) -> Any:
    """numpy arrays and scalars to lists and numbers; NaN and inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value
