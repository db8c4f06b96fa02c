"""Inspect a sweep: ``python -m harness sweep status <sweep name or study file>``.

One row per run: arch, size, seed, state (planned / queued / running / ok / failed /
interrupted), the executor and job id that ran it, elapsed training time (seconds), and
training FLOPs done of the budget (2 per multiply-add); then a summary line. The states come
from reports/<name>/runs.json (rewritten by `harness compare` / `harness study` as each run
ends) and the runs' records, so this works while the sweep runs, after it, or after its
process was killed.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser("status", help="one row per run: state, executor and job id, elapsed, FLOPs done")
    status.add_argument("target", help="a sweep's report name (reports/<name>/) or a study file (YAML)")


def main(args: argparse.Namespace) -> int:
    from harness.paths import reports_dir, results_dir
    from harness.sweeps.runs_file import RUNS_NAME, read_runs_file, validate_name
    from harness.sweeps.status import format_status, study_targets, sweep_status

    target = Path(args.target)
    if target.suffix in (".yaml", ".yml"):
        name, run_ids, entries = study_targets(target)
    else:
        name, run_ids, entries = validate_name(args.target), [], {}
    report_dir = reports_dir() / name
    if (report_dir / RUNS_NAME).exists():
        payload = read_runs_file(report_dir)
        entries = {**entries, **{k: {**entries.get(k, {}), **v} for k, v in (payload.get("runs") or {}).items()}}
        run_ids = run_ids or payload["run_ids"]  # a study file: the runs it plans now
    elif not run_ids:
        raise FileNotFoundError(f"{report_dir / RUNS_NAME} does not exist; give the name of a sweep started with "
                                f"`harness compare --name NAME` or a study file.")
    print(format_status(sweep_status(run_ids, entries, results_dir())))
    return 0
