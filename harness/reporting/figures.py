"""Report figures (matplotlib, Agg backend), each readable without the text.

Every function takes the runs frame (``harness.reporting.results.load_results``) and, where needed,
the long curves frame, and returns a ``Figure`` or ``None`` when the data for it is absent.
``save_figure`` writes PNG and SVG atomically. Colours are fixed per architecture, so a
figure and the next one agree.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.evaluation.chance import chance_level  # noqa: E402
from harness.reporting.formatting import fmt_si  # noqa: E402
from harness.reporting.proportions import score_bar, synthetic_config  # noqa: E402
from harness.io import write_bytes_atomic  # noqa: E402
from harness.reporting.stats import IsoFlopFit, t_interval  # noqa: E402

ARCH_COLORS = {"gpt1": "#1f77b4", "gpt2": "#ff7f0e", "gpt3": "#2ca02c", "gpt4": "#d62728"}
_FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
COMPONENT_LABELS = {
    "attention_projections": "attention projections (QKV + output)",
    "attention_scores": "attention scores (QKᵀ, AV)",
    "mlp": "MLP",
    "moe_experts": "MoE experts (k active)",
    "moe_router": "MoE router",
    "lm_head": "LM head (unembedding)",
}
COMPONENT_COLORS = {
    "attention_projections": "#4c72b0",
    "attention_scores": "#8c8cd9",
    "mlp": "#55a868",
    "moe_experts": "#c44e52",
    "moe_router": "#8c564b",
    "lm_head": "#ccb974",
}
FLOP_NOTE = "FLOPs = 2 per multiply-add"
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",
    "svg.hashsalt": "harness-report",
}


def arch_color(arch: str, order: Sequence[str] = ()) -> str:
    if arch in ARCH_COLORS:
        return ARCH_COLORS[arch]
    others = [a for a in order if a not in ARCH_COLORS]
    index = others.index(arch) if arch in others else abs(hash(arch))
    return _FALLBACK[index % len(_FALLBACK)]


def save_figure(fig, directory: str | Path, name: str) -> list[Path]:
    """Write ``<name>.png`` and ``<name>.svg`` atomically; closes the figure."""
    directory = Path(directory)
    paths = []
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with plt.rc_context(STYLE):  # svg.fonttype and svg.hashsalt are read when saving
            fig.savefig(buffer, format=fmt, bbox_inches="tight", metadata=metadata)
        paths.append(write_bytes_atomic(directory / f"{name}.{fmt}", buffer.getvalue()))
    plt.close(fig)
    return paths


def _groups(runs: pd.DataFrame, archs: Sequence[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """(arch, variant, rows) ordered by architecture order, then variant size."""
    out = []
    for arch in archs:
        sub = runs[runs["arch"] == arch]
        variants = sub.groupby("variant", sort=False)["active_params"].mean().sort_values().index
        for variant in variants:
            out.append((arch, variant, sub[sub["variant"] == variant]))
    return out


def _bar_label(arch: str, variant: str, several_variants: bool) -> str:
    return f"{arch}\n{variant}" if several_variants else arch


def _ema(values: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    out = np.empty_like(values, dtype=np.float64)
    acc = values[0] if len(values) else 0.0
    for i, value in enumerate(values):
        acc = alpha * value + (1 - alpha) * acc
        out[i] = acc
    return out


def loss_curves(runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str], x: str = "flops"):
    """Validation loss (markers) and smoothed training loss (faint) against FLOPs or wall time."""
    if curves.empty or "val_loss" not in set(curves["metric"]):
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for arch in archs:
            color = arch_color(arch, archs)
            run_ids = runs.loc[runs["arch"] == arch, "run_id"]
            labelled = False
            for run_id in run_ids:
                mine = curves[curves["run_id"] == run_id]
                train = mine[mine["metric"] == "train_loss"].sort_values("step")
                if len(train):
                    ax.plot(train[x], _ema(train["value"].to_numpy()), color=color, alpha=0.25, linewidth=0.8)
                val = mine[mine["metric"] == "val_loss"].sort_values("step")
                if len(val):
                    ax.plot(val[x], val["value"], marker="o", markersize=3, color=color, linewidth=1.4,
                            label=None if labelled else f"{arch} validation")
                    labelled = True
        ax.plot([], [], color="0.5", alpha=0.4, linewidth=0.8, label="training (EMA-smoothed), same colour")
        if x == "flops":
            _log_x(ax, scientific=True)
            ax.set_xlabel(f"training FLOPs so far (log scale; {FLOP_NOTE})")
            ax.set_title("Validation loss vs training compute (one line per run and seed)")
        else:
            ax.set_xlabel("wall-clock training time (s)")
            ax.set_title("Validation loss vs wall-clock time (one line per run and seed)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=8)
        return fig


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated (lower cost and lower loss), sorted by cost."""
    frontier, best = [], math.inf
    for cost, loss in sorted(points):
        if loss < best:
            frontier.append((cost, loss))
            best = loss
    return frontier


def _log_x(ax, scientific: bool = False) -> None:
    """Log x axis with ticks at 1, 2, 5 × 10^k, labelled compactly (no overlapping minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda value, _: f"{value:.0e}".replace("e+0", "e").replace("e+", "e") if scientific else fmt_si(value)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _cost_axis(ax, values: pd.Series) -> None:
    """Log scale when the costs span more than a factor of 10, else linear (readable ticks)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    values = values[values > 0]
    if len(values) and values.max() / values.min() > 10:
        _log_x(ax)
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:.4g}"))
        ax.margins(x=0.15)


def pareto(runs: pd.DataFrame, archs: Sequence[str]):
    """Final validation loss against FLOPs used and against wall-clock time, with the frontier."""
    ok = runs.dropna(subset=["final_val_loss"])
    if ok.empty:
        return None
    several = ok["variant"].nunique() > 1
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
        for ax, cost, xlabel in (
            (axes[0], "flops_used", f"training FLOPs used (log scale; {FLOP_NOTE})"),
            (axes[1], "wall_s", "wall-clock training time (s, log scale)"),
        ):
            means = []
            for arch, variant, rows in _groups(ok, archs):
                color = arch_color(arch, archs)
                ax.scatter(rows[cost], rows["final_val_loss"], color=color, alpha=0.35, s=14)
                mx, my = float(rows[cost].mean()), t_interval(rows["final_val_loss"])
                ax.errorbar(mx, my.mean, yerr=None if math.isnan(my.half_width) else my.half_width, fmt="o",
                            color=color, markersize=6, capsize=3,
                            label=f"{arch} {variant}" if several else arch)
                means.append((mx, my.mean))
            frontier = _pareto(means)
            if frontier:
                fx, fy = zip(*frontier)
                ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, label="Pareto frontier")
            _cost_axis(ax, ok[cost])
            ax.set_xlabel(xlabel if ax.get_xscale() == "log" else xlabel.replace("log scale; ", "").replace(", log scale", ""))
        axes[0].set_ylabel("final validation loss (nats/token)")
        axes[0].set_title("Quality vs compute (mean ± 95 % CI over seeds; dots: seeds)")
        axes[1].set_title("Quality vs wall-clock cost")
        axes[1].legend(fontsize=7, loc="best")
        return fig


def throughput(runs: pd.DataFrame, archs: Sequence[str]):
    """Training tokens/s and MFU per model: bars at the mean over seeds, dots for each seed."""
    ok = runs.dropna(subset=["tokens_per_s"])
    if ok.empty:
        return None
    groups = _groups(ok, archs)
    several = ok["variant"].nunique() > 1
    labels = [_bar_label(a, v, several) for a, v, _ in groups]
    colors = [arch_color(a, archs) for a, _, _ in groups]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(groups) * 2), 4))
        for ax, column, scale, ylabel, title in (
            (axes[0], "tokens_per_s", 1.0, "training throughput (tokens/s)", "Throughput"),
            (axes[1], "mfu", 100.0, "MFU (% of peak FLOP/s)", "Model FLOPs utilisation (achieved / peak)"),
        ):
            values = [pd.to_numeric(rows[column], errors="coerce").dropna() * scale if column in rows else pd.Series(dtype=float)
                      for _, _, rows in groups]
            ax.bar(range(len(groups)), [v.mean() if len(v) else 0.0 for v in values], color=colors, alpha=0.85)
            for i, v in enumerate(values):
                ax.scatter(np.full(len(v), i), v, color="black", s=12, zorder=3,
                           label="one seed" if i == 0 and column == "tokens_per_s" else None)
            ax.set_xticks(range(len(groups)), labels, fontsize=8)
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            if all(len(v) == 0 for v in values):
                ax.text(0.5, 0.5, "not drawn: peak FLOP/s of this device unknown", transform=ax.transAxes, ha="center")
        axes[0].legend(fontsize=8)
        fig.suptitle("Training speed (bars: mean over seeds; " + FLOP_NOTE + ", training = 3 × forward)", fontsize=9)
        return fig


def flops_breakdown(breakdowns: list[tuple[str, str, dict[str, float]]], archs: Sequence[str]):
    """Stacked bars of training FLOPs per token by component, one bar per (arch, variant)."""
    if not breakdowns:
        return None
    several = len({variant for _, variant, _ in breakdowns}) > 1
    keys = [k for k in COMPONENT_LABELS if any(b.get(k, 0) > 0 for _, _, b in breakdowns)]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(breakdowns) + 3), 4.5))
        bottom = np.zeros(len(breakdowns))
        for key in keys:
            values = np.array([3 * b.get(key, 0.0) for _, _, b in breakdowns])
            ax.bar(range(len(breakdowns)), values, bottom=bottom, label=COMPONENT_LABELS[key],
                   color=COMPONENT_COLORS[key], edgecolor="white", linewidth=0.5)
            bottom += values
        for i, total in enumerate(bottom):
            ax.text(i, total, f"{total:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(breakdowns)), [_bar_label(a, v, several) for a, v, _ in breakdowns], fontsize=8)
        ax.set_ylabel(f"training FLOPs per token ({FLOP_NOTE}; 3 × forward)")
        ax.set_title("Where the compute goes: training FLOPs per token by component")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        return fig


def evaluation(runs: pd.DataFrame, eval_columns: list[tuple[str, str, str]], archs: Sequence[str]):
    """One panel per (task, metric) with chance dotted: accuracies pooled over items with Wilson intervals,
    other metrics the mean with lm-eval's stderr as error bars."""
    if not eval_columns:
        return None
    groups = _groups(runs, archs)
    several = runs["variant"].nunique() > 1
    n = len(eval_columns)
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols + 0.4 * len(groups), 3.2 * rows_n), squeeze=False)
        for ax, (column, task, metric) in zip(axes.flat, eval_columns):
            heights, errors, colors, labels = [], [[], []], [], []
            for arch, variant, rows in groups:
                height, low, high = score_bar(rows, column, metric)
                heights.append(height)
                errors[0].append(low)
                errors[1].append(high)
                colors.append(arch_color(arch, archs))
                labels.append(_bar_label(arch, variant, several))
            ax.bar(range(len(groups)), np.nan_to_num(heights), yerr=errors, color=colors, capsize=3)
            chance = chance_level(task, metric, synthetic_config(runs))
            if chance is not None:
                ax.axhline(chance, color="0.4", linestyle=":", linewidth=1, label=f"chance ({chance:.3g})")
                ax.legend(fontsize=6, loc="upper right")
            for i, height in enumerate(heights):
                if np.isfinite(height):
                    ax.annotate(f"{height:.3g}", (i, height), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(groups)), labels, fontsize=7)
            counts = pd.to_numeric(runs.get(f"{column}/n"), errors="coerce").dropna() if f"{column}/n" in runs else []
            docs = f" (n = {int(counts.max())})" if len(counts) else ""
            ax.set_title(f"{task}: {metric}{docs}", fontsize=9)
            log = "perplexity" in metric and np.nanmin(np.asarray(heights, dtype=float)) > 0
            ax.set_ylabel(metric + (" (log scale)" if log else ""))
            if log:
                ax.set_yscale("log")
            else:
                top = np.nanmax(np.asarray(heights, dtype=float) + np.asarray(errors[1], dtype=float))
                ax.set_ylim(0, 1.0 if not np.isfinite(top) or top <= 0 else top * 1.2)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle("lm-eval metrics (mean over seeds; error bars: 95 % Wilson interval over the pooled items for "
                     "accuracies, lm-eval stderr otherwise; dotted: chance)", fontsize=9)
        fig.tight_layout()
        return fig


def segments(runs: pd.DataFrame, segment_names: list[str], archs: Sequence[str]):
    """Synthetic data: excess loss over the entropy floor per segment type, per model."""
    columns = [f"segment/{name}/excess_loss" for name in segment_names if f"segment/{name}/excess_loss" in runs]
    if not columns:
        return None
    groups = _groups(runs, archs)
    several = runs["variant"].nunique() > 1
    width = 0.8 / max(1, len(groups))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(columns) + 2), 4.2))
        for g, (arch, variant, rows) in enumerate(groups):
            stats = [t_interval(pd.to_numeric(rows[c], errors="coerce")) for c in columns]
            xs = np.arange(len(columns)) + (g - (len(groups) - 1) / 2) * width
            ax.bar(xs, [s.mean for s in stats], width=width, color=arch_color(arch, archs),
                   alpha=1.0 if not several else 0.5 + 0.5 * (g % 2),
                   yerr=[0.0 if math.isnan(s.half_width) else s.half_width for s in stats], capsize=2,
                   label=f"{arch} {variant}" if several else arch)
        ax.set_xticks(range(len(columns)), [c.split("/")[1] for c in columns])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("excess loss over the entropy floor (nats/token)")
        ax.set_xlabel("synthetic segment type")
        ax.set_title("What each model has not learned yet, by segment (mean ± 95 % CI over seeds)")
        ax.legend(fontsize=8)
        return fig


def isoflop(points: pd.DataFrame, fits: dict[tuple[float, str], IsoFlopFit], archs: Sequence[str], x_column: str):
    """Final loss against parameters at each budget, with the fitted parabolas and their optima."""
    budgets = sorted(points["budget_flops"].unique())
    if not fits:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(budgets), figsize=(max(6.5, 5.2 * len(budgets)), 4.6), squeeze=False, sharey=True)
        for ax, budget in zip(axes.flat, budgets):
            here = points[points["budget_flops"] == budget]
            for arch in archs:
                mine = here[here["arch"] == arch]
                if mine.empty:
                    continue
                color = arch_color(arch, archs)
                ax.scatter(mine[x_column], mine["final_val_loss"], color=color, s=16, alpha=0.6)
                fit = fits.get((budget, arch))
                if fit is None or not fit.coef:
                    continue
                lo, hi = mine[x_column].min(), mine[x_column].max()
                grid = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 100)
                label = arch
                label += f": N* ≈ {fmt_si(fit.params_opt)} active params" if fit.ok else ": no minimum in range"
                ax.plot(grid, fit.predict(grid), color=color, label=label)
                if fit.ok:
                    xerr = None
                    interval = fit.params_opt_interval()
                    if interval is not None:
                        xerr = [[fit.params_opt - interval[0]], [interval[1] - fit.params_opt]]
                    ax.errorbar(fit.params_opt, fit.loss_opt, xerr=xerr, fmt="*", markersize=11, color=color,
                                markeredgecolor="black", capsize=3)
            _log_x(ax)
            ax.set_xlabel("active parameters (log scale)")
            ax.set_title(f"isoFLOP at {budget:.3g} training FLOPs")
            ax.legend(fontsize=8)
        axes.flat[0].set_ylabel("final validation loss (nats/token)")
        fig.suptitle("Loss vs model size at fixed compute: parabola fits in log(params), ★ = optimum\n"
                     "(bars: 95 % interval of N*, the wider of delta-method and seed bootstrap)", fontsize=9)
        fig.tight_layout()
        return fig


def describe_figures() -> dict[str, str]:
    """Figure file stem → what it shows (used as alt text and captions)."""
    return {
        "loss_vs_flops": "Validation loss vs training FLOPs (log x), every run",
        "loss_vs_wall": "Validation loss vs wall-clock training time, every run",
        "pareto": "Final validation loss vs compute used and vs wall time, with the Pareto frontier",
        "throughput": "Training throughput (tokens/s) and MFU per model",
        "flops_breakdown": "Training FLOPs per token by component",
        "evaluation": "lm-eval metrics with stderr error bars",
        "segments": "Excess loss over the entropy floor per synthetic segment type",
        "isoflop": "IsoFLOP curves: final loss vs parameters with fitted parabolas",
    }
