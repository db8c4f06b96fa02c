"""A sweep from plan to report: the one workflow behind ``harness compare`` and ``harness study``.

``execute_sweep`` checks that results and the report can be written, runs every spec on the
chosen executor (``harness.sweeps.runner``), rewrites ``reports/<name>/runs.json`` atomically
whenever a run's state changes, runs the adaptation stage when asked, and writes the report
once every run has an outcome (an interrupted sweep writes none: the same command resumes it).
``planned_lines`` lists what a dry run would do. Job files and logs of worker processes and
submitit go to ``reports/<name>/.jobs/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.runs.compact import data_runs_dir
from harness.sweeps.executors import ExecutorOptions, InlineExecutor, LocalExecutor
from harness.sweeps.runner import SweepOutcome, run_sweep

JOBS_DIR = ".jobs"


@dataclass
class SweepRun:
    """What ``execute_sweep`` did: the outcome, the runs file written, and the report (None: interrupted)."""

    outcome: SweepOutcome
    runs_file: Path | None
    report: Any = None


def previous_states(report_dir: Path) -> dict[str, dict]:
    """The ``runs`` states of an earlier ``runs.json`` in ``report_dir`` ({} when there is none)."""
    from harness.sweeps.runs_file import read_runs_file

    try:
        runs = read_runs_file(report_dir).get("runs")
    except (OSError, ValueError):
        return {}
    return runs if isinstance(runs, dict) else {}


def planned_lines(plan, results_dir: Path) -> list[str]:
    """``reuse|resume|train <tab> run_id <tab> budget (or tokens)`` per planned run (a dry run)."""
    from harness.runs.run_dir import planned_action

    def amount(spec) -> str:
        return (f"{spec.train_tokens} tokens (token-matched)" if spec.train_tokens
                else f"budget {spec.budget_flops:.3g} FLOPs ({spec.attention_flops} attention)")

    return [f"{planned_action(results_dir / spec.run_id())}\t{spec.run_id()}\t{amount(spec)}" for spec in plan.specs]


def execute_sweep(plan, options, name: str, command: str, executor: ExecutorOptions = ExecutorOptions(), *,
                  retries: int = 1, adaptation=None, results_dir: Path | None = None, reports_dir: Path | None = None,
                  log: Callable[[str], None] | None = None) -> SweepRun:
    """Run ``plan`` (a ``SweepPlan`` of ``options``) as sweep ``name`` and write its runs file and report."""
    from harness.io import check_writable
    from harness.paths import reports_dir as default_reports, results_dir as default_results
    from harness.sweeps.compare import runs_payload
    from harness.sweeps.runs_file import write_runs_file

    from harness.training.distributed import is_main_process

    root = Path(results_dir or default_results())
    report_dir = Path(reports_dir or default_reports()) / name
    main = is_main_process()  # under torchrun (inline executor) only rank 0 writes the runs file and the report
    if main:
        check_writable(root)  # fail now, not after the sweep has trained, if the outputs cannot be written
        check_writable(report_dir)
    extra: dict[str, Any] = {"executor": executor.kind}

    def write(outcome: SweepOutcome) -> Path | None:
        if not main:
            return None
        keep_landed_runs(root, report_dir, outcome)
        return write_runs_file(report_dir, runs_payload(plan, outcome, command, name, extra))

    outcome = run_sweep(plan, options, make_executor(executor, report_dir / JOBS_DIR), root, retries=retries,
                        previous=previous_states(report_dir), on_update=write, log=log,
                        committed=data_runs_dir(report_dir))
    if adaptation is not None and not outcome.interrupted:
        from harness.sweeps.adaptation import run_adaptation

        extra["finetune"] = run_adaptation(outcome.run_ids, adaptation, root).to_dict()
        outcome.failed.update(extra["finetune"]["failed"])
    path = write(outcome)
    if outcome.interrupted or not main:
        return SweepRun(outcome, path)
    from harness.reporting.report import build_report

    return SweepRun(outcome, path, build_report([name], reference=plan.reference))


def keep_landed_runs(results_root: Path, report_dir: Path, outcome: SweepOutcome, tuning: bool = False) -> None:
    """Copy every run that has landed (trained, reused or failed) into the report's data folder
    (``harness.runs.compact``), so a study's data can be committed as its runs finish; a tuning run
    keeps only its validation lines (the report reads ``tuning.json``)."""
    from harness.runs.compact import MAX_CURVE_ROWS, TUNING_CURVE_ROWS, sync_runs

    landed = [*outcome.trained, *outcome.reused, *outcome.failed]
    if landed:
        sync_runs(results_root, report_dir, list(dict.fromkeys(landed)),
                  TUNING_CURVE_ROWS if tuning else MAX_CURVE_ROWS)


def make_executor(options: ExecutorOptions, work_dir: str | Path):
    """The executor ``options.kind`` names; ``work_dir`` holds its job files and logs."""
    if options.kind == "inline":
        return InlineExecutor(options)
    if options.kind == "local":
        return LocalExecutor(options, Path(work_dir))
    from harness.sweeps.submitit_executor import SubmititExecutor

    return SubmititExecutor(options, Path(work_dir))


def tally(outcome: SweepOutcome) -> str:
    """``3 trained, 1 reused, 4 evaluated, 0 failed``."""
    return (f"{len(outcome.trained)} trained, {len(outcome.reused)} reused, {len(outcome.evaluated)} evaluated, "
            f"{len(outcome.failed)} failed")

def execute_study(spec, executor: ExecutorOptions = ExecutorOptions(), *, retries: int = 1,
                  results_dir: Path | None = None, reports_dir: Path | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[bool, Any]:
    """Run a study: its learning-rate tuning first (``tune:``, ``harness.sweeps.tuning_run``; the chosen
    rates go to ``data/tuning.json``), then every comparison sweep in file order, planned with the
    chosen rates, then its report.

    The study's ``runs.json`` is rewritten as each run ends. Returns (finished, report): False and
    None when a run was interrupted (the same command resumes the study).
    """
    from harness.io import check_writable
    from harness.paths import reports_dir as default_reports, results_dir as default_results
    from harness.reporting.study_report import build_study_report
    from harness.sweeps.command import compare_command
    from harness.sweeps.compare import plan_sweep
    from harness.sweeps.state import states_payload
    from harness.sweeps.study import write_study_file

    root = Path(results_dir or default_results())
    report_dir = Path(reports_dir or default_reports()) / spec.name
    check_writable(root)
    check_writable(report_dir)
    previous = previous_states(report_dir)
    sweeps: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    tuning_ids: list[str] = []

    def run(plan, options, on_done: Callable[[SweepOutcome], None], tuning: bool = False) -> SweepOutcome:
        def write(outcome: SweepOutcome) -> None:
            on_done(outcome)
            runs.update(states_payload(outcome.states))
            keep_landed_runs(root, report_dir, outcome, tuning)
            write_study_file(report_dir, spec, sweeps, runs, tuning_ids)

        outcome = run_sweep(plan, options, make_executor(executor, report_dir / JOBS_DIR), root, retries=retries,
                            previous=previous, on_update=write, committed=data_runs_dir(report_dir))
        write(outcome)
        return outcome

    if spec.tune is not None:
        chosen = _tune_rates(spec, run, tuning_ids, root, report_dir, log)
        if chosen is None:
            return False, None
        from harness.sweeps.tuning_run import comparison_plans

        plans = comparison_plans(spec, chosen)
    else:
        plans = {sweep.name: plan_sweep(sweep.options) for sweep in spec.sweeps}
    for sweep in spec.sweeps:
        plan = plans[sweep.name]
        command = compare_command(sweep.options, f"{spec.name}-{sweep.name}")

        def note(outcome: SweepOutcome, sweep=sweep, command=command, plan=plan) -> None:
            sweeps[sweep.name] = {"role": sweep.role, "sweep": sweep.entry, "command": command,
                                  "run_ids": outcome.run_ids}
            if plan.specs and sweep.name in spec.rate_sources():  # the tuned rates the command line cannot carry
                sweeps[sweep.name]["lr_by_arch"] = {s.arch: s.recipe.lr for s in plan.specs}

        if log:
            log(f"study {spec.name}: sweep {sweep.name} ({len(plan.specs)} runs)")
        if run(plan, sweep.options, note).interrupted:
            return False, None
    return True, build_study_report(spec.name, results_dir=root, reports_dir=report_dir.parent)


def _tune_rates(spec, run, tuning_ids: list[str], root: Path, report_dir: Path,
                log: Callable[[str], None] | None) -> dict | None:
    """Run the tuning rounds through ``run`` and write ``data/tuning.json``; the chosen rates (None: interrupted)."""
    from harness.runs.compact import DATA_DIR
    from harness.sweeps.tuning_run import run_tuning, write_tuning

    def run_round(plan, options) -> SweepOutcome:
        if log:
            log(f"study {spec.name}: learning-rate tuning ({len(plan.specs)} runs)")
        return run(plan, options, lambda outcome: tuning_ids.extend(r for r in outcome.run_ids if r not in tuning_ids),
                   tuning=True)

    result = run_tuning(spec, run_round, root, data_runs_dir(report_dir))
    if result is None:
        return None
    write_tuning(report_dir / DATA_DIR, spec, result)
    return result.chosen
