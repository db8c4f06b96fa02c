"""Generated-text quality before and after fine-tuning, for the report's adaptation section.

When a fine-tuned run and its parent were both evaluated on ``harness_translate`` (BLEU, chrF:
sacrebleu, 0-100) or ``harness_summarize`` (ROUGE-1/2/L: rouge-score F-measure, 0-1), e.g.
``harness eval --run results/<id> --tasks harness_translate``, each metric becomes a
``<metric>_before`` (the parent's) and ``<metric>_after`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.runs.records import load_record

GENERATION_METRICS = (("harness_translate", "bleu", "BLEU"), ("harness_translate", "chrf", "chrF"),
                      ("harness_summarize", "rouge1", "ROUGE-1"), ("harness_summarize", "rouge2", "ROUGE-2"),
                      ("harness_summarize", "rougeL", "ROUGE-L"))


def _value(record: dict[str, Any] | None, task: str, metric: str) -> float | None:
    entry = ((record or {}).get("evaluation") or {}).get(task, {}).get(metric)
    return entry.get("value") if isinstance(entry, dict) else None


def generation_scores(record: dict[str, Any], results_dir: Path) -> dict[str, float]:
    """``{"bleu_before": ..., "bleu_after": ...}`` for the metrics the run has; the parent's are 'before'."""
    parent = None
    if record.get("parent_run"):
        try:
            parent = load_record(Path(results_dir) / record["parent_run"])
        except (OSError, ValueError):
            parent = None
    out = {}
    for task, metric, _ in GENERATION_METRICS:
        after = _value(record, task, metric)
        if after is not None:
            out[f"{metric}_after"] = after
            before = _value(parent, task, metric)
            out[f"{metric}_before"] = before if before is not None else float("nan")
    return out


def generation_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, label) pairs of the before/after metrics present in ``frame``."""
    columns = []
    for _, metric, label in GENERATION_METRICS:
        if f"{metric}_after" in frame.columns:
            columns += [(f"{metric}_before", f"{label} before"), (f"{metric}_after", f"{label} after")]
    return columns
