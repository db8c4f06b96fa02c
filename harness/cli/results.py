"""Print every run in results/ as a table: one row per run, metrics as columns.

    python -m harness results                          # markdown, main columns
    python -m harness results --format csv > runs.csv  # every column
    python -m harness results --curves --format csv    # metrics.jsonl of every run, long format

Columns: the record's scalar fields (final_val_loss in nats/token, FLOPs at 2 per
multiply-add, ...), nested fields flattened with "/" (recipe/lr, data/spec), evaluation as
eval/<task>/<metric> with .../stderr, synthetic segments as segment/<name>/<key>, and the
model shape as model/<field>. A corrupt record is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

MARKDOWN_COLUMNS = (
    "run_id", "status", "arch", "variant", "seed", "budget_flops", "flops_used", "tokens", "params", "active_params",
    "final_val_loss", "val_bpb", "excess_loss", "tokens_per_s", "mfu", "wall_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown",
                        help="markdown (default; main columns), csv or json (every column)")
    parser.add_argument("--columns", help="comma-separated columns to print (any format)")
    parser.add_argument("--status", help="only runs with these statuses, e.g. ok or ok,failed (default: all)")
    parser.add_argument("--run", action="append", metavar="RUN_ID", help="only this run (repeatable)")
    parser.add_argument("--curves", action="store_true", help="print the training curves (metrics.jsonl) in long format")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.paths import results_dir
    from harness.reporting.formatting import markdown_table
    from harness.reporting.results import RecordSkipped, eval_columns, load_curves, load_results

    statuses = [s.strip() for s in args.status.split(",")] if args.status else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordSkipped)
        frame = load_results(run_ids=args.run, statuses=statuses)
        if args.curves:
            frame = load_curves(frame)
    for warning in caught:
        if issubclass(warning.category, RecordSkipped):
            print(f"warning: {warning.message}", file=sys.stderr)
    if frame.empty:
        print(f"no runs in {results_dir()}; train some with `python -m harness run` or `compare`.", file=sys.stderr)
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown and not frame.empty:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}; `--format csv` shows every column name.")
        frame = frame[[c for c in wanted if c in frame.columns]]
    elif args.format == "markdown" and not args.curves and not frame.empty:
        columns = [c for c in MARKDOWN_COLUMNS if c in frame.columns] + [c for c, _, _ in eval_columns(frame)]
        frame = frame[columns]
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    elif not frame.empty:
        rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
        align = ["r" if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) else "l"
                 for c in frame.columns]
        print(markdown_table(list(frame.columns), rows, align))
    return 0
