"""Imported checkpoints as reference rows of a report.

An imported run (``harness import``; its record has ``imported``) was not trained here at
the report's budget, so it stays out of the matched-compute tables and statistics and gets
its own table: source, mapped class, parameters, context and its lm-eval metrics (a task
evaluated at k shots is its own column, ``<task>@<k>shot``). When a report holds only
imported runs, the page is that table alone.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.reporting.formatting import fmt_count, markdown_notes, markdown_table
from harness.io import write_text_atomic
from harness.sweeps.runs_file import write_runs_file

SECTION_TITLE = "Reference models (imported, not trained here)"


def is_imported(record: dict[str, Any]) -> bool:
    return bool(record.get("imported"))


def _metrics(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(task key, metric) pairs evaluated on any of the records, sorted."""
    pairs = {(task, metric) for r in records for task, metrics in (r.get("evaluation") or {}).items() for metric in metrics}
    return sorted(pairs)


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None or not math.isfinite(entry["value"]):
        return "—"
    stderr, n = entry.get("stderr"), entry.get("n")
    return (f"{entry['value']:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else "")
            + (f" (n = {n})" if n is not None else ""))


def reference_section(records: list[dict[str, Any]]) -> tuple[str, pd.DataFrame]:
    """Markdown table of the imported runs and its numbers (one row per run)."""
    metrics = _metrics(records)
    headers = ["run", "source", "mapped as", "arch", "params", "context"] + [f"{t} {m}" for t, m in metrics]
    rows, numbers = [], []
    for record in records:
        imported = record["imported"]
        evaluation = record.get("evaluation") or {}
        rows.append([record["run_id"], f"`{imported.get('source')}`", imported.get("mapped_as"), record.get("arch"),
                     fmt_count(record.get("params")), record.get("seq_len")]
                    + [_cell((evaluation.get(t) or {}).get(m)) for t, m in metrics])
        numbers.append({"run_id": record["run_id"], "source": imported.get("source"), "arch": record.get("arch"),
                        "params": record.get("params"),
                        **{f"eval/{t}/{m}": ((evaluation.get(t) or {}).get(m) or {}).get("value") for t, m in metrics}})
    text = markdown_table(headers, rows, align=["l"] * 4 + ["r"] * (len(headers) - 4)) + (
        "\n\nImported with `python -m harness import` (weights mapped exactly; the record keeps the source, the sha256 "
        "of the weights and the transformers config). They were not trained at this report's budget, so they are not in "
        "the matched-compute tables or tests; metrics are ± lm-eval's stderr with n = documents scored, `<task>@<k>shot` at k few-shot examples."
    )
    return text, pd.DataFrame(numbers)


def write_reference_report(out_dir: Path, name: str, records: list[dict[str, Any]], run_ids: list[str],
                           notes: list[str], with_runs_file: bool = True) -> tuple[Path, pd.DataFrame]:
    """A report of imported runs only: the reference table, ``summary.csv`` and (unless it exists) ``runs.json``."""
    text, numbers = reference_section(records)
    parts = [f"# {name}: reference models", "", f"{len(records)} imported run(s); no run trained here is in this report.", ""]
    parts += markdown_notes(notes)
    parts += [f"## {SECTION_TITLE}", "", text, ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "summary.csv", numbers.to_csv(index=False))
    if with_runs_file:
        write_runs_file(out_dir, {"name": name, "mode": "runs", "run_ids": run_ids, "command": None})
    return write_text_atomic(out_dir / "report.md", "\n".join(parts)), numbers
