"""FLOPs to a probe threshold: per-run columns computed from the in-training recall probe curves.

A study file's optional top-level block (``ProbeSettings``)::

    probes: {distances: [16, 64], threshold: 0.3}

names the recall distances the runs score during training (``train_probes``,
``harness.evaluation.train_probes``) and an accuracy threshold (a fraction in (0, 1]). For each run
and distance, ``probe/recall_<d>/flops_to_<thr>`` (``threshold_column``) is the training FLOPs
(cumulative at that step, 2 per multiply-add, the ``flops`` column of metrics.jsonl) at which the
accuracy first reaches the threshold, linearly interpolated in FLOPs between the previous validation
point and the first one at or above it (the first point's FLOPs when that is the first validation);
NaN when it is never reached (censored). The column can be a planned comparison's ``metric``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.runs.validation import check_train_probes


@dataclass(frozen=True)
class ProbeSettings:
    """The study's in-training probe block: recall ``distances`` (tokens) and an accuracy ``threshold`` in (0, 1]."""

    distances: tuple[int, ...]
    threshold: float

    @classmethod
    def from_dict(cls, data: Any, where: str = "the study") -> "ProbeSettings":
        if not isinstance(data, dict) or set(data) - {"distances", "threshold"} or "distances" not in data:
            raise ValueError(f"`probes` in {where} must be a mapping like {{distances: [16, 64], threshold: 0.3}}.")
        listed = data["distances"] if isinstance(data["distances"], list) else [data["distances"]]
        distances = check_train_probes(listed)
        try:
            threshold = float(data.get("threshold", 0.5))
        except (TypeError, ValueError):
            threshold = math.nan
        if not distances or not 0 < threshold <= 1:
            raise ValueError(f"`probes` in {where} needs at least one distance and a threshold in (0, 1] (an accuracy "
                             f"fraction, e.g. 0.3); got {data!r}.")
        return cls(distances, threshold)

    def to_dict(self) -> dict[str, Any]:
        return {"distances": list(self.distances), "threshold": self.threshold}


def probe_metric(distance: int) -> str:
    """The curve column of a distance (as ``harness.evaluation.train_probes.metric_name``)."""
    return f"probe/recall_{int(distance)}/acc"


def threshold_column(distance: int, threshold: float) -> str:
    """``probe/recall_<d>/flops_to_<thr>``, e.g. ``probe/recall_16/flops_to_0.3``."""
    return f"probe/recall_{int(distance)}/flops_to_{threshold:g}"


def flops_to_threshold(flops: Sequence[float], accuracy: Sequence[float], threshold: float) -> float:
    """Training FLOPs at which ``accuracy`` (per validation point, in step order) first reaches ``threshold``.

    Linear interpolation in FLOPs between the previous point and the first one at or above the
    threshold; the first point's FLOPs when it is already there; NaN when never reached (censored).
    """
    x, y = np.asarray(flops, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    reached = np.flatnonzero(y >= threshold)
    if not len(reached):
        return math.nan
    i = int(reached[0])
    if i == 0:
        return float(x[0])
    fraction = (threshold - y[i - 1]) / (y[i] - y[i - 1])
    return float(x[i - 1] + fraction * (x[i] - x[i - 1]))


def add_probe_measures(runs: pd.DataFrame, curves: pd.DataFrame, settings: ProbeSettings | None) -> pd.DataFrame:
    """``runs`` with ``threshold_column(d, threshold)`` for each distance: a number, NaN when censored or when
    the run logged no probe curve (``probe/recall_<d>/logged`` says which: 1 logged, 0 not)."""
    runs = runs.copy()
    if settings is None:
        return runs
    for distance in settings.distances:
        column, logged = threshold_column(distance, settings.threshold), f"probe/recall_{distance}/logged"
        runs[column], runs[logged] = math.nan, 0
        rows = curves[curves["metric"] == probe_metric(distance)] if not curves.empty else curves
        for index, row in runs.iterrows():
            mine = rows[rows["run_id"] == row["run_id"]].sort_values("step")
            if len(mine):
                runs.at[index, logged] = 1
                runs.at[index, column] = flops_to_threshold(mine["flops"], mine["value"], settings.threshold)
    return runs
