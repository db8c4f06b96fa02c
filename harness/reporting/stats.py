"""Statistics for comparisons: seed confidence intervals, Welch's t-test, isoFLOP parabola fits.

- ``t_interval``: mean and 95 % confidence half-width over seeds from the t-distribution
  (n − 1 degrees of freedom); one seed gives a mean and no interval.
- ``welch_test``: Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``)
  of two sets of per-seed losses, with the Welch–Satterthwaite 95 % interval of the
  difference; "exceeds seed noise" means that interval excludes 0 (p < 0.05). Fewer than
  two seeds on either side gives ``available=False`` and the reason.
- ``fit_isoflop``: the Chinchilla (Hoffmann et al. 2022, approach 2) isoFLOP method: at one
  budget, fit final loss against x = log10(params) with a parabola (``numpy.polyfit`` with
  covariance); its vertex is the compute-optimal size and loss. Uncertainty comes from the
  fit's covariance (delta method) and, with several seeds per size, from a bootstrap that
  resamples seeds within each size; ``IsoFlopFit.params_opt_delta_interval`` turns the
  delta-method standard error into the interval 10^(x* ± t·se), t at n − 3 degrees of freedom.
- ``compare_optima``: the difference of two fitted optimal losses with its standard error.
- ``holm_adjust``: Holm–Bonferroni adjusted p-values for a family of comparisons (untestable ones at p = 1).
- Paired tests and sign-flip permutation p: ``harness.reporting.paired``; Wilson intervals: ``harness.reporting.proportions``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95


@dataclass
class Interval:
    """Mean over seeds and the half-width of its ``confidence`` interval (nan with one seed)."""

    mean: float
    half_width: float
    std: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n−1} · s/√n over the finite values (s: sample std, ddof=1)."""
    from scipy import stats

    array = _clean(values)
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(array.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, confidence)
    std = float(array.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    return Interval(mean, half, std, n, confidence)


@dataclass
class WelchResult:
    """``a − b`` by a t-test; ``available`` False (with ``reason``) when it cannot be run.

    ``method``: ``welch`` (independent groups) or ``paired`` (``harness.reporting.paired``: n_a = n_b
    = the matched pairs, ``perm_p`` the exact sign-flip p and ``perm_p_min`` the smallest it can be).
    ``effect`` (with ``effect_low``/``effect_high``, 95 %): the standardised difference, Cohen's d
    (pooled sd, normal-approximation interval) for Welch, d_z = mean/sd of the differences for paired.
    """

    available: bool
    reason: str = ""
    diff: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    t: float = math.nan
    dof: float = math.nan
    p: float = math.nan
    n_a: int = 0
    n_b: int = 0
    significant: bool = False
    confidence: float = CONFIDENCE
    method: str = "welch"
    perm_p: float = math.nan
    perm_p_min: float = math.nan
    effect: float = math.nan
    effect_low: float = math.nan
    effect_high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cohen_d(xa: np.ndarray, xb: np.ndarray, diff: float, confidence: float) -> tuple[float, float, float]:
    """Cohen's d (pooled sd) and its normal-approximation interval (Hedges & Olkin 1985)."""
    from scipy import stats

    n_a, n_b = len(xa), len(xb)
    pooled = math.sqrt(((n_a - 1) * xa.var(ddof=1) + (n_b - 1) * xb.var(ddof=1)) / (n_a + n_b - 2))
    if pooled == 0:
        return math.nan, math.nan, math.nan
    d = diff / pooled
    se = math.sqrt((n_a + n_b) / (n_a * n_b) + d * d / (2 * (n_a + n_b)))
    z = float(stats.norm.ppf((1 + confidence) / 2))
    return d, d - z * se, d + z * se


def welch_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> WelchResult:
    """Welch's t-test of mean(a) − mean(b); significant when p < 1 − confidence."""
    from scipy import stats

    xa, xb = _clean(a), _clean(b)
    n_a, n_b = len(xa), len(xb)
    diff = float(xa.mean() - xb.mean()) if n_a and n_b else math.nan
    if n_a < 2 or n_b < 2:
        return WelchResult(
            False, f"needs at least 2 seeds on each side (has {n_a} and {n_b})", diff=diff, n_a=n_a, n_b=n_b
        )
    va, vb = xa.var(ddof=1) / n_a, xb.var(ddof=1) / n_b
    if va + vb == 0:
        return WelchResult(False, "zero variance across seeds on both sides", diff=diff, n_a=n_a, n_b=n_b)
    result = stats.ttest_ind(xa, xb, equal_var=False)
    dof = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(va + vb))
    p = float(result.pvalue)
    effect, effect_low, effect_high = _cohen_d(xa, xb, diff, confidence)
    return WelchResult(
        True,
        diff=diff,
        ci_low=diff - half,
        ci_high=diff + half,
        t=float(result.statistic),
        dof=float(dof),
        p=p,
        n_a=n_a,
        n_b=n_b,
        significant=bool(p < 1 - confidence),
        confidence=confidence,
        effect=effect,
        effect_low=effect_low,
        effect_high=effect_high,
    )


@dataclass
class IsoFlopFit:
    """A parabola loss = a·x² + b·x + c in x = log10(params), and its vertex.

    ``params_opt`` / ``loss_opt``: the vertex (compute-optimal size and its loss) when the
    parabola opens upward (a > 0), else nan with ``reason``. ``*_se``: delta-method standard
    errors from the fit covariance (``log10_params_opt_se`` in decades). ``*_ci``: bootstrap
    95 % percentile intervals over seeds (None without ≥ 2 seeds at some size).
    ``extrapolated``: the vertex lies outside the sizes that were trained.
    """

    ok: bool
    reason: str = ""
    coef: list[float] = field(default_factory=list)
    cov: list[list[float]] | None = None
    n_points: int = 0
    n_sizes: int = 0
    params_opt: float = math.nan
    log10_params_opt: float = math.nan
    log10_params_opt_se: float = math.nan
    loss_opt: float = math.nan
    loss_opt_se: float = math.nan
    params_opt_ci: tuple[float, float] | None = None
    loss_opt_ci: tuple[float, float] | None = None
    bootstrap_valid: int = 0
    extrapolated: bool = False
    x_range: tuple[float, float] = (math.nan, math.nan)

    def predict(self, params: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.polyval(self.coef, np.log10(np.asarray(params, dtype=np.float64)))

    def loss_se(self) -> float:
        """The standard error of the optimal loss: the larger of delta-method and bootstrap.

        (With two seeds per size the bootstrap can only resample two values and understates
        the spread; the delta method uses the residual variance with its degrees of freedom.)
        """
        candidates = [self.loss_opt_se] if math.isfinite(self.loss_opt_se) else []
        if self.loss_opt_ci is not None:
            candidates.append((self.loss_opt_ci[1] - self.loss_opt_ci[0]) / (2 * 1.959963984540054))
        return max(candidates) if candidates else math.nan

    def params_opt_delta_interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """Delta-method interval of N*: 10^(x* ± t·se), t at n − 3 degrees of freedom (None without a covariance)."""
        from scipy import stats

        if not (self.ok and math.isfinite(self.log10_params_opt_se) and self.n_points > 3):
            return None
        half = float(stats.t.ppf((1 + confidence) / 2, self.n_points - 3)) * self.log10_params_opt_se
        return 10 ** (self.log10_params_opt - half), 10 ** (self.log10_params_opt + half)

    def params_opt_interval(self) -> tuple[float, float] | None:
        """95 % interval of N*: the wider of the delta-method and the seed-bootstrap intervals."""
        delta = self.params_opt_delta_interval()
        intervals = [delta] if delta is not None else []
        if self.params_opt_ci is not None:
            intervals.append(tuple(self.params_opt_ci))
        if not intervals:
            return None
        return min(i[0] for i in intervals), max(i[1] for i in intervals)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vertex(coef: np.ndarray) -> tuple[float, float]:
    a, b, c = coef
    if not a > 0:
        return math.nan, math.nan
    x = -b / (2 * a)
    return float(x), float(c - b * b / (4 * a))


def fit_isoflop(
    params: Sequence[float],
    losses: Sequence[float],
    seeds: Sequence[Any] | None = None,
    *,
    n_bootstrap: int = 1000,
    rng_seed: int = 0,
) -> IsoFlopFit:
    """Fit loss against log10(params) at one budget (one point per run; seeds as repeats).

    Needs at least 3 distinct sizes; the covariance needs at least 4 points (numpy scales it
    by the residual variance). The bootstrap resamples, for each size, its per-seed losses
    with replacement and refits; percentiles of the vertices give the intervals.
    """
    x_all = np.log10(np.asarray(params, dtype=np.float64))
    y_all = np.asarray(losses, dtype=np.float64)
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y = x_all[keep], y_all[keep]
    sizes = np.unique(x)
    fit = IsoFlopFit(ok=False, n_points=len(x), n_sizes=len(sizes))
    if len(sizes) < 3:
        fit.reason = f"a parabola needs at least 3 model sizes at one budget, got {len(sizes)}"
        return fit
    fit.x_range = (float(10 ** sizes.min()), float(10 ** sizes.max()))
    coef = np.polyfit(x, y, 2)
    fit.coef = [float(v) for v in coef]
    cov = None
    if len(x) > 3:
        try:
            cov = np.polyfit(x, y, 2, cov=True)[1]
            fit.cov = cov.tolist()
        except (ValueError, np.linalg.LinAlgError):
            cov = None
    x_opt, y_opt = _vertex(coef)
    means = np.array([y[x == size].mean() for size in sizes])
    best = int(np.argmin(means))
    hint = ("the smallest size trained has the lowest loss: add smaller sizes" if best == 0 else
            "the largest size trained has the lowest loss: add larger sizes" if best == len(sizes) - 1 else
            "the losses are too noisy for a curve: add seeds or sizes")
    if not math.isfinite(x_opt):
        fit.reason = f"the fitted parabola has no minimum, so the sizes do not bracket the optimum ({hint})"
        return fit
    fit.ok = True
    fit.log10_params_opt, fit.params_opt, fit.loss_opt = x_opt, float(10**x_opt), y_opt
    fit.extrapolated = not (sizes.min() <= x_opt <= sizes.max())
    if cov is not None and np.all(np.isfinite(cov)):
        a, b, _ = coef
        grad_x = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
        grad_y = np.array([b * b / (4 * a * a), -b / (2 * a), 1.0])
        fit.log10_params_opt_se = float(math.sqrt(max(grad_x @ cov @ grad_x, 0.0)))
        fit.loss_opt_se = float(math.sqrt(max(grad_y @ cov @ grad_y, 0.0)))
    if seeds is not None and n_bootstrap > 0:
        _bootstrap_vertex(fit, x, y, sizes, n_bootstrap, rng_seed)
    return fit


def _bootstrap_vertex(fit: IsoFlopFit, x: np.ndarray, y: np.ndarray, sizes: np.ndarray, n_bootstrap: int,
                      rng_seed: int) -> None:
    """Set the fit's percentile intervals from refits that resample each size's seeds (needs ≥ 2 at a size)."""
    groups = [np.flatnonzero(x == size) for size in sizes]
    if not any(len(group) >= 2 for group in groups):
        return
    rng = np.random.default_rng(rng_seed)
    xs, ys = [], []
    for _ in range(n_bootstrap):
        picks = np.concatenate([rng.choice(group, size=len(group), replace=True) for group in groups])
        with np.errstate(all="ignore"):
            vx, vy = _vertex(np.polyfit(x[picks], y[picks], 2))
        if math.isfinite(vx):
            xs.append(vx)
            ys.append(vy)
    fit.bootstrap_valid = len(xs)
    if len(xs) >= max(10, n_bootstrap // 2):
        lo, hi = np.percentile(xs, [2.5, 97.5])
        fit.params_opt_ci = (float(10**lo), float(10**hi))
        fit.loss_opt_ci = tuple(float(v) for v in np.percentile(ys, [2.5, 97.5]))


@dataclass
class OptimumComparison:
    """loss_opt(a) − loss_opt(b) with its standard error and a normal-approximation p-value."""

    available: bool
    reason: str = ""
    diff: float = math.nan
    se: float = math.nan
    p: float = math.nan
    params_ratio: float = math.nan
    significant: bool = False


def compare_optima(a: IsoFlopFit, b: IsoFlopFit, confidence: float = CONFIDENCE) -> OptimumComparison:
    """Compare two architectures at their compute-optimal sizes (independent fits)."""
    from scipy import stats

    if not (a.ok and b.ok):
        return OptimumComparison(False, a.reason if not a.ok else b.reason)
    diff = a.loss_opt - b.loss_opt
    se = math.sqrt(a.loss_se() ** 2 + b.loss_se() ** 2) if math.isfinite(a.loss_se()) and math.isfinite(b.loss_se()) else math.nan
    ratio = a.params_opt / b.params_opt
    if not math.isfinite(se) or se == 0:
        return OptimumComparison(False, "no uncertainty for one of the fits (too few points)", diff=diff, params_ratio=ratio)
    p = float(2 * stats.norm.sf(abs(diff) / se))
    return OptimumComparison(True, diff=diff, se=se, p=p, params_ratio=ratio, significant=p < 1 - confidence)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979), in the input order.

    Sorted ascending p₍₁₎ ≤ … ≤ p₍ₘ₎ become max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎); rejecting
    where the adjusted p < α controls the family-wise error rate at α. m is the length of
    ``p_values``: a comparison that could not be tested (None or nan) stays in the family
    at p = 1, so it counts towards m and its adjusted p is 1.
    """
    values = [1.0 if p is None or not math.isfinite(p) else float(p) for p in p_values]
    adjusted = [math.nan] * len(values)
    m, running = len(values), 0.0
    for rank, (p, index) in enumerate(sorted((p, i) for i, p in enumerate(values))):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
