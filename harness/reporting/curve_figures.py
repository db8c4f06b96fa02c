"""Loss curves read at a glance: mean and seed band per architecture, reference lines, a zoom, and tokens.

``loss_panels`` draws three panels of validation loss (nats/token): against training FLOPs
(log x; 2 per multiply-add), the same zoomed on the last ``ZOOM_FRACTION`` of training, and
against training tokens (which separates "saw more tokens" from "better per token"). Each
architecture has its mean over seeds (bold), the band between the lowest and highest seed
(shaded) and each seed (faint); horizontal lines mark the unigram baseline and, on synthetic
data, the exact entropy floor.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from harness.reporting.figures import FLOP_NOTE, STYLE, _log_x, arch_color, plt

ZOOM_FRACTION = 0.3  # the zoomed panel shows the last 30 % of training FLOPs


def _validation(curves: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    rows = curves[curves["run_id"].isin(list(run_ids)) & (curves["metric"] == "val_loss")]
    return rows.sort_values(["run_id", "step"])


def _mean_band(rows: pd.DataFrame, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(x, mean, low, high) over the runs at every step all of them logged (x averaged over runs)."""
    values = rows.pivot_table(index="step", columns="run_id", values="value").dropna()
    if values.empty:
        return None
    xs = rows.pivot_table(index="step", columns="run_id", values=x).loc[values.index].mean(axis=1)
    return xs.to_numpy(), values.mean(axis=1).to_numpy(), values.min(axis=1).to_numpy(), values.max(axis=1).to_numpy()


def _references(ax, unigram: float | None, floor: float | None) -> None:
    if unigram is not None and np.isfinite(unigram):
        ax.axhline(unigram, color="0.35", linestyle="--", linewidth=1, label=f"unigram baseline ({unigram:.3f})")
    if floor is not None and np.isfinite(floor):
        ax.axhline(floor, color="0.2", linestyle=":", linewidth=1, label=f"entropy floor ({floor:.3f})")


def _panel(ax, runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str], x: str,
           start: float | None = None) -> None:
    for arch in archs:
        color = arch_color(arch, archs)
        run_ids = list(runs.loc[runs["arch"] == arch, "run_id"])
        rows = _validation(curves, run_ids)
        if start is not None:
            rows = rows[rows[x] >= start]
        for _, seed_rows in rows.groupby("run_id", sort=True):
            ax.plot(seed_rows[x], seed_rows["value"], color=color, alpha=0.3, linewidth=0.7)
        band = _mean_band(rows, x)
        if band is not None:
            xs, mean, low, high = band
            ax.fill_between(xs, low, high, color=color, alpha=0.18, linewidth=0)
            ax.plot(xs, mean, color=color, linewidth=1.8, marker="o", markersize=2.5,
                    label=f"{arch} (mean of {len(run_ids)} seed{'s' if len(run_ids) != 1 else ''})")


def loss_panels(runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str], unigram: float | None = None,
                floor: float | None = None, title: str = ""):
    """The three panels (see the module docstring), or None without validation curves."""
    if curves.empty or "val_loss" not in set(curves["metric"]):
        return None
    flops = curves.loc[curves["metric"] == "val_loss", "flops"]
    start = float(flops.max()) * (1 - ZOOM_FRACTION)
    with plt.rc_context(STYLE):
        fig, (full, zoom, tokens) = plt.subplots(1, 3, figsize=(15, 4.6))
        _panel(full, runs, curves, archs, "flops")
        _references(full, unigram, floor)
        _log_x(full, scientific=True)
        full.set_xlabel(f"training FLOPs so far (log scale; {FLOP_NOTE})")
        full.set_ylabel("validation loss (nats/token)")
        full.set_title("Validation loss vs training compute")
        _panel(zoom, runs, curves, archs, "flops", start)
        zoom.set_xlabel(f"training FLOPs so far ({FLOP_NOTE})")
        zoom.set_title(f"Zoom: the last {ZOOM_FRACTION:.0%} of training")
        _panel(tokens, runs, curves, archs, "tokens")
        _references(tokens, unigram, floor)
        tokens.set_xlabel("training tokens so far")
        tokens.set_title("Validation loss vs training tokens")
        full.legend(fontsize=7)
        fig.suptitle((title + ": " if title else "") + "mean over seeds (bold), lowest–highest seed (band), "
                     "each seed (faint)", fontsize=9)
        fig.tight_layout()
        return fig
