"""Small, dependency-free SVG charts for the audit report (matplotlib is not a dependency).

Three kinds: overlaid histograms, line charts (with an optional horizontal reference line) and
scatter plots (with an optional ``y = x`` diagonal). Each returns the SVG document as a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _bounds(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        pad = max(abs(low) * 0.1, 1.0)
        return low - pad, high + pad
    pad = (high - low) * 0.05
    return low - pad, high + pad


class _Frame:
    """Axes, ticks, labels and a data-to-pixel mapping."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xlim: tuple, ylim: tuple):
        self.xlim, self.ylim = xlim, ylim
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{escape(xlabel)}</text>",
            f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(ylabel)}</text>',
            f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
            'fill="none" stroke="#444"/>',
        ]
        for value in np.linspace(*xlim, 5):
            x = self.x(value)
            self.parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{value:.3g}</text>'
            )
        for value in np.linspace(*ylim, 5):
            y = self.y(value)
            self.parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
            self.parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            )

    def x(self, value: float) -> float:
        low, high = self.xlim
        return LEFT + (value - low) / (high - low) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        low, high = self.ylim
        return HEIGHT - BOTTOM - (value - low) / (high - low) * (HEIGHT - TOP - BOTTOM)

    def legend(self, labels: Sequence[str]) -> None:
        for i, label in enumerate(labels):
            y = TOP + 12 + 14 * i
            self.parts.append(
                f'<rect x="{LEFT + 8}" y="{y - 8}" width="10" height="10" fill="{COLOURS[i % 8]}"/>'
            )
            self.parts.append(f'<text x="{LEFT + 22}" y="{y + 1}">{escape(label)}</text>')

    def svg(self) -> str:
        return "\n".join([*self.parts, "</svg>"]) + "\n"


def histogram(series: dict[str, Sequence[float]], title: str, xlabel: str, bins: int = 20) -> str:
    """Overlaid, semi-transparent histograms of each series over shared bins."""
    data = {k: _finite(v) for k, v in series.items()}
    xlim = _bounds(np.concatenate([v for v in data.values()] or [np.zeros(0)]))
    edges = np.linspace(*xlim, bins + 1)
    counts = {k: np.histogram(v, edges)[0] for k, v in data.items()}
    top = max([c.max() for c in counts.values() if c.size] + [1])
    frame = _Frame(title, xlabel, "episodes", xlim, (0, top * 1.1))
    for i, count in enumerate(counts.values()):
        for j, c in enumerate(count):
            if c == 0:
                continue
            x0, x1, y = frame.x(edges[j]), frame.x(edges[j + 1]), frame.y(c)
            frame.parts.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{frame.y(0) - y:.1f}" fill="{COLOURS[i % 8]}" fill-opacity="0.45"/>'
            )
    frame.legend(list(counts))
    return frame.svg()


def line_chart(
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    reference: tuple[str, float] | None = None,
) -> str:
    """Lines over the index ``0..T-1``; ``reference = (label, y)`` draws a dashed horizontal line."""
    data = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    values = np.concatenate(
        [_finite(v) for v in data.values()] + [np.array([reference[1]]) if reference else []]
    )
    length = max([len(v) for v in data.values()] + [2])
    frame = _Frame(title, xlabel, ylabel, (0, length - 1), _bounds(values))
    for i, (_, v) in enumerate(data.items()):
        points = " ".join(f"{frame.x(t):.1f},{frame.y(y):.1f}" for t, y in enumerate(v) if np.isfinite(y))
        frame.parts.append(
            f'<polyline points="{points}" fill="none" stroke="{COLOURS[i % 8]}" stroke-width="1.5"/>'
        )
    labels = list(data)
    if reference is not None:
        y = frame.y(reference[1])
        frame.parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="black" '
            'stroke-dasharray="5,4"/>'
        )
        frame.parts.append(
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">{escape(reference[0])}</text>'
        )
    frame.legend(labels)
    return frame.svg()


def scatter(
    points: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    diagonal: bool = True,
    labels: Sequence[str] | None = None,
) -> str:
    """Scatter of ``(x, y)`` groups; ``diagonal`` draws ``y = x``; ``labels`` annotate the first group."""
    xs = np.concatenate([_finite(x) for x, _ in points.values()])
    ys = np.concatenate([_finite(y) for _, y in points.values()])
    lim = _bounds(np.concatenate([xs, ys])) if diagonal else None
    frame = _Frame(title, xlabel, ylabel, lim or _bounds(xs), lim or _bounds(ys))
    if diagonal:
        frame.parts.append(
            f'<line x1="{frame.x(lim[0]):.1f}" y1="{frame.y(lim[0]):.1f}" x2="{frame.x(lim[1]):.1f}" '
            f'y2="{frame.y(lim[1]):.1f}" stroke="#999" stroke-dasharray="4,3"/>'
        )
    for i, (x, y) in enumerate(points.values()):
        for j, (a, b) in enumerate(zip(x, y)):
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            frame.parts.append(
                f'<circle cx="{frame.x(a):.1f}" cy="{frame.y(b):.1f}" r="3" fill="{COLOURS[i % 8]}" '
                'fill-opacity="0.7"/>'
            )
            if labels is not None and i == 0 and j < len(labels):
                frame.parts.append(
                    f'<text x="{frame.x(a) + 5:.1f}" y="{frame.y(b) - 5:.1f}">{escape(labels[j])}</text>'
                )
    frame.legend(list(points))
    return frame.svg()
