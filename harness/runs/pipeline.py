"""Train one run, then evaluate it: the one path from a ``RunSpec`` to a finished, evaluated record.

    from harness.runs.pipeline import EvalOptions, run
    outcome = run(spec, EvalOptions(tasks=("harness_probes",), limit=100))
    outcome.status, outcome.run_dir, outcome.evaluation

``run`` holds the run directory's lock over both steps (``harness.runs.lock.claim_run``, the one
way a run directory is taken; the engine and ``evaluate_run`` re-enter it), trains with
``harness.training.trainer.train`` (a finished run with the same id is reused unless ``force``;
an interrupted one continues from its checkpoint) and
then, on rank 0 only, evaluates a finished (``ok``) run with lm-eval, merging the metrics into
its ``record.json``. ``harness run``, ``harness compare`` (through ``harness.sweeps.compare``) and
``harness check`` all go through it.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from harness.runs.spec import RunSpec
from harness.runs.validation import positive_int

# What ``run`` does when evaluation raises: re-raise it, or record it in the outcome and
# keep the trained run (a sweep carries on with its next run).
EvalErrors = Literal["raise", "record"]
RECORDED_EVAL_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


@dataclass(frozen=True)
class EvalOptions:
    """Which lm-eval tasks run after training, and how.

    ``tasks``: task names (None: the default for the data's kind, ``harness.evaluation.default_tasks``);
    ``limit``: at most this many documents per task (None: all); ``task_data``: a folder with
    local copies of standard task data (offline); ``enabled``: False skips evaluation;
    ``redo_done``: evaluate explicitly named tasks again even when the record already holds
    them (``harness run`` does, so a reused run can be re-evaluated; a sweep skips them);
    ``quiet``: hold lm-eval's progress bars and notices back, printing them only if evaluation fails;
    ``verbose``: show lm-eval's progress bars and warnings (None: only on a terminal, ``harness.progress``).
    """

    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    task_data: str | None = None
    enabled: bool = True
    redo_done: bool = False
    quiet: bool = False
    verbose: bool | None = None

    def __post_init__(self) -> None:
        if self.tasks is not None:
            tasks = tuple(task.strip() for task in self.tasks if task.strip())
            if not tasks:
                raise ValueError("--tasks is empty; give comma-separated task names, e.g. lambada_openai,arc_easy.")
            object.__setattr__(self, "tasks", tasks)
        if self.limit is not None:  # checked before training, not after it
            positive_int("--eval-limit", self.limit)

    def wanted(self, record: dict[str, Any]) -> bool:
        """Whether a run with this record should be evaluated now (see the class docstring)."""
        if not self.enabled or record.get("status") != "ok":
            return False
        done = record.get("evaluation") or {}
        if not done:
            return True
        if self.tasks is None:
            return False
        return self.redo_done or any(task not in done for task in self.tasks)


@dataclass
class RunOutcome:
    """What ``run`` did: the run directory, its record as training left it, and the evaluation.

    ``record`` is the training record; the evaluation is merged into ``record.json`` on disk
    (``harness.runs.records.load_record`` reads both). ``evaluation``: {task: {metric: entry}} from
    this call, None when nothing was evaluated; ``evaluation_error``: why evaluation failed
    (only with ``eval_errors="record"``). Times in seconds.
    """

    run_dir: Path
    record: dict[str, Any]
    reused: bool
    train_s: float
    evaluation: dict[str, Any] | None = None
    evaluation_error: str | None = None
    eval_s: float = 0.0

    @property
    def status(self) -> str:
        """The training record's status: ``ok``, ``interrupted`` or ``failed``."""
        return str(self.record.get("status"))

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def run(
    spec: RunSpec,
    eval_options: EvalOptions = EvalOptions(),
    results_dir: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
    eval_errors: EvalErrors = "raise",
) -> RunOutcome:
    """Train ``spec`` into ``results_dir/<run_id>`` (default ``harness.paths.results_dir()``), then evaluate it.

    ``resume``, ``force``, ``progress``: as for ``harness.training.trainer.train``. ``wait``: wait for
    another process holding the run's lock instead of raising ``RunLocked`` (``on_wait``
    gets the note; default: printed to stderr). Raises ``TrainingFailed`` after a failed
    run (its record says why).
    """
    from harness.paths import results_dir as default_results_dir
    from harness.runs.lock import claim_run
    from harness.training.trainer import train

    root = Path(results_dir) if results_dir is not None else default_results_dir()
    on_wait = on_wait or (lambda note: print(note, file=sys.stderr))
    with claim_run(root / spec.run_id(), purpose="run", wait=wait, on_wait=on_wait):
        started = time.perf_counter()
        result = train(spec, root, resume=resume, force=force, progress=progress)
        outcome = RunOutcome(result.run_dir, result.record, result.reused, train_s=time.perf_counter() - started)
        if _evaluates_here() and eval_options.wanted(result.record):
            _evaluate(outcome, eval_options, eval_errors)
    return outcome


def _evaluates_here() -> bool:
    """Under torchrun only rank 0 evaluates (the other ranks have finished with the run)."""
    from harness.training.distributed import is_main_process

    return is_main_process()


def _evaluate(outcome: RunOutcome, options: EvalOptions, eval_errors: EvalErrors) -> None:
    """Evaluate ``outcome``'s run with ``options`` and fill in its evaluation fields."""
    from harness.evaluation import default_tasks, evaluate_run

    tasks = list(options.tasks) if options.tasks is not None else default_tasks(outcome.record["data"]["kind"])
    started = time.perf_counter()
    captured = io.StringIO()  # with ``quiet``: lm-eval's progress bars and notices, shown only on failure
    try:
        with contextlib.redirect_stderr(captured) if options.quiet else contextlib.nullcontext():
            outcome.evaluation = evaluate_run(outcome.run_dir, tasks=tasks, limit=options.limit,
                                              task_data=options.task_data, verbose=options.verbose)
    except RECORDED_EVAL_ERRORS as error:
        sys.stderr.write(captured.getvalue())
        if eval_errors == "raise":
            raise
        outcome.evaluation_error = str(error)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    finally:
        outcome.eval_s = time.perf_counter() - started
