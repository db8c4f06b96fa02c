"""The study report's "Learning rate, tuned per architecture" section and its figure.

Computed only from ``reports/<name>/data/tuning.json`` (``harness.sweeps.tuning_run``), so the
section and ``figures/lr_tuning.png|svg`` regenerate byte for byte without ``results/``. Losses are
final validation losses in nats/token; budgets are training FLOPs per run (2 per multiply-add).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.io import read_json
from harness.reporting.figures import STYLE, arch_color, plt
from harness.reporting.formatting import fmt_sci, markdown_table

TUNING_FILE = "tuning.json"
FIGURE_KEY = "lr_tuning"


def read_tuning_data(data_dir: str | Path) -> dict[str, Any] | None:
    """``data/tuning.json`` or None when the study tuned no rates."""
    path = Path(data_dir) / TUNING_FILE
    return read_json(path) if path.exists() else None


def _archs(data: dict[str, Any], sweep: str) -> list[str]:
    return list(dict.fromkeys(row["arch"] for row in data["runs"] if row["sweep"] == sweep))


def _extensions(data: dict[str, Any], sweep: str, arch: str) -> list[dict[str, Any]]:
    return [e for e in data.get("extensions") or [] if e["sweep"] == sweep and e["arch"] == arch]


def tuning_section(data: dict[str, Any]) -> list[str]:
    """Markdown lines: the rule, grid, seeds and budget in one paragraph, then setting × arch → chosen rate."""
    tune, seeds = data.get("tune") or {}, data.get("seeds") or []
    budgets = ", ".join(f"{fmt_sci(b)} ({name})" for name, b in (data.get("budget_flops") or {}).items())
    failed = sum(row["status"] != "ok" for row in data["runs"])
    paragraph = (f"Each architecture's peak learning rate was tuned before the comparison runs, per setting "
                 f"({', '.join(f'`{s}`' for s in data['chosen'])}), and the comparison runs of a setting (and of any "
                 f"sweep taking its rates with `lr_from`) use the chosen rate. Rule: {data['rule']}, at most "
                 f"{tune.get('max_extensions', 0)} time(s). Grid: {', '.join(f'{lr:g}' for lr in data['grid'])} "
                 f"(log-spaced, ratio {data['ratio']:.3g}). Tuning seeds {', '.join(map(str, seeds))} "
                 f"(disjoint from every comparison seed), {budgets} training FLOPs per tuning run (2 per "
                 f"multiply-add), compute matched, no evaluation; {len(data['runs'])} tuning runs"
                 + (f", {failed} failed (left out of the means)." if failed else ", all finished."))
    rows = []
    for sweep, chosen in data["chosen"].items():
        for arch in _archs(data, sweep):
            extensions = _extensions(data, sweep, arch)
            edge = (data.get("at_edge_after_extensions") or {}).get(sweep, {}).get(arch)
            rows.append([sweep, arch, "none (every run failed)" if chosen.get(arch) is None else f"{chosen[arch]:g}",
                         ", ".join(f"{e['lr']:g} ({e['edge']})" for e in extensions) or "none",
                         "**at grid edge**" if edge else "inside the grid"])
    table = markdown_table(["setting", "arch", "chosen peak lr", "extensions (rate added, edge)", "position"],
                           rows, ["l", "l", "r", "l", "l"])
    edge_note = ("A chosen rate still **at the grid's edge** after the extensions may be short of the best rate; "
                 "its comparisons are made at the edge rate." if any(r[-1].startswith("**") for r in rows) else "")
    return [paragraph, "", table, ""] + ([edge_note, ""] if edge_note else [])


def lr_tuning_figure(data: dict[str, Any]):
    """Final validation loss vs learning rate (log x), one line per arch (mean over tuning seeds, each seed
    faint), the chosen rate marked, one panel per tuned setting; None without finished runs."""
    sweeps = list(data["chosen"])
    rows = [r for r in data["runs"] if r["status"] == "ok" and r["final_val_loss"] is not None
            and np.isfinite(r["final_val_loss"])]
    if not rows or not sweeps:
        return None
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sweeps), figsize=(5.5 * len(sweeps), 4), squeeze=False)
        for ax, sweep in zip(axes[0], sweeps):
            archs = _archs(data, sweep)
            for arch in archs:
                mine = [r for r in rows if r["sweep"] == sweep and r["arch"] == arch]
                color = arch_color(arch, archs)
                lrs = sorted({r["lr"] for r in mine})
                ax.scatter([r["lr"] for r in mine], [r["final_val_loss"] for r in mine], color=color, alpha=0.3, s=12)
                means = [float(np.mean([r["final_val_loss"] for r in mine if r["lr"] == lr])) for lr in lrs]
                ax.plot(lrs, means, marker="o", color=color, label=arch)
                chosen = data["chosen"][sweep].get(arch)
                if chosen is not None and chosen in lrs:
                    ax.plot([chosen], [means[lrs.index(chosen)]], marker="*", markersize=14, color=color,
                            markeredgecolor="black", linestyle="none")
            ax.set_xscale("log")
            rates = sorted({r["lr"] for r in rows if r["sweep"] == sweep})
            ax.set_xticks(rates, [f"{lr:g}" for lr in rates], rotation=30)  # the grid's rates, nothing between
            ax.minorticks_off()
            ax.set_xlabel("peak learning rate (log scale)")
            ax.set_ylabel("final validation loss (nats/token)")
            ax.set_title(f"{sweep}: tuning (★ chosen; faint: each seed)")
            ax.legend(fontsize=8)
        return fig
