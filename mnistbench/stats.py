"""Statistics across seeds: mean, standard deviation, Student-t intervals, Welch's t-test."""

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
    std: float  # sample standard deviation (n-1); 0 for n=1
    ci_low: float  # 95% Student-t interval of the mean; nan for n=1
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Estimate(1, mean, 0.0, math.nan, math.nan)
    std = statistics.stdev(values)
    half = st.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    difference: float  # mean(a) - mean(b)
    ci_low: float  # 95% Welch interval of the difference
    ci_high: float
    p_value: float  # Welch's two-sided t-test


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Difference of means with its Welch-Satterthwaite interval and two-sided p-value (nan below 2 values a side)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(diff, diff, diff, 0.0 if diff else 1.0)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = st.t.ppf((1 + confidence) / 2, dof) * se
    p = float(st.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(diff, diff - half, diff + half, p)
