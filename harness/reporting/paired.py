"""Paired statistics for designs where seed i of one arm is matched to seed i of the other.

At one seed every architecture shares the initialisation seed and the data order, so the
per-seed differences dᵢ = aᵢ − bᵢ carry the comparison and the seed-to-seed spread common to
both arms cancels.

- ``paired_t_test``: Student's t-test of mean(d) = 0 (``scipy.stats.ttest_rel``), with the
  95 % t-interval of mean(d) (the effect, in the metric's unit) and Cohen's d_z = mean(d)/sd(d)
  with its 95 % normal-approximation interval.
- ``sign_flip_p``: the exact two-sided sign-flip permutation p-value: every one of the 2ⁿ
  assignments of signs to the differences, counting those whose |mean| is at least the
  observed one (the observed assignment included).
- ``min_sign_flip_p``: the smallest p that test can give at n pairs, 2/2ⁿ (the observed
  signs and their mirror image): 0.25 at 3 seeds, 0.031 at 6, 0.002 at 10.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from harness.reporting.stats import CONFIDENCE, WelchResult

TOLERANCE = 1e-12  # relative: |mean| ties within rounding count as "at least as extreme"


def min_sign_flip_p(n_pairs: int) -> float:
    """The smallest two-sided exact sign-flip p at ``n_pairs`` pairs (1 when there are none)."""
    return 1.0 if n_pairs < 1 else min(1.0, 2.0 / 2**n_pairs)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip permutation p of mean(differences) = 0 (enumerates 2ⁿ sign patterns)."""
    d = np.asarray([x for x in differences if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(d) == 0:
        return math.nan
    if len(d) > 20:
        raise ValueError(f"the exact sign-flip test enumerates 2^n patterns; {len(d)} pairs is too many (at most 20).")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = np.abs(signs @ d) / len(d)
    extreme = means >= observed - TOLERANCE * max(1.0, observed)
    return float(extreme.sum() / len(signs))


def _dz_interval(dz: float, n: int, confidence: float) -> tuple[float, float]:
    """Interval of d_z from its large-sample standard error √(1/n + d_z²/2n) (normal approximation)."""
    from scipy import stats

    half = float(stats.norm.ppf((1 + confidence) / 2)) * math.sqrt(1 / n + dz * dz / (2 * n))
    return dz - half, dz + half


def paired_t_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> WelchResult:
    """Paired t-test of mean(a − b) over matched pairs (``a[i]`` with ``b[i]``), plus the sign-flip p.

    Pairs with a missing value on either side are dropped. Fewer than two pairs, or differences
    without spread, give ``available=False`` with the reason.
    """
    from scipy import stats

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    d = np.asarray([x - y for x, y in pairs], dtype=np.float64)
    n = len(d)
    result = WelchResult(False, method="paired", n_a=n, n_b=n, diff=float(d.mean()) if n else math.nan,
                         perm_p=sign_flip_p(d) if n else math.nan, perm_p_min=min_sign_flip_p(n),
                         confidence=confidence)
    if n < 2:
        result.reason = f"needs at least 2 matched seeds (has {n})"
        return result
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, float(np.abs(d).max())):  # equal up to rounding
        result.reason = "the per-seed differences have zero variance"
        return result
    test = stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))
    dz = result.diff / sd
    dz_low, dz_high = _dz_interval(dz, n, confidence)
    result.available, result.t, result.dof, result.p = True, float(test.statistic), float(n - 1), float(test.pvalue)
    result.ci_low, result.ci_high = result.diff - half, result.diff + half
    result.effect, result.effect_low, result.effect_high = dz, dz_low, dz_high
    result.significant = bool(result.p < 1 - confidence)
    return result
