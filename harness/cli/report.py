"""Write a comparison report (markdown, tables, figures) from run records alone.

    python -m harness report compare-nano-2e11             # a name made by `harness compare`
    python -m harness report RUN_ID RUN_ID ... --name mine   # any finished runs
    python -m harness report gpt-family-cpu                  # a study made by `harness study`

Copies each run's record.json, config.json and (thinned) metrics.jsonl from results/<run_id>/
to reports/<name>/data/runs/<run_id>/ when results/ holds it, then reads only that data folder
and writes reports/<name>/report.md, figures/*.png and *.svg, runs.csv, summary.csv and
runs.json, the same bytes with or without results/.
Runs on different datasets or budgets are refused unless --allow-mixed; a corrupt
record is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import sys
import warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", metavar="NAME_OR_RUN_ID", help="a report name, or run ids")
    parser.add_argument("--name", help="report folder for run ids (default: runs-<hash of the ids>)")
    parser.add_argument("--reference", help="architecture the others are tested against (default gpt2)")
    parser.add_argument("--allow-mixed", action="store_true", help="report runs from different budgets or datasets anyway")


def main(args: argparse.Namespace) -> int:
    from harness.reporting.report import build_report
    from harness.reporting.results import RecordSkipped
    from harness.reporting.study_report import build_study_report, is_study

    if len(args.targets) == 1 and is_study(args.targets[0]):  # a study's report (harness study)
        study = build_study_report(args.targets[0])
        for note in study.notes:
            print(f"note: {note}", file=sys.stderr)
        print(study.path)
        return 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordSkipped)
        report = build_report(args.targets, name=args.name, allow_mixed=args.allow_mixed, reference=args.reference)
    for warning in caught:
        if not issubclass(warning.category, RecordSkipped):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.path)
    return 0
