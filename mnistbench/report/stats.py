"""Statistics across seeds: mean, standard deviation, Student-t intervals, Welch's t-test (scipy.stats).

Seeds are few (3-10), so intervals use Student's t rather than the normal approximation,
and two models are compared with Welch's test, which does not assume equal variances.
"""

from __future__ import annotations

import math
import statistics
import warnings
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


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """Difference of means with its Welch-Satterthwaite interval and two-sided p-value (nan below 2 values a side)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, math.nan, math.nan, math.nan)
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        # Every seed gave the same value on both sides: the t statistic is 0 or infinite (scipy says nan).
        return Comparison(diff, diff, diff, 0.0 if diff else 1.0)
    with warnings.catch_warnings():
        # scipy warns of "catastrophic cancellation" when one side's seeds agree: that side's variance is then 0, exactly.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        test = st.ttest_ind(a, b, equal_var=False)
        ci = test.confidence_interval(confidence)
    return Comparison(diff, float(ci.low), float(ci.high), float(test.pvalue), float(test.df))
