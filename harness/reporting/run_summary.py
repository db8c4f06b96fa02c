"""What `run` and `eval` print when they finish: a short block a person reads at a glance.

    run_summary(record, run_dir)   → the block after `harness run`: status, training, loss,
                                     quality (excess or bits per byte) next to the unigram
                                     baseline labelled as such, the evaluation table, the record
    evaluation_lines(evaluation)   → task / metric / value ± stderr / n (documents scored), one line each

Units: losses in nats/token, bits per byte per UTF-8 byte of the validation text, FLOPs at 2
per multiply-add, MFU as a percentage of the measured peak. A value the record lacks is left out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

LABEL_WIDTH = 11


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def evaluation_lines(evaluation: dict[str, dict[str, dict]]) -> list[str]:
    """One line per (task, metric): value ± lm-eval's stderr and n, the documents scored."""
    rows = []
    for task, metrics in evaluation.items():
        for metric, entry in (metrics or {}).items():
            value = entry.get("value") if isinstance(entry, dict) else entry
            stderr = entry.get("stderr") if isinstance(entry, dict) else None
            n = entry.get("n") if isinstance(entry, dict) else None
            shown = f"{value:.4g}" if _finite(value) else "not computed"
            shown += f" ± {stderr:.2g}" if _finite(stderr) else ""
            rows.append((task, metric, shown, f"n = {n}" if n is not None else "n not recorded"))
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{t:<{widths[0]}}  {m:<{widths[1]}}  {v:>{widths[2]}}  {n}" for t, m, v, n in rows]


def _line(label: str, text: str) -> str:
    return f"  {label:<{LABEL_WIDTH}} {text}"


def _training(record: dict[str, Any]) -> str:
    parts = [f"{record.get('steps')} steps"]
    if _finite(record.get("tokens")):
        parts.append(f"{record['tokens']:.3g} tokens")
    if _finite(record.get("flops_used")) and _finite(record.get("budget_flops")):
        parts.append(f"{record['flops_used']:.3g} of {record['budget_flops']:.3g} training FLOPs (2 per multiply-add)")
    if _finite(record.get("tokens_per_s")):
        parts.append(f"{record['tokens_per_s']:.0f} tokens/s")
    if _finite(record.get("mfu")):
        parts.append(f"MFU {100 * record['mfu']:.2f} % of peak")
    if _finite(record.get("wall_s")):
        parts.append(f"{record['wall_s']:.0f} s")
    return ", ".join(parts)


def _quality(record: dict[str, Any]) -> list[str]:
    """Excess loss (synthetic) or bits per byte (text), each beside the unigram baseline, labelled."""
    unigram_loss = record.get("unigram_val_loss")
    unigram_loss_text = f", {unigram_loss:.3f} nats/token loss" if _finite(unigram_loss) else ""
    if _finite(record.get("val_bpb")):
        baseline = record.get("unigram_val_bpb")
        text = f"{record['val_bpb']:.3f} bits/byte"
        if _finite(baseline):
            text += f" (unigram baseline: {baseline:.3f} bits/byte{unigram_loss_text})"
        return [_line("bits/byte", text)]
    if _finite(record.get("excess_loss")):
        floor = record.get("entropy_floor")
        text = f"{record['excess_loss']:.3f} nats/token over the entropy floor"
        text += f" (floor {floor:.3f} nats/token)" if _finite(floor) else ""
        baseline = record.get("unigram_excess_loss")
        if _finite(baseline):
            text += f"; unigram baseline: {baseline:.3f} excess{unigram_loss_text}"
        return [_line("excess", text)]
    return []


def run_summary(record: dict[str, Any], run_dir: str | Path, evaluation_error: str | None = None) -> str:
    """The block `harness run` ends with (see the module docstring)."""
    name = " ".join(str(record[k]) for k in ("arch", "size") if record.get(k))
    lines = [f"{name} (seed {record.get('seed')}): {record.get('status')}",
             _line("training", _training(record))]
    if _finite(record.get("final_val_loss")):
        lines.append(_line("loss", f"{record['final_val_loss']:.3f} nats/token (validation)"))
    lines += _quality(record)
    table = evaluation_lines(record.get("evaluation") or {})
    if table:
        lines.append(_line("evaluation", table[0]))
        lines += [_line("", row) for row in table[1:]]
    elif evaluation_error:
        lines.append(_line("evaluation", f"failed: {evaluation_error}"))
    else:
        lines.append(_line("evaluation", f"not evaluated (`python -m harness eval --run {run_dir}` evaluates it)"))
    lines.append(_line("record", str(Path(run_dir) / "record.json")))
    return "\n".join(lines)
