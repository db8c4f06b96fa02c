"""Figures of a study report: recall by distance, MoE routing over training, gradient norms, LR sensitivity.

Same conventions as ``harness.reporting.figures`` (colours per architecture, PNG + SVG through
``harness.reporting.figures.save_figure``); each function returns ``None`` when its data is absent.
Error bars are 95 % t-intervals over seeds, except accuracies: Wilson intervals over the items
pooled across seeds (``harness.reporting.proportions``), which stay within [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from harness.reporting.figures import STYLE, arch_color, plt
from harness.reporting.proportions import pooled_accuracy
from harness.reporting.stats import t_interval


def _mean_curve(curves: pd.DataFrame, run_ids: Sequence[str], metric: str, x: str = "step"):
    """Mean over runs of ``metric`` at each logged ``x`` present in every run."""
    rows = curves[curves["run_id"].isin(list(run_ids)) & (curves["metric"] == metric)]
    if rows.empty:
        return None
    table = rows.pivot_table(index=x, columns="run_id", values="value").dropna()
    return (table.index.to_numpy(), table.mean(axis=1).to_numpy()) if len(table) else None


def _pooled(rows: pd.DataFrame, column: str) -> tuple[float, float, float, int]:
    """Accuracy pooled over the runs' items with its Wilson interval; the mean without item counts."""
    values = pd.to_numeric(rows.get(column), errors="coerce") if column in rows else pd.Series(dtype=float)
    items = pd.to_numeric(rows.get(f"{column}/n"), errors="coerce") if f"{column}/n" in rows else None
    if items is not None and items.notna().any():
        return pooled_accuracy(list(values), list(items))
    clean = values.dropna()
    return (float(clean.mean()) if len(clean) else np.nan), np.nan, np.nan, 0


def recall_by_distance(runs: pd.DataFrame, archs: Sequence[str], distances: Sequence[int],
                       window: int | None, chance: float | None, context_baseline: float | None = None):
    """Recall accuracy against the distance to the definition, one line per architecture; chance and,
    when given, the context baseline (guessing among the definition's values) as horizontal lines."""
    columns = [f"eval/harness_recall_{d}/acc" for d in distances]
    if not any(c in runs.columns for c in columns):
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for arch in archs:
            mine = runs[runs["arch"] == arch]
            pooled = [_pooled(mine, c) for c in columns]
            means = [p[0] for p in pooled]
            errors = [[max(0.0, p[0] - p[1]) if np.isfinite(p[1]) else 0.0 for p in pooled],
                      [max(0.0, p[2] - p[0]) if np.isfinite(p[2]) else 0.0 for p in pooled]]
            ax.errorbar(distances, means, yerr=errors, marker="o", capsize=3, color=arch_color(arch, archs), label=arch)
        if window:
            ax.axvline(window, color="0.4", linestyle="--", linewidth=1)
            ax.text(window, ax.get_ylim()[1], f" band edge ({window} tokens)", va="top", fontsize=8, color="0.3")
        if chance is not None:
            ax.axhline(chance, color="0.6", linestyle=":", linewidth=1, label=f"chance ({chance:.3g})")
        if context_baseline is not None:
            ax.axhline(context_baseline, color="0.45", linestyle="-.", linewidth=1,
                       label=f"guessing among the definition's values ({context_baseline:.3g})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(distances), [str(d) for d in distances])
        ax.set_xlabel("distance from the query back to the key's definition (tokens)")
        ax.set_ylabel("recall accuracy (pooled over seeds, 95 % Wilson)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("Associative recall by distance")
        ax.legend(fontsize=8)
        return fig


def moe_routing(runs: pd.DataFrame, curves: pd.DataFrame, arch: str = "gpt4"):
    """Switch balance term and dropped-assignment fraction over training (mean over seeds)."""
    run_ids = runs.loc[runs["arch"] == arch, "run_id"]
    balance = _mean_curve(curves, run_ids, "moe_balance", "tokens")
    column = "model/moe_balance_weight"
    weights = pd.to_numeric(runs.loc[runs["arch"] == arch, column], errors="coerce").dropna() if column in runs else []
    if balance is not None and len(weights):  # the logged term is weighted by moe_balance_weight
        balance = (balance[0], balance[1] / float(weights.iloc[0]))
    dropped = _mean_curve(curves, run_ids, "moe_dropped_fraction", "tokens")
    if balance is None and dropped is None:
        return None
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5), sharex=True)
        if balance is not None:
            top.plot(*balance, color=arch_color(arch))
            top.axhline(1.0, color="0.5", linestyle=":", linewidth=1, label="uniform load (1.0)")
            top.set_ylabel("balance term E·Σ fᵢPᵢ")
            top.legend(fontsize=8)
        if dropped is not None:
            bottom.plot(dropped[0], 100 * dropped[1], color=arch_color(arch))
            bottom.set_ylabel("assignments dropped (%)")
        bottom.set_xlabel("training tokens")
        top.set_title(f"{arch}: expert load balance and capacity drops over training (mean over seeds)")
        return fig


def grad_norms(runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str] = ("gpt1", "gpt2")):
    """Gradient norm before clipping over training, each seed faint, the mean bold."""
    present = [a for a in archs if (runs["arch"] == a).any()]
    if not present or "grad_norm" not in set(curves["metric"]):
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for arch in present:
            color = arch_color(arch)
            run_ids = list(runs.loc[runs["arch"] == arch, "run_id"])
            for run_id in run_ids:
                rows = curves[(curves["run_id"] == run_id) & (curves["metric"] == "grad_norm")].sort_values("step")
                ax.plot(rows["tokens"], rows["value"], color=color, alpha=0.25, linewidth=0.7)
            mean = _mean_curve(curves, run_ids, "grad_norm", "tokens")
            if mean is not None:
                ax.plot(*mean, color=color, linewidth=1.5, label=f"{arch} (mean of {len(run_ids)} seeds)")
        ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1, label="clip threshold (1.0)")
        ax.set_yscale("log")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("global gradient norm before clipping")
        ax.set_title("Training stability: gradient norms")
        ax.legend(fontsize=8)
        return fig


def lr_sensitivity(points: pd.DataFrame, archs: Sequence[str] = ("gpt1", "gpt2")):
    """Final validation loss against the peak learning rate (``points``: arch, lr, final_val_loss per run)."""
    if points.empty or points["lr"].nunique() < 2:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 4))
        for arch in archs:
            mine = points[points["arch"] == arch]
            if mine.empty:
                continue
            lrs = sorted(mine["lr"].unique())
            intervals = [t_interval(mine.loc[mine["lr"] == lr, "final_val_loss"]) for lr in lrs]
            errors = [0 if not np.isfinite(i.half_width) else i.half_width for i in intervals]
            ax.errorbar(lrs, [i.mean for i in intervals], yerr=errors, marker="o", capsize=3,
                        color=arch_color(arch), label=arch)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate (log scale)")
        ax.set_ylabel("final validation loss (nats/token, 95 % CI)")
        ax.set_title("Learning-rate sensitivity at matched compute")
        ax.legend(fontsize=8)
        return fig
