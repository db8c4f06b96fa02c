"""Intervals for accuracies: Wilson's score interval over the pooled items (never outside [0, 1]).

An accuracy measured on n items (pooled over seeds: the sum of each run's items) with k
correct has the Wilson (1927) 95 % interval

    (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n),   p̂ = k/n,

which stays inside [0, 1] and does not collapse to a point at p̂ = 0 or 1 (unlike p̂ ± z·se).
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for ``successes`` of ``n`` items; (nan, nan) without items."""
    if not n or n <= 0 or not math.isfinite(n):
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n]; got {successes} of {n}.")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends (rounding aside)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def pooled_accuracy(accuracies: Sequence[float], items: Sequence[float]) -> tuple[float, float, float, int]:
    """(pooled accuracy, Wilson low, Wilson high, items) over runs: Σ accᵢ·nᵢ correct of Σ nᵢ items.

    Runs without a finite accuracy or item count are left out; with none, every value is nan.
    """
    pairs = [(float(a), float(n)) for a, n in zip(accuracies, items)
             if a is not None and n is not None and math.isfinite(a) and math.isfinite(n) and n > 0]
    total = sum(n for _, n in pairs)
    if not total:
        return math.nan, math.nan, math.nan, 0
    correct = min(total, max(0.0, sum(round(a * n) for a, n in pairs)))
    low, high = wilson_interval(correct, total)
    return correct / total, low, high, int(total)
