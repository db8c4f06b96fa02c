"""The report's adaptation section: quality after fine-tuning vs trainable parameters and FLOPs.

Reads the fine-tuning records listed under ``finetune`` in a compare report's ``runs.json``
(``harness.sweeps.adaptation``) and writes, per architecture and method (full, LoRA, top:N): trainable
parameters (and their share), fine-tuning FLOPs used and per token, validation loss on the
downstream data before and after (mean ± 95 % CI over seeds, ``harness.reporting.stats.t_interval``),
the per-seed improvement, and the task metric after (exact-match accuracy for prompt/completion
tasks, bits per byte for text, excess loss over the entropy floor for synthetic data), BLEU / chrF /
ROUGE before and after when the runs were evaluated on harness_translate / harness_summarize
(``harness.reporting.generation_quality``); plus
``adaptation.csv`` and a figure of loss after adaptation against trainable parameters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.reporting.formatting import fmt_count, fmt_interval, fmt_sci, markdown_table
from harness.reporting.generation_quality import generation_columns, generation_scores
from harness.io import write_text_atomic
from harness.training.lora import FLOP_CONVENTION
from harness.training.methods.top import FLOP_CONVENTION as TOP_CONVENTION
from harness.runs.records import load_record
from harness.reporting.stats import t_interval

FIGURE_NAME = "adaptation"
MARKERS = {"full": "o", "lora": "s"}  # top:N: triangles
METRIC_AFTER = (("val_accuracy_after", "accuracy after"), ("val_bpb_after", "bits/byte after"),
                ("excess_loss_after", "excess loss after"))


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    return fmt_interval(t_interval(values), digits, one_seed=" (1 seed)")


def adaptation_frame(run_ids: Sequence[str], results_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per finished fine-tuning run; notes for the runs left out."""
    rows, notes = [], []
    for run_id in run_ids:
        try:
            record = load_record(results_dir / run_id)
        except (OSError, ValueError) as error:
            notes.append(f"Fine-tuning run `{run_id}` has no readable record ({error}).")
            continue
        if record.get("status") != "ok":
            notes.append(f"Fine-tuning run `{run_id}` is {record.get('status')}; left out.")
            continue
        rows.append({
            "run_id": run_id, "arch": record.get("arch"), "method": record["finetune"]["method"],
            "rank": record["finetune"].get("rank"), "seed": record.get("seed"), "parent_run": record.get("parent_run"),
            "trainable_params": record.get("trainable_params"), "total_params": record.get("total_params"),
            "fraction_trainable": record.get("fraction_trainable"), "flops_used": record.get("flops_used"),
            "budget_flops": record.get("budget_flops"), "train_flops_per_token": record.get("train_flops_per_token"),
            "tokens": record.get("tokens"), "steps": record.get("steps"),
            "val_loss_before": record.get("val_loss_before"), "val_loss_after": record.get("val_loss_after"),
            **{key: record.get(key) for key, _ in METRIC_AFTER if key in record},
            **generation_scores(record, results_dir),
        })
    return pd.DataFrame(rows), notes


def _method_order(frame: pd.DataFrame) -> list[str]:
    """full, lora, then top:N by N, then anything else by name."""
    present = set(frame["method"])
    tops = sorted((m for m in present if m.startswith("top:")), key=lambda m: int(m.split(":")[1]))
    return [m for m in ("full", "lora") if m in present] + tops + sorted(present - {"full", "lora", *tops})


def _table(frame: pd.DataFrame, archs: Sequence[str]) -> str:
    metrics = [(key, label) for key, label in METRIC_AFTER if key in frame.columns] + generation_columns(frame)
    headers = ["arch", "method", "trainable params (share)", "FLOPs used", "FLOPs/token (train)", "seeds",
               "val loss before", "val loss after", "improvement"] + [label for _, label in metrics]
    rows = []
    order = [a for a in archs if a in set(frame["arch"])] + sorted(set(frame["arch"]) - set(archs))
    for arch in order:
        for method in _method_order(frame):
            group = frame[(frame["arch"] == arch) & (frame["method"] == method)].sort_values("seed")
            if group.empty:
                continue
            share = group["fraction_trainable"].mean()
            rows.append([arch, method + (f" r={int(group['rank'].iloc[0])}" if method == "lora" else ""),
                         f"{fmt_count(group['trainable_params'].iloc[0])} ({100 * share:.2f} %)",
                         fmt_sci(group["flops_used"].mean()), fmt_sci(group["train_flops_per_token"].mean()),
                         len(group), _fmt(group["val_loss_before"]), _fmt(group["val_loss_after"]),
                         _fmt(group["val_loss_before"] - group["val_loss_after"])]
                        + [_fmt(group[key]) for key, _ in metrics])
    return markdown_table(headers, rows, ["l", "l"] + ["r"] * (len(headers) - 2))


def _figure(frame: pd.DataFrame, archs: Sequence[str]):
    import matplotlib.pyplot as plt

    from harness.reporting.figures import arch_color

    fig, ax = plt.subplots(figsize=(6, 4))
    for (arch, method), group in frame.groupby(["arch", "method"]):
        interval = t_interval(group["val_loss_after"])
        half = 0 if math.isnan(interval.half_width) else interval.half_width
        ax.errorbar(group["trainable_params"].mean(), interval.mean, yerr=half, fmt=MARKERS.get(method, "^"),
                    color=arch_color(arch, archs), capsize=3, label=f"{arch} {method}")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("validation loss after adaptation (nats/token)")
    ax.legend(fontsize="small")
    return fig


def adaptation_section(meta: dict | None, results_dir: Path, out_dir: Path, archs: Sequence[str]) -> str | None:
    """The section's markdown (None when the report has no adaptation stage); writes its CSV and figure."""
    stage: dict[str, Any] = (meta or {}).get("finetune") or {}
    if not stage.get("run_ids"):
        return None
    from harness.reporting.figures import save_figure

    frame, notes = adaptation_frame(stage["run_ids"], Path(results_dir))
    if frame.empty:
        return "No fine-tuning run has finished yet.\n\n" + "\n".join(f"- {note}" for note in notes)
    write_text_atomic(Path(out_dir) / "adaptation.csv", frame.to_csv(index=False))
    save_figure(_figure(frame, archs), Path(out_dir) / "figures", FIGURE_NAME)
    budget = frame["budget_flops"].iloc[0]
    lines = [
        f"Each pre-trained run above was fine-tuned on `{stage['data']}` with each method at the same budget of "
        f"{fmt_sci(budget)} fine-tuning FLOPs (seeds as in pre-training; each row: mean ± 95 % CI over seeds, "
        f"t-distribution). Validation loss is in nats per token of the downstream validation data (for "
        f"prompt/completion data, per completion token); improvement = before − after, per seed.",
        "",
        _table(frame, archs),
        "",
        f"- **FLOP convention**: {FLOP_CONVENTION}. At one budget LoRA's cheaper steps buy more tokens.",
        "- **LoRA** (peft): adapters on attention qkv/proj and the MLP fc/proj; for MoE the expert weight stacks "
        "(rank r per expert, peft `target_parameters`); embeddings, the tied head, LayerNorms, biases and the MoE "
        "router stay frozen. Trainable share = adapter parameters / (all parameters + adapters).",
        *([f"- **top:N**: only the top N blocks and the final LayerNorm train; embeddings and the tied head stay "
           f"frozen. {TOP_CONVENTION}."] if any(m.startswith("top:") for m in set(frame["method"])) else []),
        "",
        f"![Loss after adaptation vs trainable parameters](figures/{FIGURE_NAME}.png)",
        "",
        "Data: `adaptation.csv` (one row per fine-tuning run).",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)
