"""Evaluation: the lm-eval model over trained weights, the harness probes, and run evaluation.

    from harness.evaluation import HarnessLM, evaluate, evaluate_run, default_tasks

See ``lm.py`` (the lm-eval model, registered as ``harness``), ``tasks.py`` (task names →
lm-eval tasks, offline data), ``probes.py`` (the synthetic probes) and ``run.py``; a run's
model is read by ``harness.runs.run_dir.load_run_model``.
Importing this package imports lm-eval; the CLI imports it only when ``eval`` runs.
"""

from harness.evaluation.lm import HarnessLM
from harness.evaluation.probes import PROBE_TASKS, probe_task_names
from harness.evaluation.run import (
    default_tasks,
    evaluate,
    evaluate_run,
    summarize,
)
from harness.evaluation.tasks import STANDARD_TASKS

__all__ = [
    "HarnessLM",
    "PROBE_TASKS",
    "STANDARD_TASKS",
    "default_tasks",
    "evaluate",
    "evaluate_run",
    "probe_task_names",
    "summarize",
]
