"""Test error against batch-1 latency: each model x backend a point, its seeds' 95% interval as an error bar, the
Pareto front (no other point both faster and more accurate) drawn through the points on it."""

from __future__ import annotations

import math
from pathlib import Path

from ..report.plots import _RC, _figure, _save
from .report import FLAG, Summary

MARKERS = "osD^v<>PX*"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, error) that no other point beats on both, fastest first."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def write_error_vs_latency(out: Path, summaries: list[Summary], title: str) -> list[Path]:
    """``error_vs_latency.png`` and ``.svg`` in ``out``; nothing when no summary has a latency."""
    from matplotlib import rc_context

    timed = [s for s in summaries if s.p50 is not None]
    if not timed:
        return []
    models = list(dict.fromkeys(s.model for s in timed))
    backends = list(dict.fromkeys(s.backend for s in timed))
    with rc_context(_RC):
        fig = _figure(7.0, 4.5)
        ax = fig.add_subplot()
        points = [(1e6 * s.p50, 100 * (1 - s.accuracy.mean)) for s in timed]
        for s, (x, y) in zip(timed, points):
            half = 100 * s.accuracy.half_width if s.accuracy.n > 1 else 0.0
            ax.errorbar(x, y, yerr=half, fmt=MARKERS[backends.index(s.backend) % len(MARKERS)],
                        color=f"C{models.index(s.model) % 10}", capsize=3, markersize=6,
                        mfc="none" if s.flagged else None, label=f"{s.model} · {s.label}")
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", linewidth=1, alpha=0.6,
                label="Pareto front", drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_xlabel("batch-1 latency, median (µs, log scale)")
        ax.set_ylabel("test error % (mean over seeds, 95% CI)")
        ax.set_title(f"{title}: test error vs batch-1 latency ({FLAG} hollow: below 99.9% of fp32 accuracy)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return _save(fig, out / "error_vs_latency")
