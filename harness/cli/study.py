"""Run a study — several matched-compute sweeps reported together — and write its report.

    python -m harness study studies/gpt-family-cpu.yaml            # train (or reuse) everything, then report
    python -m harness study studies/gpt-family-cpu.yaml --dry-run  # list the runs: to train or reused

A study file names the study, lists its sweeps (each a `harness compare` argument string with a
role: synthetic, text, lr; see harness/sweeps/study.py) and its planned comparisons
(`comparisons:`, see harness/sweeps/plan.py). Before anything trains, the plan and its sha256
go to reports/<name>/data/plan.json with a copy of the study file; a plan changed after runs
have data is refused unless --amend "reason" records the change as a deviation. Each run's
compact data (record, config, thinned curves) is copied to reports/<name>/data/runs/ as it
lands. Runs are reused by id, so running the same study again resumes it. The report goes to
reports/<name>/ (report.md with Findings from the planned tests, figures, CSVs);
`python -m harness report <name>` regenerates it from data/, with or without results/.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study file (YAML), e.g. studies/gpt-family-cpu.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list every planned run (train or reuse) and exit")
    parser.add_argument("--require-clean", action="store_true",
                        help="refuse to train from a checkout with uncommitted changes")
    parser.add_argument("--amend", metavar="REASON",
                        help="accept a plan changed after runs have data, recording REASON as a deviation")


def _sweep_args(sweep) -> argparse.Namespace:
    from harness.cli import compare as compare_cli

    parser = argparse.ArgumentParser(prog=f"sweep {sweep.name}", exit_on_error=False)
    compare_cli.add_arguments(parser)
    try:
        return parser.parse_args(shlex.split(sweep.args))
    except (argparse.ArgumentError, SystemExit) as error:
        raise ValueError(f"sweep {sweep.name!r} has arguments `harness compare` does not accept: {error}") from None


def preregister(study_file: str, report_dir, results_root, run_ids: list[str], amend: str | None) -> str:
    """Register (or check) the study's plan in ``report_dir/data`` before anything trains; the outcome."""
    from harness.runs.compact import copy_study_file, has_data, is_finished
    from harness.sweeps.plan import load_plan, register_plan

    plan = load_plan(study_file)
    data_exist = has_data(report_dir) or any(is_finished(results_root / run_id) for run_id in run_ids)
    status = register_plan(report_dir / "data", plan, data_exist=data_exist, amend=amend)
    if status != "unchanged" or not (report_dir / "data" / "study.yaml").exists():
        copy_study_file(study_file, report_dir)
    return status


def main(args: argparse.Namespace) -> int:
    from harness.cli.compare import canonical_command, provenance_ok, sweep_options_from_args
    from harness.sweeps.compare import plan_sweep, run_sweep
    from harness.io import check_writable
    from harness.paths import reports_dir, results_dir
    from harness.runs.run_dir import planned_action
    from harness.sweeps.plan import check_settings, load_plan
    from harness.sweeps.study import load_study, run_study, write_study_file
    from harness.reporting.study_report import build_study_report
    from harness.runs.compact import sync_runs

    spec = load_study(args.study)
    check_settings(load_plan(args.study), {s.name for s in spec.sweeps} | {s.role for s in spec.sweeps}, args.study)
    parsed = {sweep.name: _sweep_args(sweep) for sweep in spec.sweeps}
    options = {name: sweep_options_from_args(args_) for name, args_ in parsed.items()}
    plans = {name: plan_sweep(options[name]) for name in parsed}  # every sweep checked before any trains
    root = results_dir()
    if args.dry_run:
        for name, plan in plans.items():
            for run_spec in plan.specs:
                run_id = run_spec.run_id()
                state = planned_action(root / run_id)
                print(f"{name}\t{state}\t{run_id}")
        return 0
    if not provenance_ok(args.require_clean):
        return 2
    check_writable(root)  # fail now, not after every sweep has trained, if the outputs cannot be written
    report_dir = reports_dir() / spec.name
    check_writable(report_dir)
    run_ids = [run_spec.run_id() for plan in plans.values() for run_spec in plan.specs]
    status = preregister(args.study, report_dir, root, run_ids, args.amend)
    print(f"study {spec.name}: plan {status} ({report_dir / 'data' / 'plan.json'})", file=sys.stderr)

    def one_sweep(sweep):
        plan = plans[sweep.name]
        print(f"study {spec.name}: sweep {sweep.name} ({len(plan.specs)} runs)", file=sys.stderr)
        outcome = run_sweep(plan, options[sweep.name], root, on_run=lambda run_id: sync_runs(root, report_dir, [run_id]))
        if outcome.interrupted:
            raise KeyboardInterrupt
        return canonical_command(parsed[sweep.name], f"{spec.name}-{sweep.name}"), outcome.run_ids

    try:
        sweeps = run_study(spec, one_sweep)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume the study.", file=sys.stderr)
        return 130
    write_study_file(reports_dir() / spec.name, spec, sweeps)
    report = build_study_report(spec.name)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.path)
    return 0
