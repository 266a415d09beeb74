"""The statistics behind summary.md, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from mnistbench.report.stats import estimate, welch

T_975_DOF1 = 12.706204736174707  # t(0.975, 1), from tables
T_975_DOF2 = 4.302652729911275  # t(0.975, 2)
T_950_DOF2 = 2.919985580355516  # t(0.95, 2)


def test_three_seeds_give_mean_sample_std_and_a_student_t_interval():
    e = estimate([0.97, 0.98, 0.99])
    assert e.n == 3
    assert e.mean == pytest.approx(0.98)
    assert e.std == pytest.approx(0.01)  # n-1 denominator: sqrt((0.01² + 0 + 0.01²) / 2)
    half = T_975_DOF2 * 0.01 / math.sqrt(3)
    assert e.half_width == pytest.approx(half)
    assert (e.ci_low, e.ci_high) == pytest.approx((0.98 - half, 0.98 + half))


def test_two_seeds_use_one_degree_of_freedom_and_the_interval_is_very_wide():
    e = estimate([0.98, 0.99])
    std = math.sqrt(2 * 0.005**2)
    assert e.std == pytest.approx(std)
    assert e.half_width == pytest.approx(T_975_DOF1 * std / math.sqrt(2))
    assert e.half_width > 0.06  # wider than the difference between the seeds, 0.01, six times over


def test_a_lower_confidence_level_gives_a_narrower_interval():
    e = estimate([0.97, 0.98, 0.99], confidence=0.90)
    assert e.half_width == pytest.approx(T_950_DOF2 * 0.01 / math.sqrt(3))


def test_one_seed_has_a_mean_but_no_spread_or_interval():
    e = estimate([0.985])
    assert e.mean == 0.985
    assert math.isnan(e.std) and math.isnan(e.ci_low) and math.isnan(e.ci_high)


def test_identical_seeds_give_a_zero_width_interval():
    e = estimate([0.99, 0.99, 0.99])
    assert e.std == 0 and e.ci_low == pytest.approx(0.99) and e.ci_high == pytest.approx(0.99)


def test_no_values_is_an_error():
    with pytest.raises(ValueError):
        estimate([])


def test_welch_with_equal_variances_and_two_seeds_a_side_has_two_degrees_of_freedom():
    # s² = 0.00005 on both sides, so dof = (2v)² / (v² + v²) = 2 exactly, and t(2) has a closed form:
    # P(|T| > t) = 1 - t / sqrt(2 + t²).
    a, b = [0.98, 0.99], [0.96, 0.97]
    c = welch(a, b)
    se = math.sqrt(0.00005 / 2 + 0.00005 / 2)
    t = 0.02 / se
    assert c.dof == pytest.approx(2)
    assert c.difference == pytest.approx(0.02)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.02 - T_975_DOF2 * se, 0.02 + T_975_DOF2 * se))
    assert c.p_value == pytest.approx(1 - t / math.sqrt(2 + t**2))  # 1 - sqrt(0.8) = 0.1056


def test_welch_satterthwaite_degrees_of_freedom_for_unequal_variances():
    a, b = [0.97, 0.98, 0.99], [0.95, 0.97]
    # va = 0.0001/3, vb = 0.0002/2 = 0.0001; dof = (va + vb)² / (va²/2 + vb²/1) = (16/9) / (19/18) = 32/19.
    c = welch(a, b)
    se = math.sqrt(0.0001 / 3 + 0.0001)
    assert c.dof == pytest.approx(32 / 19)
    assert c.difference == pytest.approx(0.02)
    assert (c.ci_high - c.ci_low) / 2 == pytest.approx(st.t.ppf(0.975, 32 / 19) * se)
    # The p-value agrees with scipy's own Welch test.
    assert c.p_value == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)


@pytest.mark.parametrize(
    "a, b",
    [
        ([0.990, 0.991, 0.989], [0.980, 0.981, 0.982]),
        ([0.990, 0.985, 0.992], [0.988, 0.983, 0.990]),
        ([0.99, 0.98], [0.97, 0.985, 0.99, 0.975]),
    ],
)
def test_the_interval_excludes_zero_exactly_when_p_is_below_five_percent(a, b):
    c = welch(a, b)
    assert (c.ci_low > 0 or c.ci_high < 0) == (c.p_value < 0.05)


def test_the_difference_is_a_minus_b():
    assert welch([0.97, 0.98], [0.99, 0.995]).difference == pytest.approx(-0.0175)


def test_welch_with_one_seed_on_a_side_gives_the_difference_only():
    c = welch([0.99], [0.98, 0.97])
    assert c.difference == pytest.approx(0.015)
    assert math.isnan(c.ci_low) and math.isnan(c.ci_high) and math.isnan(c.p_value)


def test_welch_with_no_spread_on_either_side():
    assert welch([0.99, 0.99], [0.99, 0.99]).p_value == 1.0
    c = welch([0.99, 0.99], [0.98, 0.98])
    assert c.p_value == 0.0 and c.ci_low == pytest.approx(0.01) == c.ci_high
