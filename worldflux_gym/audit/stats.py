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


def split_half_spearman(samples: list[np.ndarray], splits: int = 1000, seed: int = 0) -> float | None:
    """How reproducible a ranking of agents by mean return is: split every agent's episodes at
    random into two halves, rank the agents by each half's means, and take the Spearman correlation
    of the two rankings; the median over ``splits`` random splits.

    Near 1: two independent evaluations (of half the episodes each) rank the agents the same way.
    Near 0: the agents' means lie within their noise, and no estimate can be expected to reproduce
    the observed order. With all the episodes the ranking is, on average, somewhat steadier than
    this figure says (each half has half the episodes). ``None`` with fewer than two agents or an
    agent with fewer than two episodes.
    """
    samples = [np.asarray(s, dtype=np.float64).ravel() for s in samples]
    if len(samples) < 2 or any(s.size < 2 for s in samples):
        return None
    rng = np.random.default_rng(seed)
    first, second = [], []
    for s in samples:
        order = np.argsort(rng.random((splits, s.size)), axis=1)  # one random permutation per split
        half = s.size // 2
        first.append(s[order[:, :half]].mean(axis=1))
        second.append(s[order[:, half:]].mean(axis=1))
    rhos = [spearman(a, b) for a, b in zip(np.stack(first, axis=1), np.stack(second, axis=1))]
    rhos = [r for r in rhos if r is not None]
    return float(np.median(rhos)) if rhos else None
