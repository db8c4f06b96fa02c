"""Run a study — several matched-compute sweeps reported together — and write its report.

    python -m harness study studies/gpt-family-cpu.yaml            # train (or reuse) everything, then report
    python -m harness study studies/gpt-family-cpu.yaml --dry-run  # list the runs: to train or reused
    python -m harness study studies/gpt-family-cpu.yaml --executor local --jobs 2
    python -m harness study studies/gpt-family-cpu.yaml --executor slurm --slurm-partition gpu

With a `tune:` block the peak learning rate is first tuned per architecture on a grid (tuning
seeds disjoint from the comparison seeds; harness/sweeps/tuning.py); the choice goes to
reports/<name>/data/tuning.json and the comparison sweeps are planned with it, so --dry-run lists
the tuning runs and the comparison runs only once tuning.json exists.
A study file names the study, lists its sweeps, each typed data (archs, size, budget,
seeds, eval ...) with a role (synthetic, text, lr; see harness/sweeps/study.py and
harness/sweeps/entries.py), and its planned comparisons (`comparisons:`, see
harness/sweeps/plan.py). Before anything trains, the plan and its sha256 go to
reports/<name>/data/plan.json with a copy of the study file; a plan changed after runs have
data is refused unless --amend "reason" records the change as a deviation. Each run's compact
data (record, config, thinned curves) is copied to reports/<name>/data/runs/ as it lands. Runs
are reused by id, so running the same study again resumes it. The report goes to
reports/<name>/ (report.md with Findings from the planned tests, figures, CSVs);
`python -m harness report <name>` regenerates it from data/, with or without results/, and
`python -m harness sweep status <study file>` shows each run's state.

--bench trains nothing: on an idle machine it times each (sweep, arch) model's optimizer step as
the sweep trains it (--bench-steps timed after --bench-warmup, with the threads the executor
options give each run) and writes reports/<name>/data/step_times.json, which adds the report's
matched wall-clock view (harness.sweeps.step_times). A 1-minute load average above 0.5 per core
is refused unless --force.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.cli.compare import add_executor_arguments

    parser.add_argument("study", help="study file (YAML), e.g. studies/gpt-family-cpu.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list every planned run (train or reuse) and exit")
    parser.add_argument("--require-clean", action="store_true",
                        help="refuse to train from a checkout with uncommitted changes")
    parser.add_argument("--amend", metavar="REASON",
                        help="accept a plan changed after runs have data, recording REASON as a deviation")
    bench = parser.add_argument_group("step times (--bench: nothing trains)")
    bench.add_argument("--bench", action="store_true",
                       help="time every (sweep, arch) model's optimizer step on this idle machine and write "
                            "reports/<name>/data/step_times.json (the report's matched wall-clock view)")
    bench.add_argument("--bench-steps", type=int, help="timed steps per architecture (default: 20, about 10 s at mini)")
    bench.add_argument("--bench-warmup", type=int, help="untimed steps first (default: 3)")
    bench.add_argument("--force", action="store_true", help="--bench: measure even when the load average is high")
    add_executor_arguments(parser)


def _bench(args: argparse.Namespace, spec, plans: dict | None, executor) -> int:
    """``--bench``; before a tuned study's rates are chosen (``plans`` None) each sweep is timed as planned
    without them: the learning rate does not change a step's time."""
    from harness.paths import reports_dir
    from harness.sweeps.compare import plan_sweep
    from harness.sweeps.step_times import DEFAULT_STEPS, DEFAULT_WARMUP, BenchSettings, measure_step_times, threads_for

    plans = plans if plans is not None else {sweep.name: plan_sweep(sweep.options) for sweep in spec.sweeps}

    settings = BenchSettings(DEFAULT_STEPS if args.bench_steps is None else args.bench_steps,
                             DEFAULT_WARMUP if args.bench_warmup is None else args.bench_warmup,
                             threads_for(executor), args.force)
    path = measure_step_times(spec, plans, reports_dir() / spec.name, settings,  # a busy machine: MachineBusy
                              log=lambda message: print(message, file=sys.stderr, flush=True))
    print(path)
    return 0


def main(args: argparse.Namespace) -> int:
    from harness.cli.compare import executor_options_from_args, provenance_ok
    from harness.paths import reports_dir, results_dir
    from harness.sweeps.driver import execute_study
    from harness.sweeps.plan import check_settings, load_plan, preregister
    from harness.sweeps.study import load_study
    from harness.sweeps.tuning_run import study_plans

    spec = load_study(args.study)
    check_settings(load_plan(args.study), {s.name for s in spec.sweeps} | {s.role for s in spec.sweeps}, args.study)
    report_dir = reports_dir() / spec.name
    tuning, plans = study_plans(spec, report_dir / "data")  # every sweep checked before any trains
    executor = executor_options_from_args(args, spec.slurm, args.study)
    if args.bench:
        return _bench(args, spec, plans, executor)
    if args.dry_run:
        print("\n".join(dry_run_lines(tuning, plans)))
        return 0
    if not provenance_ok(args.require_clean):
        return 2
    planned = {name: [s.run_id() for s in plan.specs] for name, plan in (plans or {}).items()}
    run_ids = {sweep.name: [run.run_id for run in tuning if run.sweep == sweep.name] + planned.get(sweep.name, [])
               for sweep in spec.sweeps}
    status = preregister(args.study, report_dir, results_dir(), run_ids, args.amend,
                         {sweep.name: sweep.role for sweep in spec.sweeps})
    print(f"study {spec.name}: plan {status} ({report_dir / 'data' / 'plan.json'})", file=sys.stderr)
    finished, report = execute_study(spec, executor, retries=args.retries,
                                     log=lambda message: print(message, file=sys.stderr, flush=True))
    if not finished:
        print("interrupted: run the same command again to resume the study.", file=sys.stderr)
        return 130
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.path)
    return 0


def dry_run_lines(tuning, plans) -> list[str]:
    """``<sweep or tune:sweep> <tab> reuse|resume|train <tab> run_id <tab> budget`` per planned run."""
    from harness.paths import results_dir
    from harness.sweeps.driver import planned_lines
    from harness.sweeps.tuning_run import as_plan

    lines = [f"tune:{run.sweep}\tlr {run.lr:g}\t{line}"
             for run, line in zip(tuning, planned_lines(as_plan(tuning), results_dir()))] if tuning else []
    if plans is None:
        return lines + ["comparison runs: planned after the learning-rate tuning above (their rates depend on its "
                        "results; more tuning runs follow if a best rate is at the grid's edge)"]
    return lines + [f"{name}\t{line}" for name, plan in plans.items() for line in planned_lines(plan, results_dir())]
