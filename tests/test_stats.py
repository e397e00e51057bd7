"""The one-tailed Welch t-test and run summaries used by `taylorglo compare`."""

import math

import pytest
from scipy import stats as scipy_stats

from taylorglo_tf import stats

# Two small samples whose test statistic was worked out by hand:
# mean_a = 0.9875, s_a^2 = 1.25e-4 / 3;  mean_b = 0.97125, s_b^2 = 2.1875e-4 / 3
# se^2 = s_a^2/4 + s_b^2/4 = 2.864583e-5;  t = 0.01625 / sqrt(se^2) = 3.03614
# df = se^4 / ((s_a^2/4)^2/3 + (s_b^2/4)^2/3) = 5.58466
A = [0.99, 0.98, 0.995, 0.985]
B = [0.97, 0.975, 0.98, 0.96]


def test_welch_statistic_and_df_match_the_hand_computation():
    result = stats.welch_t_test(A, B)
    assert result.statistic == pytest.approx(3.03614, rel=1e-5)
    assert result.df == pytest.approx(5.58466, rel=1e-5)


def test_one_tailed_p_value_is_the_upper_t_tail_at_the_welch_df():
    result = stats.welch_t_test(A, B, alternative="greater")
    # Upper tail of Student's t with the hand-computed t and df.
    assert result.pvalue == pytest.approx(scipy_stats.t.sf(3.03614, 5.58466), rel=1e-4)
    assert result.pvalue == pytest.approx(0.01263, abs=2e-4)
    assert result.alternative == "greater"


def test_reversed_hypothesis_gives_the_complementary_tail():
    greater = stats.welch_t_test(A, B, alternative="greater").pvalue
    less = stats.welch_t_test(A, B, alternative="less").pvalue
    two_sided = stats.welch_t_test(A, B, alternative="two-sided").pvalue
    assert greater + less == pytest.approx(1.0)
    assert two_sided == pytest.approx(2 * greater)


def test_zero_variance_samples_give_the_limiting_p_value():
    assert stats.welch_t_test([0.9, 0.9], [0.8, 0.8]).pvalue == 0.0
    assert stats.welch_t_test([0.8, 0.8], [0.9, 0.9]).pvalue == 1.0
    assert stats.welch_t_test([0.8, 0.8], [0.8, 0.8]).pvalue == 0.5
    assert math.isinf(stats.welch_t_test([0.9, 0.9], [0.8, 0.8]).statistic)


def test_summary_uses_the_sample_standard_deviation():
    summary = stats.summarize(A)
    assert summary.n == 4
    assert summary.mean == pytest.approx(0.9875)
    assert summary.std == pytest.approx(math.sqrt(1.25e-4 / 3))
    assert stats.summarize([0.5]).std == 0.0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([0.9], [0.8, 0.7], "a has 1 value"),
        ([0.9, 0.8], [], "b is empty"),
        ([0.9, float("nan")], [0.8, 0.7], "a contains NaN"),
    ],
)
def test_bad_samples_are_rejected_with_the_side_named(a, b, message):
    with pytest.raises(ValueError, match=message):
        stats.welch_t_test(a, b)


def test_unknown_alternative_is_rejected_by_name():
    with pytest.raises(ValueError, match="'bigger'"):
        stats.welch_t_test(A, B, alternative="bigger")
