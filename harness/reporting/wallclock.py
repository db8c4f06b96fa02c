"""The study report's matched wall-clock view, from idle-machine step times (``data/step_times.json``).

A run's *estimated* training time at step s is s × its architecture's median seconds per
optimizer step as ``python -m harness study FILE --bench`` measured it on an idle machine
(``harness.sweeps.step_times``) — not the run's own wall time, which other jobs shared. Per
setting (sweep), T* is the shortest estimated total training time over its runs (total = the
last validated step × s/step), so every run has reached T*; each run's validation loss at T*
is linearly interpolated on its validation curve (val_loss against step) between the logged
points around step T* / (s/step). The table gives the mean with its 95 % t-interval over seeds
and the difference to the reference architecture, paired seed i with seed i (95 % t-interval
of the per-seed differences). Everything comes from the data folder, so it regenerates byte for byte.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.io import read_json
from harness.reporting.figures import STYLE, arch_color, plt
from harness.reporting.formatting import fmt_interval, markdown_table
from harness.reporting.paired import paired_t_test
from harness.reporting.stats import t_interval
from harness.reporting.study_tables import Setting, ordered_archs
from harness.sweeps.step_times import STEP_TIMES_NAME

FIGURE_KEY = "wallclock"


def read_step_times(data_dir: str | Path) -> dict[str, Any] | None:
    """``data/step_times.json`` as written by ``harness.sweeps.step_times``, or None when absent."""
    path = Path(data_dir) / STEP_TIMES_NAME
    return read_json(path) if path.exists() else None


def loss_at_step(steps: Sequence[float], losses: Sequence[float], step: float) -> float:
    """Validation loss at ``step``, linearly interpolated between the logged points (nan outside them)."""
    order = np.argsort(np.asarray(steps, dtype=np.float64))
    x, y = np.asarray(steps, dtype=np.float64)[order], np.asarray(losses, dtype=np.float64)[order]
    if len(x) == 0 or step < x[0] or step > x[-1]:
        return math.nan
    return float(np.interp(step, x, y))


def _val_curve(curves: pd.DataFrame, run_id: str) -> tuple[np.ndarray, np.ndarray]:
    rows = curves[(curves["run_id"] == run_id) & (curves["metric"] == "val_loss")].sort_values("step")
    return rows["step"].to_numpy(dtype=np.float64), rows["value"].to_numpy(dtype=np.float64)


def setting_view(setting: Setting, times: dict[str, dict]) -> pd.DataFrame:
    """Per run with a benched arch: arch, seed, s/step, estimated total time (s), loss at T*; ``attrs["t_star"]``."""
    rows = []
    for _, run in setting.runs.iterrows():
        if run["arch"] not in times:
            continue
        steps, losses = _val_curve(setting.curves, run["run_id"])
        if not len(steps):
            continue
        s_per_step = float(times[run["arch"]]["s_per_step_median"])
        rows.append({"arch": run["arch"], "seed": int(run["seed"]), "run_id": run["run_id"], "s_per_step": s_per_step,
                     "total_s": float(steps[-1]) * s_per_step, "steps": steps, "losses": losses})
    view = pd.DataFrame(rows)
    if view.empty:
        return view
    t_star = float(view["total_s"].min())
    view["loss_at_t_star"] = [loss_at_step(r.steps, r.losses, t_star / r.s_per_step) for r in view.itertuples()]
    view.attrs["t_star"] = t_star
    return view


def _difference(view: pd.DataFrame, arch: str, reference: str) -> str:
    if arch == reference:
        return "reference"
    mine = view[view["arch"] == arch].set_index("seed")["loss_at_t_star"]
    ref = view[view["arch"] == reference].set_index("seed")["loss_at_t_star"]
    seeds = sorted(set(mine.index) & set(ref.index))
    test = paired_t_test([mine[s] for s in seeds], [ref[s] for s in seeds])
    if not math.isfinite(test.diff):
        return "—"
    if not test.available:
        return f"{test.diff:+.4f} (no interval: {test.reason})"
    return f"{test.diff:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}] ({test.n_a} seed pairs)"


def view_table(view: pd.DataFrame, times: dict[str, dict], reference: str) -> str:
    """arch, s/step, tokens/step, estimated total time, loss at T* and the paired difference to ``reference``."""
    headers = ["arch", "s/step (idle, median)", "tokens/step", "estimated total training time (s, mean)",
               "val loss at T* (nats/token)", f"Δ vs {reference} at T* (nats/token, paired, 95 % CI)"]
    rows = []
    for arch in ordered_archs(view):
        mine = view[view["arch"] == arch]
        rows.append([arch, f"{times[arch]['s_per_step_median']:.4g}", times[arch].get("tokens_per_step", "—"),
                     f"{mine['total_s'].mean():.1f}", fmt_interval(t_interval(mine["loss_at_t_star"]), 4),
                     _difference(view, arch, reference)])
    return markdown_table(headers, rows)


def _mean_band(view: pd.DataFrame, arch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps every seed logged, with the mean, min and max validation loss over seeds there."""
    mine = view[view["arch"] == arch]
    common = sorted(set.intersection(*(set(s.tolist()) for s in mine["steps"])))
    table = np.array([[dict(zip(r.steps.tolist(), r.losses.tolist()))[s] for s in common] for r in mine.itertuples()])
    return np.asarray(common, dtype=np.float64), table.mean(axis=0), table.min(axis=0), table.max(axis=0)


def wallclock_figure(views: dict[str, pd.DataFrame]):
    """Validation loss against estimated training seconds, one panel per setting: the mean over seeds per
    architecture, the min–max band over seeds, and T* dashed."""
    views = {name: view for name, view in views.items() if not view.empty}
    if not views:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4), squeeze=False)
        for ax, (name, view) in zip(axes[0], views.items()):
            archs = ordered_archs(view)
            for arch in archs:
                steps, mean, low, high = _mean_band(view, arch)
                seconds = steps * float(view.loc[view["arch"] == arch, "s_per_step"].iloc[0])
                color = arch_color(arch, archs)
                ax.fill_between(seconds, low, high, color=color, alpha=0.2, linewidth=0)
                ax.plot(seconds, mean, color=color, label=f"{arch} (mean of {int((view['arch'] == arch).sum())} seeds)")
            t_star = view.attrs["t_star"]
            ax.axvline(t_star, color="0.3", linestyle="--", linewidth=1, label=f"T* = {t_star:.1f} s")
            ax.set_xlabel("estimated training time (s: step × idle s/step)")
            ax.set_ylabel("validation loss (nats/token)")
            ax.set_title(f"{name}: loss at matched wall-clock time")
            ax.legend(fontsize=8)
        return fig


def wallclock_section(settings: Sequence[Setting], step_times: dict[str, Any] | None, reference: str,
                      figures_dir: Path) -> tuple[list[str], list[Path]]:
    """The section's markdown lines and the figure files; nothing without ``step_times``."""
    from harness.reporting.figures import save_figure
    from harness.reporting.formatting import markdown_figure

    if not step_times:
        return [], []
    measured = step_times.get("sweeps") or {}
    before, after = step_times.get("load_before") or {}, step_times.get("load_after") or {}
    machine = step_times.get("machine") or {}
    parts = ["## Matched wall-clock view", "",
             "Estimated from idle-machine step times, not the runs' own wall time (which depends on what else the machine "
             "ran meanwhile): a run's "
             "training time at step s is s × its architecture's median seconds per optimizer step, measured with "
             f"`python -m harness study FILE --bench` (`data/{STEP_TIMES_NAME}`: median of {step_times.get('steps')} "
             f"steps after {step_times.get('warmup')} warm-up steps, {step_times.get('threads')} torch thread(s), on "
             f"{machine.get('device_name')}, {machine.get('cpu_count')} cores; 1-minute load average "
             f"{_load(before)} before and {_load(after)} after"
             + ("; **measured on a busy machine (--force)**" if step_times.get("forced_while_busy") else "")
             + "). T* is the shortest estimated total training time among the setting's runs, so every architecture "
             "has reached it; the loss at T* is interpolated linearly between validation points (val loss against "
             "step). ± is the 95 % t-interval over seeds; Δ pairs seed i with seed i (95 % t-interval of the "
             "per-seed differences; negative: lower loss than the reference at the same estimated time).", ""]
    views = {}
    for setting in settings:
        times = measured.get(setting.name)
        if not times:
            parts += [f"`{setting.name}`: no step times measured for this setting.", ""]
            continue
        missing = [arch for arch in ordered_archs(setting.runs) if arch not in times]
        if missing:
            parts += [f"`{setting.name}`: no step times for {', '.join(missing)}; left out of this view.", ""]
        view = setting_view(setting, times)
        if view.empty:
            continue
        views[setting.name] = view
        ref = reference if reference in set(view["arch"]) else ordered_archs(view)[0]
        parts += [f"### `{setting.name}`: T* = {view.attrs['t_star']:.1f} s", "", view_table(view, times, ref), ""]
    figure = wallclock_figure(views)
    paths = save_figure(figure, figures_dir, FIGURE_KEY) if figure is not None else []
    if paths:
        parts += markdown_figure("Validation loss against estimated training time (step × idle s/step): mean over "
                                 "seeds, band = min–max over seeds, T* dashed", figures_dir.name, FIGURE_KEY)
    return parts, paths


def _load(load: dict) -> str:
    value = load.get("loadavg_1m")
    return f"{value:.2f}" if value is not None else "unknown"
