"""The robustness figures of a folder's runs gathered per model: intervals over seeds and Welch differences."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Optional

from ..report.stats import Comparison, Estimate, estimate, welch

PX, DEG = 3, 30  # the summary's shift (pixels, every direction) and rotation (degrees, both ways)


def label(result: dict) -> str:
    return result["model"] + (" + distortions" if result.get("distort") else "")


def shift_accuracy(r: dict, k: int) -> float:
    """Mean accuracy over the 8 directions of a shift by ``k`` pixels."""
    return statistics.fmean(r["shifts"][str(k)].values())


def rotation_accuracy(r: dict, degrees: int) -> float:
    """Mean accuracy at +``degrees`` and -``degrees``."""
    return statistics.fmean([r["rotations"][str(degrees)], r["rotations"][str(-degrees)]])


def mean_corruption_accuracy(r: dict) -> float:
    return statistics.fmean(r["corruptions"].values())


def _attack(kind: str, eps: str) -> Callable[[dict], Optional[float]]:
    def get(r: dict) -> Optional[float]:
        adv = r.get("adversarial", {})
        return adv[kind].get(eps) if adv.get("status") == "ok" else None

    return get


# The summary's columns: (heading, how to read it from one run's figures)
METRICS: dict[str, Callable[[dict], Optional[float]]] = {
    "clean": lambda r: r["clean"],
    "mean corruption": mean_corruption_accuracy,
    f"±{PX} px": lambda r: shift_accuracy(r, PX),
    f"±{DEG}°": lambda r: rotation_accuracy(r, DEG),
    "PGD ε=0.1": _attack("pgd", "0.1"),
    "PGD ε=0.3": _attack("pgd", "0.3"),
}


@dataclass(frozen=True)
class Cell:
    estimate: Optional[Estimate]  # None where the figure is missing (no attacks run)

    def text(self) -> str:
        e = self.estimate
        if e is None:
            return "–"
        if math.isnan(e.ci_low):
            return f"{100 * e.mean:.2f}"
        return f"{100 * e.mean:.2f} [{100 * e.ci_low:.2f}, {100 * e.ci_high:.2f}]"


def groups(results: list[dict]) -> dict[str, list[dict]]:
    """Runs per model label, labels in first-seen order, runs by seed."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(label(r), []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def values(runs: list[dict], get: Callable[[dict], Optional[float]]) -> list[float]:
    found = [get(r) for r in runs]
    return [float(v) for v in found if v is not None]


def cell(runs: list[dict], get) -> Cell:
    found = values(runs, get)
    return Cell(estimate(found) if found else None)


@dataclass(frozen=True)
class Difference:
    metric: str
    a: str
    b: str
    comparison: Comparison


def differences(by_label: dict[str, list[dict]]) -> list[Difference]:
    """Welch's test of every pair of models on every summary metric that both have."""
    out = []
    for (a, ra), (b, rb) in combinations(by_label.items(), 2):
        for metric, get in METRICS.items():
            va, vb = values(ra, get), values(rb, get)
            if va and vb:
                out.append(Difference(metric, a, b, welch(va, vb)))
    return out
