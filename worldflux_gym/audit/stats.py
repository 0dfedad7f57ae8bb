"""The few statistics the audit needs, in numpy (scipy is not a dependency)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval; ``method`` says how the interval was made."""

    mean: float
    low: float
    high: float
    level: float
    method: str

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "method": self.method,
        }


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (one value per episode).

    The bootstrap makes no normality assumption, which matters here: dream returns are often
    skewed or bimodal (a pendulum that swings up or not). Resampling is one vectorised draw of
    ``resamples x n`` indices, seeded, so the same values always give the same interval.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("a confidence interval needs at least one value")
    mean = float(values.mean())
    if values.size == 1:
        return Interval(mean, mean, mean, level, "percentile bootstrap (one value: no spread)")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # the percentile interval of a tiny sample can miss the sample mean by rounding: keep it inside
    return Interval(
        mean, float(min(low, mean)), float(max(high, mean)), level,
        f"percentile bootstrap, {resamples} resamples",
    )  # fmt: skip


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of their ranks (as Spearman needs)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    for value in np.unique(values):  # average the ranks of ties
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks.

    ``None`` when it is undefined (fewer than two items, or all values of one side equal).
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"spearman needs two samples of the same size, got {x.size} and {y.size}")
    if x.size < 2:
        return None
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    if denominator == 0:
        return None
    return float((rx * ry).sum() / denominator)
