"""Ranking agents by their dream return: every agent audited from the same starts (in one model or
several fitted ones), ordered, and compared with real returns (Spearman, errors, reproducibility)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldflux_gym.audit.audit import audit_agent
from worldflux_gym.audit.results import AuditResult, jsonable
from worldflux_gym.audit.stats import spearman, split_half_spearman
from worldflux_gym.core.errors import ConfigError
from worldflux_gym.core.model import WorldModel
from worldflux_gym.data.policy import Agent, agent_name


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
                    "flag_reason": audit.flag_reason,
                }
            )
        return jsonable(
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
