"""The report's serving-cost section: what each architecture costs to serve, beside its quality.

Reads ``serving`` from the run records (written by ``harness bench --inference --run
results/<id> --record``, keyed ``b<B>``): per architecture, decode tokens/s at batch 1 and at
the largest batch measured, prefill tokens/s at batch 1, KV-cache bytes per token of one row
at the full context (measured from the cache's buffers), and the final validation loss at
matched training compute (mean ± 95 % CI over seeds). Serving figures are the median over the
architecture's runs (they share a shape, so seeds differ only in weights and noise). Writes
``serving.csv`` and a figure of quality against decode cost (ms per token at batch 1), one
point per architecture with its seed interval. The section is left out when no run has them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.io import write_text_atomic
from harness.reporting.formatting import fmt_interval, markdown_table
from harness.reporting.stats import t_interval

FIGURE_NAME = "serving_cost"


def serving_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run that has serving figures: arch, seed, quality and the figures per batch size."""
    rows = []
    for record in records:
        serving = record.get("serving") or {}
        if not serving:
            continue
        batches = sorted(int(key[1:]) for key in serving if key.startswith("b") and key[1:].isdigit())
        large = batches[-1]
        one = serving.get("b1", {})
        rows.append({
            "run_id": record.get("run_id"), "arch": record.get("arch"), "seed": record.get("seed"),
            "final_val_loss": record.get("final_val_loss"),
            "decode_tokens_per_s_b1": one.get("decode_tokens_per_s"),
            "prefill_tokens_per_s_b1": one.get("prefill_tokens_per_s"),
            "large_batch": large, "decode_tokens_per_s_large": serving[f"b{large}"].get("decode_tokens_per_s"),
            "kv_bytes_per_token_at_context": serving[f"b{large}"].get("kv_bytes_per_token_at_context"),
            "device": serving[f"b{large}"].get("device"), "dtype": serving[f"b{large}"].get("dtype"),
        })
    return pd.DataFrame(rows)


def _median(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else math.nan


def _rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def _table(frame: pd.DataFrame, archs: Sequence[str]) -> str:
    large = int(frame["large_batch"].max())
    headers = ["arch", "runs", "val loss (nats/token)", "decode tokens/s, batch 1", f"decode tokens/s, batch {large}",
               "prefill tokens/s, batch 1", "KV bytes/token at the context"]
    rows = []
    for arch in [a for a in archs if a in set(frame["arch"])]:
        group = frame[frame["arch"] == arch]
        kv = _median(group["kv_bytes_per_token_at_context"])
        rows.append([arch, len(group), fmt_interval(t_interval(group["final_val_loss"].dropna()), 4, one_seed=" (1 seed)"),
                     _rate(_median(group["decode_tokens_per_s_b1"])), _rate(_median(group["decode_tokens_per_s_large"])),
                     _rate(_median(group["prefill_tokens_per_s_b1"])), _rate(kv)])
    return markdown_table(headers, rows)


def _figure(frame: pd.DataFrame, archs: Sequence[str]):
    import matplotlib.pyplot as plt

    from harness.reporting.figures import arch_color

    fig, ax = plt.subplots(figsize=(6, 4))
    for arch in [a for a in archs if a in set(frame["arch"])]:
        group = frame[frame["arch"] == arch]
        rate = _median(group["decode_tokens_per_s_b1"])
        interval = t_interval(group["final_val_loss"].dropna())
        if math.isnan(rate) or not math.isfinite(interval.mean):
            continue
        half = interval.half_width if math.isfinite(interval.half_width) else 0.0
        ax.errorbar(1e3 / rate, interval.mean, yerr=half, fmt="o", capsize=3, color=arch_color(arch, archs), label=arch)
    ax.set_xlabel("decode cost, batch 1 (ms per token, median over runs)")
    ax.set_ylabel("validation loss (nats/token, mean ± 95 % CI)")
    ax.legend(fontsize="small")
    return fig


def serving_section(records: Sequence[dict[str, Any]], archs: Sequence[str], out_dir: Path, tag: str = "") -> str | None:
    """The section's markdown, or None when no run has serving figures; writes its CSV and figure
    (``serving[_<tag>].csv``, ``figures/serving_cost[_<tag>]``: a study has one per setting)."""
    frame = serving_frame(records)
    if frame.empty:
        return None
    from harness.reporting.figures import save_figure

    suffix = f"_{tag}" if tag else ""
    figure, csv = f"{FIGURE_NAME}{suffix}", f"serving{suffix}.csv"
    write_text_atomic(Path(out_dir) / csv, frame.to_csv(index=False))
    save_figure(_figure(frame, archs), Path(out_dir) / "figures", figure)
    devices = ", ".join(sorted({f"{d} {t}" for d, t in zip(frame["device"], frame["dtype"])}))
    missing = sorted(set(archs) - set(frame["arch"]))
    lines = [
        f"Measured by `harness bench --inference --run results/<id> --record` ({devices}): prefill and greedy "
        "decoding with the KV cache measured apart after warm-up; tokens/s are medians over an architecture's runs; "
        "KV bytes per token: the cache's key and value buffers for one row of the full context / the context "
        "(banded layers hold a ring of w positions). Quality: final validation loss at matched training compute.",
        "",
        _table(frame, archs),
        "",
        f"![Quality against decode cost](figures/{figure}.png)",
        "",
        f"Data: `{csv}` (one row per benchmarked run).",
    ]
    if missing:
        lines.append(f"- No serving figures for {', '.join(missing)} (not benchmarked with `--record`).")
    return "\n".join(lines)
