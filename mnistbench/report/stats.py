"""Statistics across seeds: mean, standard deviation, Student-t intervals, Welch's t-test.

Seeds are few (3-10), so intervals use Student's t rather than the normal approximation,
and two models are compared with Welch's test, which does not assume equal variances.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from scipy import stats as st


@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    std: float  # sample standard deviation (n-1 denominator); nan for n=1, where it is undefined
    ci_low: float  # Student-t interval of the mean; nan for n=1
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean, sample standard deviation and the Student-t interval ``mean ± t(1-α/2, n-1)·s/√n``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    difference: float  # mean(a) - mean(b)
    ci_low: float  # Welch interval of the difference; nan below 2 values a side
    ci_high: float
    p_value: float  # Welch's two-sided t-test; nan below 2 values a side
    dof: float = math.nan  # Welch-Satterthwaite degrees of freedom


def welch_dof(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch-Satterthwaite degrees of freedom: (va + vb)² / (va²/(na-1) + vb²/(nb-1)), v = s²/n."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return math.nan
    return (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Difference of means with its Welch-Satterthwaite interval and two-sided p-value (nan below 2 values a side)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        # Every seed gave the same value on both sides: the t statistic is 0 or infinite.
        return Comparison(diff, diff, diff, 0.0 if diff else 1.0)
    dof = welch_dof(a, b)
    half = float(st.t.ppf((1 + confidence) / 2, dof)) * se
    p = 2 * float(st.t.sf(abs(diff) / se, dof))
    return Comparison(diff, diff - half, diff + half, p, dof)
