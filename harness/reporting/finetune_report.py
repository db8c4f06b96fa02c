"""The report of fine-tuning runs (``harness finetune``), alone or beside their parent runs.

A fine-tune is not a matched-compute comparison of pre-trained models, so it gets its own page:
per fine-tune the method (full or LoRA with its rank), the parent run, the trainable
parameters and their share, the fine-tuning FLOPs used against the budget under the record's
FLOP convention (LoRA's differs from 3 × forward), and each validation metric before → after on
the fine-tuning data; then the parent's and the fine-tune's lm-eval results side by side, each
with its n (documents scored); then Methods. Every number is read from the records (fields
``finetune``, ``parent_run``, ``trainable_params``, ``fraction_trainable``, ``flop_convention``,
``<metric>_before`` / ``<metric>_after``); a value a record lacks is said in words, never printed
as None.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.io import write_text_atomic
from harness.reporting.formatting import fmt_count, fmt_sci, markdown_notes, markdown_table
from harness.reporting.methods import code_line, hardware_line, software_line
from harness.sweeps.runs_file import write_runs_file

# <metric> of the record's <metric>_before / <metric>_after pairs, with its unit (others: by name, no unit)
BEFORE_AFTER_LABELS = {
    "val_loss": "validation loss (nats/token)",
    "val_bpb": "bits per byte",
    "val_accuracy": "accuracy (fraction correct)",
    "excess_loss": "excess loss over the entropy floor (nats/token)",
}
COUNT_METRICS = ("val_tokens", "val_bytes")  # sizes of the validation set, not quality
NOT_EVALUATED = "not evaluated"


def is_finetune(record: dict[str, Any]) -> bool:
    """A record written by ``harness finetune`` (it names its parent and method)."""
    return bool(record.get("parent_run")) and isinstance(record.get("finetune"), dict)


def before_after_metrics(record: dict[str, Any]) -> list[str]:
    """The metrics a fine-tune record holds before and after (``val_loss`` first), without the set sizes."""
    names = [key[: -len("_before")] for key in record if key.endswith("_before")]
    names = [name for name in names if f"{name}_after" in record and name not in COUNT_METRICS]
    return sorted(names, key=lambda name: (name not in BEFORE_AFTER_LABELS, list(BEFORE_AFTER_LABELS).index(name)
                                           if name in BEFORE_AFTER_LABELS else 0, name))


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "not recorded"


def method_label(record: dict[str, Any]) -> str:
    """``LoRA r = 2, α = 4`` or ``full (every parameter trained)``."""
    finetune = record.get("finetune") or {}
    if finetune.get("method") == "lora":
        rank, alpha = finetune.get("rank"), finetune.get("alpha")
        return "LoRA" + (f" r = {rank}" if rank is not None else "") + (f", α = {alpha:g}" if alpha is not None else "")
    return f"{finetune.get('method', 'unrecorded method')} (every parameter trained)"


def _trainable(record: dict[str, Any]) -> str:
    trainable, fraction = record.get("trainable_params"), record.get("fraction_trainable")
    if trainable is None:
        return "not recorded"
    share = f" ({100 * fraction:.2f} % of {fmt_count(record.get('total_params'))})" if fraction is not None else ""
    return fmt_count(trainable) + share


def _runs_table(finetunes: list[dict[str, Any]]) -> str:
    metrics = list(dict.fromkeys(m for r in finetunes for m in before_after_metrics(r)))
    headers = ["fine-tune", "method", "parent", "data", "trainable parameters", "fine-tuning FLOPs used / budget",
               "steps", "tokens"] + [f"{BEFORE_AFTER_LABELS.get(m, m)}: before → after" for m in metrics]
    rows = []
    for record in finetunes:
        rows.append([f"`{record['run_id']}`", method_label(record), f"`{record['parent_run']}`",
                     f"`{(record.get('finetune') or {}).get('data')}`", _trainable(record),
                     f"{fmt_sci(record.get('flops_used'))} / {fmt_sci(record.get('budget_flops'))}",
                     record.get("steps", "not recorded"), fmt_count(record.get("tokens"))]
                    + [f"{_number(record.get(f'{m}_before'))} → {_number(record.get(f'{m}_after'))}" for m in metrics])
    return markdown_table(headers, rows, ["l"] * 5 + ["r"] * (len(headers) - 5))


def _eval_cell(entry: dict[str, Any] | None) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)):
        return NOT_EVALUATED
    stderr = entry.get("stderr")
    n = entry.get("n")
    return (f"{entry['value']:.4g}" + (f" ± {stderr:.2g}" if isinstance(stderr, (int, float)) else "")
            + (f" (n = {n})" if n is not None else " (n not recorded)"))


def evaluation_section(finetunes: list[dict[str, Any]], parents: dict[str, dict[str, Any]]) -> str | None:
    """Each fine-tune's lm-eval results beside its parent's, per task and metric (None when neither has any)."""
    rows = []
    for record in finetunes:
        parent = parents.get(record["parent_run"]) or {}
        child_eval, parent_eval = record.get("evaluation") or {}, parent.get("evaluation") or {}
        pairs = sorted({(t, m) for ev in (child_eval, parent_eval) for t, metrics in ev.items() for m in metrics})
        for task, metric in pairs:
            parent_cell = (_eval_cell((parent_eval.get(task) or {}).get(metric)) if parent
                           else "parent not in this report")
            rows.append([f"`{record['run_id']}`", task, metric, parent_cell,
                         _eval_cell((child_eval.get(task) or {}).get(metric))])
    if not rows:
        return None
    table = markdown_table(["fine-tune", "task", "metric", "parent", "fine-tune"], rows, ["l", "l", "l", "r", "r"])
    return (table + "\n\nlm-eval metrics ± lm-eval's stderr; n = documents scored. Compare two cells only at equal n "
            "(`python -m harness eval --run results/<id> --tasks T` scores the missing side).")


def _flop_lines(finetunes: list[dict[str, Any]]) -> list[str]:
    lines = []
    for convention in dict.fromkeys(r.get("flop_convention") for r in finetunes if r.get("flop_convention")):
        lines.append(f"- **FLOP convention**: {convention}.")
    for record in finetunes:
        parts = {k: v for k, v in (record.get("train_flops_per_token_parts") or {}).items() if k != "total"}
        if parts:
            shown = ", ".join(f"{k.replace('_', ' ')} {fmt_sci(v)}" for k, v in parts.items())
            lines.append(f"- `{record['run_id']}`: {fmt_sci(record.get('train_flops_per_token'))} fine-tuning FLOPs "
                         f"per token ({shown}).")
    return lines


def _data_line(record: dict[str, Any]) -> str:
    data = record.get("data") or {}
    line = f"- **Data** of `{record['run_id']}`: `{data.get('spec')}`"
    if data.get("tokenizer"):
        line += f", tokenized with the parent's tokenizer ({data['tokenizer']}"
        line += f", vocabulary {data['vocab_size']})" if data.get("vocab_size") is not None else ")"
    if record.get("val_tokens_before") is not None:
        line += (f"; before and after are measured on the same {fmt_count(record['val_tokens_before'])} held-out "
                 "tokens of it")
    return line + "."


def _recipe_line(record: dict[str, Any]) -> str:
    recipe = record.get("recipe") or {}
    known = [(recipe.get("lr"), "peak learning rate {}"), (recipe.get("batch_tokens"), "{} tokens per step"),
             (recipe.get("seq_len"), "sequence length {}"), (recipe.get("warmup_fraction"), "warm-up over {} of the steps"),
             (recipe.get("weight_decay"), "weight decay {}"), (recipe.get("grad_clip"), "clipping at {}")]
    shown = ", ".join(template.format(value) for value, template in known if value is not None)
    return f"- **Recipe** of `{record['run_id']}`: AdamW" + (f", {shown}" if shown else "") + "."


def _methods(finetunes: list[dict[str, Any]], report_command: str) -> list[str]:
    lines = [_data_line(r) for r in finetunes] + [_recipe_line(r) for r in finetunes] + _flop_lines(finetunes)
    lines += [hardware_line(finetunes), software_line(finetunes), code_line(finetunes), "", "**Reproduce**", "",
              "```bash"]
    lines += [f"{r['command']}    # made {r['run_id']}" for r in finetunes if r.get("command")]
    return lines + [f"{report_command}    # regenerates this report from the records alone", "```"]


def finetune_page(name: str, finetunes: list[dict[str, Any]], parents: dict[str, dict[str, Any]],
                  notes: Sequence[str]) -> str:
    """The report's markdown."""
    methods = ", ".join(dict.fromkeys((r.get("finetune") or {}).get("method", "?") for r in finetunes))
    parent_ids = ", ".join(f"`{p}`" for p in dict.fromkeys(r["parent_run"] for r in finetunes))
    command = f"python -m harness report {shlex.quote(name)}"
    beside = " beside " + ", ".join(f"`{p}`" for p in parents) if parents else ""
    parts = [f"# {name}: {methods} fine-tuning of {parent_ids}", "",
             f"{len(finetunes)} fine-tuning run(s){beside}: each adapts its parent run to new data at a budget of "
             f"fine-tuning FLOPs (not a matched-compute comparison of pre-trained models). Every number below is read "
             f"from the run records; `{command}` regenerates this page.", ""]
    parts += markdown_notes(list(notes))
    parts += ["## Fine-tuning: before → after", "", _runs_table(finetunes), "",
              "Before = the parent's weights, after = the fine-tuned weights, both on the fine-tuning data's held-out "
              "part; trainable share = trained parameters / all parameters (adapters included).", ""]
    evaluation = evaluation_section(finetunes, parents)
    if evaluation:
        parts += ["## Evaluation: parent beside fine-tune", "", evaluation, ""]
    parts += ["## Methods", "", *_methods(finetunes, command), ""]
    return "\n".join(parts)


def write_finetune_report(out_dir: Path, name: str, finetunes: list[dict[str, Any]], others: list[dict[str, Any]],
                          run_ids: list[str], notes: list[str], with_runs_file: bool = True) -> Path:
    """Write ``report.md``, ``runs.csv`` and (for run ids) ``runs.json``; ``others`` must be the fine-tunes' parents."""
    parent_ids = {r["parent_run"] for r in finetunes}
    strangers = [r["run_id"] for r in others if r["run_id"] not in parent_ids]
    if strangers:
        raise ValueError(f"run(s) {', '.join(strangers)} are neither fine-tunes nor their parents; report fine-tunes "
                         f"alone or beside their parent runs ({', '.join(sorted(parent_ids))}).")
    parents = {r["run_id"]: r for r in others}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"run_id": r["run_id"], "method": (r.get("finetune") or {}).get("method"), "parent_run": r["parent_run"],
             "trainable_params": r.get("trainable_params"), "fraction_trainable": r.get("fraction_trainable"),
             "flops_used": r.get("flops_used"), "budget_flops": r.get("budget_flops"),
             **{f"{m}_{when}": r.get(f"{m}_{when}") for m in before_after_metrics(r) for when in ("before", "after")}}
            for r in finetunes]
    write_text_atomic(out_dir / "runs.csv", pd.DataFrame(rows).to_csv(index=False))
    if with_runs_file:
        write_runs_file(out_dir, {"name": name, "mode": "runs", "run_ids": run_ids, "command": None})
    return write_text_atomic(out_dir / "report.md", finetune_page(name, finetunes, parents, notes))
