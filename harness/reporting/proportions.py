"""Intervals for accuracies: Wilson's score interval over the pooled items (never outside [0, 1]).

An accuracy measured on n items (pooled over seeds: the sum of each run's items) with k
correct has the Wilson (1927) 95 % interval

    (p̂ + z²/2n ± z·√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n),   p̂ = k/n,

which stays inside [0, 1] and does not collapse to a point at p̂ = 0 or 1 (unlike p̂ ± z·se).
``score_bar`` gives a figure's bar and error bar for an lm-eval metric from a runs frame.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

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


POOLED_METRICS = ("acc", "acc_norm", "exact_match")  # proportions of items: Wilson intervals


def synthetic_config(runs: pd.DataFrame) -> dict:
    """The synthetic generator's settings as the records hold them (``data/synthetic_config/...``), or {}."""
    prefix = "data/synthetic_config/"
    if runs.empty:
        return {}
    row = runs.iloc[0]
    return {c[len(prefix):]: row[c] for c in runs.columns if c.startswith(prefix) and pd.notna(row[c])}


def score_bar(rows: pd.DataFrame, column: str, metric: str) -> tuple[float, float, float]:
    """(height, error below, error above): pooled accuracy with its Wilson interval when the records count
    items, else the mean with lm-eval's stderr (root-mean-square over seeds) both ways."""
    values = pd.to_numeric(rows[column], errors="coerce")
    if metric in POOLED_METRICS and f"{column}/n" in rows and rows[f"{column}/n"].notna().any():
        accuracy, low, high, _ = pooled_accuracy(list(values), list(pd.to_numeric(rows[f"{column}/n"], errors="coerce")))
        if np.isfinite(accuracy):
            return accuracy, accuracy - low, high - accuracy
    stderr = pd.to_numeric(rows[f"{column}/stderr"], errors="coerce").dropna() if f"{column}/stderr" in rows else []
    error = float(np.sqrt((stderr**2).mean())) if len(stderr) else 0.0
    values = values.dropna()
    return (values.mean() if len(values) else np.nan), error, error
