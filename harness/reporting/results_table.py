"""The `results` command's markdown table: the columns a person compares, at most 160 characters wide.

    table = results_table(frame)                        # default columns, scores with n, ≤ 160 wide
    table = results_table(frame, columns=[...])         # the named frame columns
    table = results_table(frame, all_columns=True)      # every column
    table.markdown, table.left_out                      # the text, and the score columns that did not fit

Default columns: run_id, arch, variant (size plus overrides), seed, status, tokens, final_val_loss
(nats/token) and val_bpb (bits/byte, text) or excess_loss (nats/token over the entropy floor,
synthetic), then as many lm-eval scores as fit in ``MAX_WIDTH`` characters, each cell
``value (n=N)`` with N the documents scored. ``mfu`` (a fraction of peak in records, CSV and
JSON) is shown as ``mfu %`` (a percentage of peak), like every other table a person reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from harness.reporting.formatting import markdown_table
from harness.reporting.results import eval_columns

MAX_WIDTH = 160
DEFAULT_COLUMNS = ("run_id", "arch", "variant", "seed", "status", "tokens", "final_val_loss", "val_bpb", "excess_loss")
PERCENT_COLUMNS = {"mfu": "mfu %"}


@dataclass
class ResultsTable:
    markdown: str
    left_out: list[str] = field(default_factory=list)  # score columns that did not fit in MAX_WIDTH


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _score_cell(value: Any, n: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return shown
    return f"{shown} (n={int(n)})"


def _columns_of(frame: pd.DataFrame, names: Sequence[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and alignment of ``names``: scores with their n, ``mfu`` as a percentage."""
    scores = {column for column, _, _ in eval_columns(frame)}
    headers, cells, align = [], [], []
    for name in names:
        values = frame[name].tolist()
        if name in scores:
            counts = frame[f"{name}/n"].tolist() if f"{name}/n" in frame.columns else [None] * len(values)
            column = [_score_cell(v, n) for v, n in zip(values, counts)]
        elif name in PERCENT_COLUMNS:
            column = [_cell(100 * v if isinstance(v, (int, float)) else v) for v in values]
        else:
            column = [_cell(v) for v in values]
        headers.append(PERCENT_COLUMNS.get(name, name))
        cells.append(column)
        numeric = pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name])
        align.append("r" if numeric else "l")
    rows = [list(row) for row in zip(*cells)] if cells else []
    return headers, rows, align


def _render(frame: pd.DataFrame, names: Sequence[str]) -> str:
    headers, rows, align = _columns_of(frame, names)
    return markdown_table(headers, rows, align)


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def results_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, all_columns: bool = False) -> ResultsTable:
    """The markdown table (see the module docstring); ``frame`` is ``harness.reporting.results.load_results()``."""
    if columns is not None:
        return ResultsTable(_render(frame, list(columns)))
    if all_columns:
        return ResultsTable(_render(frame, list(frame.columns)))
    names = [c for c in DEFAULT_COLUMNS if c in frame.columns and frame[c].notna().any()]
    scores = [column for column, _, _ in eval_columns(frame)]
    text, left_out = _render(frame, names), []
    for score in scores:
        wider = _render(frame, names + [score])
        if _width(wider) <= MAX_WIDTH and not left_out:
            names.append(score)
            text = wider
        else:
            left_out.append(score)
    return ResultsTable(text, left_out)
