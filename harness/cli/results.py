"""Print every run in results/ as a table: one row per run, metrics as columns.

    python -m harness results                          # markdown, the columns a person compares (≤ 160 wide)
    python -m harness results --all                    # markdown, every column
    python -m harness results --columns run_id,mfu,eval/harness_facts/acc
    python -m harness results --format csv > runs.csv  # every column
    python -m harness results --curves --format csv    # metrics.jsonl of every run, long format

Columns: the record's scalar fields (final_val_loss in nats/token, FLOPs at 2 per
multiply-add, ...), nested fields flattened with "/" (recipe/lr, data/spec), evaluation as
eval/<task>/<metric> with .../stderr, synthetic segments as segment/<name>/<key>, and the
model shape as model/<field>. A corrupt record is skipped with a warning naming it.

The markdown default: run_id, arch, variant, seed, status, tokens, final_val_loss, val_bpb or
excess_loss, and as many lm-eval scores as fit in 160 characters, each "value (n=N)" with N the
documents scored (a line on stderr names the scores left out). mfu is a fraction of peak in
records, CSV and JSON, and printed as "mfu %" (a percentage of peak) in the markdown table.
"""

from __future__ import annotations

import argparse
import sys
import warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown",
                        help="markdown (default; main columns), csv or json (every column)")
    parser.add_argument("--columns", help="comma-separated columns to print (any format)")
    parser.add_argument("--all", action="store_true", help="every column in the markdown table (csv and json always)")
    parser.add_argument("--status", help="only runs with these statuses, e.g. ok or ok,failed (default: all)")
    parser.add_argument("--run", action="append", metavar="RUN_ID", help="only this run (repeatable)")
    parser.add_argument("--curves", action="store_true", help="print the training curves (metrics.jsonl) in long format")


def main(args: argparse.Namespace) -> int:
    from harness.paths import results_dir
    from harness.reporting.results import RecordSkipped, load_curves, load_results
    from harness.reporting.results_table import results_table

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
    full = frame
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown and not frame.empty:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}; `--format csv` shows every column name.")
        frame = frame[[c for c in wanted if c in frame.columns]]
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=2) + "\n")
    elif not frame.empty:
        chosen = list(frame.columns) if args.columns else None
        table = results_table(full, columns=chosen, all_columns=args.all or args.curves)
        print(table.markdown)
        if table.left_out:
            print(f"({len(table.left_out)} more score column(s) do not fit in 160 characters: "
                  f"{', '.join(table.left_out)}; --columns picks columns, --all shows every one)", file=sys.stderr)
    return 0
