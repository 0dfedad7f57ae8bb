"""Auditing a policy inside the imagination.

``audit_agent(agent, "WorldFlux/Ensemble-Pendulum-v0", real=True)`` runs an agent (an SB3
``.zip``, an SB3 model or a batch callable) in a dream from many real starts and reports the
expected return with a bootstrap interval, the model's uncertainty along the way, the share of
steps (and of the return) spent where the model is unsure, what-if scenarios (start noise, action
noise, an adversarial CEM search over starts) and, with ``real``, the same starts replayed in the
real env. ``rank_agents`` ranks several agents by dream return (Spearman against real returns).
``write_report`` writes ``report.json`` and ``report.md`` with SVG charts.

Modules: ``audit.py`` (:func:`audit_agent`, and what is measured), ``results.py`` (the result
types), ``dream.py`` (dreamed rollouts and the uncertainty calibration), ``scenarios.py`` (a
scenario's summary, the what-if scenarios and the CEM search), ``real.py`` (the real env started
where the dream started, and the dream-vs-real replay), ``ranking.py`` (:func:`rank_agents`),
``report.py`` / ``svg.py`` (the report) and ``stats.py``.
"""

from worldflux_gym.audit.audit import audit_agent
from worldflux_gym.audit.dream import Calibration, DreamRollouts, FixedStarts, calibrate, dream_rollouts
from worldflux_gym.audit.ranking import Ranking, rank_agents, ranking_of
from worldflux_gym.audit.real import draw_real_starts, real_rollouts, set_real_state
from worldflux_gym.audit.report import summary_text, write_ranking_report, write_report
from worldflux_gym.audit.results import AuditConfig, AuditResult, RealComparison, ScenarioResult
from worldflux_gym.audit.stats import Interval, bootstrap_ci, rankdata, spearman, split_half_spearman
from worldflux_gym.data.policy import as_policy

__all__ = [
    "AuditConfig",
    "AuditResult",
    "Calibration",
    "DreamRollouts",
    "FixedStarts",
    "Interval",
    "Ranking",
    "RealComparison",
    "ScenarioResult",
    "as_policy",
    "audit_agent",
    "bootstrap_ci",
    "calibrate",
    "draw_real_starts",
    "dream_rollouts",
    "rank_agents",
    "ranking_of",
    "rankdata",
    "real_rollouts",
    "set_real_state",
    "spearman",
    "split_half_spearman",
    "summary_text",
    "write_ranking_report",
    "write_report",
]
