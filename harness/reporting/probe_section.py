"""The study report's "Probes during training": recall accuracy against training FLOPs, and FLOPs to a threshold.

``probe_curves`` draws one panel per distance: per architecture the mean accuracy over seeds
(bold), the band between the lowest and highest seed (shaded), each seed (faint), chance
(1/n_values) and the study's threshold, against training FLOPs so far (2 per multiply-add, log x).
``threshold_table`` gives, per architecture and distance, the geometric mean over the seeds that
reached the threshold of the FLOPs to reach it (``harness.sweeps.probe_measures``) with a 95 %
t-interval on log10 FLOPs, and "k of n seeds reached it": a censored seed (never reached) is
counted in n, never dropped. Both read only the runs frame and curves of the report's data folder.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from harness.reporting.figures import FLOP_NOTE, STYLE, _log_x, arch_color, plt
from harness.reporting.formatting import fmt_sci, markdown_table
from harness.reporting.stats import t_interval
from harness.sweeps.probe_measures import ProbeSettings, probe_metric, threshold_column


def has_probes(runs: pd.DataFrame, settings: ProbeSettings | None) -> bool:
    """Whether any run of ``runs`` logged a probe curve of the study's distances."""
    return settings is not None and any(
        f"probe/recall_{d}/logged" in runs.columns and runs[f"probe/recall_{d}/logged"].eq(1).any()
        for d in settings.distances)


def _panel(ax, runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str], distance: int) -> None:
    rows = curves[curves["metric"] == probe_metric(distance)]
    for arch in archs:
        color = arch_color(arch, archs)
        mine = rows[rows["run_id"].isin(list(runs.loc[runs["arch"] == arch, "run_id"]))].sort_values(["run_id", "step"])
        if mine.empty:
            continue
        for _, seed_rows in mine.groupby("run_id", sort=True):
            ax.plot(seed_rows["flops"], seed_rows["value"], color=color, alpha=0.3, linewidth=0.7)
        values = mine.pivot_table(index="step", columns="run_id", values="value").dropna()
        xs = mine.pivot_table(index="step", columns="run_id", values="flops").loc[values.index].mean(axis=1)
        n = values.shape[1]
        ax.fill_between(xs, values.min(axis=1), values.max(axis=1), color=color, alpha=0.18, linewidth=0)
        ax.plot(xs, values.mean(axis=1), color=color, linewidth=1.8, marker="o", markersize=2.5,
                label=f"{arch} (mean of {n} seed{'s' if n != 1 else ''})")


def probe_curves(runs: pd.DataFrame, curves: pd.DataFrame, archs: Sequence[str], settings: ProbeSettings,
                 chance: float | None):
    """One panel per distance (see the module docstring), or None without probe curves."""
    if curves.empty or not has_probes(runs, settings):
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(settings.distances), figsize=(5.2 * len(settings.distances), 4.2),
                                 squeeze=False)
        for ax, distance in zip(axes[0], settings.distances):
            _panel(ax, runs, curves, archs, distance)
            if chance is not None:
                ax.axhline(chance, color="0.6", linestyle=":", linewidth=1, label=f"chance ({chance:.3g})")
            ax.axhline(settings.threshold, color="0.3", linestyle="--", linewidth=1,
                       label=f"threshold ({settings.threshold:g})")
            _log_x(ax, scientific=True)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"training FLOPs so far (log scale; {FLOP_NOTE})")
            ax.set_ylabel("recall accuracy (fraction of 100 items)")
            ax.set_title(f"Recall {distance} tokens back, during training")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("mean over seeds (bold), lowest–highest seed (band), each seed (faint)", fontsize=9)
        fig.tight_layout()
        return fig


def _cell(values: pd.Series) -> tuple[str, str]:
    """(geometric mean [95 % interval] FLOPs, "k of n") over one architecture's seeds."""
    n = int(len(values))
    reached = values[np.isfinite(values.to_numpy(dtype=np.float64))]
    k = int(len(reached))
    if k == 0:
        return "not reached", f"0 of {n}"
    interval = t_interval(list(np.log10(reached.to_numpy(dtype=np.float64))))
    text = fmt_sci(10 ** interval.mean)
    if math.isfinite(interval.half_width):
        text += f" [{fmt_sci(10 ** interval.low)}, {fmt_sci(10 ** interval.high)}]"
    return text, f"{k} of {n}"


def threshold_table(runs: pd.DataFrame, archs: Sequence[str], settings: ProbeSettings) -> str:
    """Per architecture and distance: FLOPs to the threshold over the seeds that logged the probe."""
    headers, rows = ["arch"], []
    for d in settings.distances:
        headers += [f"recall {d}: FLOPs to {settings.threshold:g} (geometric mean [95 %])",
                    f"recall {d}: seeds reached"]
    for arch in archs:
        mine, row = runs[runs["arch"] == arch], [arch]
        for d in settings.distances:
            logged = mine[mine.get(f"probe/recall_{d}/logged", pd.Series(0, index=mine.index)).eq(1)]
            row += list(_cell(pd.to_numeric(logged[threshold_column(d, settings.threshold)], errors="coerce")))
        rows.append(row)
    return markdown_table(headers, rows)


def section_lines(setting_name: str, table: str, settings: ProbeSettings) -> list[str]:
    """The section's heading, its table and what the numbers mean."""
    return [f"## Probes during training (`{setting_name}`)", "", table, "",
            f"FLOPs to {settings.threshold:g}: training FLOPs (2 per multiply-add) at which the in-training recall "
            "accuracy (the first 100 items of lm-eval's `harness_recall_<d>`, greedy next token, at every validation "
            "point) first reaches the threshold, linearly interpolated between validation points; the geometric mean "
            "over the seeds that reached it, with a 95 % t-interval on log10 FLOPs (2 seeds or more). A seed that "
            "never reached it is censored: counted in \"seeds reached\", left out of the mean, and makes a planned "
            f"comparison on `probe/recall_<d>/flops_to_{settings.threshold:g}` untestable.", ""]
