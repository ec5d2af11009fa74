"""The study's statistics against cases whose answer is known in closed form."""

import math

import pytest

from lad.study.stats import holm, paired_bootstrap, seed_interval


def test_constant_difference_has_a_point_interval_and_the_smallest_p():
    arm = [[0.75, 0.5, 1.0], [0.25, 0.5, 0.5]]
    ref = [[0.5, 0.25, 0.75], [0.0, 0.25, 0.25]]
    out = paired_bootstrap(arm, ref, resamples=999, seed=3)
    assert out["diff"] == pytest.approx(0.25)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((0.25, 0.25))
    assert out["p_value"] == pytest.approx(2 / 1000)  # no resample reaches 0; the observed one counts
    assert (out["seeds"], out["problems"]) == (2, 3)


def test_one_seed_four_problems_matches_the_binomial_law():
    # differences [1, 0, 0, 0]: a resample's mean is (ones drawn) / 4, ones ~ Binomial(4, 1/4)
    out = paired_bootstrap([[1, 0, 0, 0]], [[0, 0, 0, 0]], resamples=20_000, seed=0)
    assert out["diff"] == 0.25
    # P(mean <= 0) = (3/4)^4; P(mean >= 0) = 1, so p = 2 (3/4)^4
    assert out["p_value"] == pytest.approx(2 * 0.75**4, abs=0.02)
    # CDF: 0.316 at 0, 0.949 at 1/4... 0.996 at 3/4: the 2.5% and 97.5% points are 0 and 3/4
    assert (out["ci_low"], out["ci_high"]) == (0.0, 0.75)


def test_seeds_are_resampled_and_paired():
    # one problem, seed 0 favours the arm by 1, seed 1 the reference by 1: mean 0, d* in {-1, 0, 1}
    out = paired_bootstrap([[1.0], [0.0]], [[0.0], [1.0]], resamples=20_000, seed=1)
    assert out["diff"] == 0.0
    assert (out["ci_low"], out["ci_high"]) == (-1.0, 1.0)
    assert out["p_value"] == 1.0  # 2 x P(d* <= 0) = 2 x 3/4, capped


def test_unpaired_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(1, 2\) and \(1, 3\)"):
        paired_bootstrap([[1, 0]], [[1, 0, 1]])


def test_seed_interval_is_the_student_t_interval():
    out = seed_interval([1.0, 2.0, 3.0])
    # Student t with 2 degrees of freedom in closed form: t_p = (2p - 1) / sqrt(2 p (1 - p))
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    half = t * 1.0 / math.sqrt(3)  # x sd 1 / sqrt(n)
    assert out["mean"] == 2.0
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    assert seed_interval([0.4]) == {"mean": 0.4, "ci_low": None, "ci_high": None, "n": 1}


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_and_keeps_the_order():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06); then capped at 1
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])
    assert holm([0.6, 0.7, 0.02]) == pytest.approx([1.0, 1.0, 0.06])
    assert holm([0.3]) == [0.3] and holm([]) == []
