"""Summary statistics and the one-tailed Welch t-test used by comparisons.

The paper compares losses with one-tailed Welch t-tests (unequal variances) over
10 runs per side. Everything here is NumPy/SciPy only (no TensorFlow).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats as _scipy_stats

Alternative = Literal["greater", "less", "two-sided"]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1) of a set of runs."""

    n: int
    mean: float
    std: float


@dataclasses.dataclass(frozen=True)
class WelchResult:
    """A Welch t-test of ``a`` against ``b``.

    ``statistic`` is ``t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b)``,
    ``df`` the Welch-Satterthwaite degrees of freedom and ``pvalue`` the p-value for
    ``alternative`` ("greater": H1 is mean_a > mean_b).
    """

    statistic: float
    df: float
    pvalue: float
    alternative: str


def _as_sample(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf: {array.tolist()}")
    return array


def summarize(values: Sequence[float], name: str = "values") -> Summary:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    array = _as_sample(values, name)
    std = float(np.std(array, ddof=1)) if array.size > 1 else 0.0
    return Summary(n=int(array.size), mean=float(np.mean(array)), std=std)


def welch_t_test(a: Sequence[float], b: Sequence[float], alternative: Alternative = "greater") -> WelchResult:
    """Welch's unequal-variance t-test of sample ``a`` against sample ``b``.

    Uses ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=...)``. With
    ``alternative="greater"`` (the default) the p-value is one-tailed for the
    hypothesis that ``a`` has the larger mean. Each side needs at least two values.
    When both samples have zero variance the statistic is undefined; the p-value is
    then reported as 0.0 or 1.0 from the sign of the mean difference (0.5 if equal),
    which is the limit of the test as the variances go to zero.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    sample_a = _as_sample(a, "a")
    sample_b = _as_sample(b, "b")
    for name, sample in (("a", sample_a), ("b", sample_b)):
        if sample.size < 2:
            raise ValueError(f"{name} has {sample.size} value(s); Welch's t-test needs at least 2 per side")
    if np.ptp(sample_a) == 0 and np.ptp(sample_b) == 0:
        diff = float(sample_a[0] - sample_b[0])
        if alternative == "two-sided":
            p = 1.0 if diff == 0 else 0.0
        else:
            sign = diff if alternative == "greater" else -diff
            p = 0.5 if sign == 0 else (0.0 if sign > 0 else 1.0)
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return WelchResult(statistic=t, df=float(sample_a.size + sample_b.size - 2), pvalue=p, alternative=alternative)
    result = _scipy_stats.ttest_ind(sample_a, sample_b, equal_var=False, alternative=alternative)
    return WelchResult(
        statistic=float(result.statistic),
        df=float(result.df),
        pvalue=float(result.pvalue),
        alternative=alternative,
    )
