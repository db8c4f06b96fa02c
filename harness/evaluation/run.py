"""Evaluate a model (live, or a trained run directory) with lm-eval and record the metrics.

    evaluate(model, tokenizer, tasks, ...)        → lm-eval's results dict
    evaluate_run(run_dir, tasks=None, ...)        → {task: {metric: {value, stderr, n, version}}}
        writes lm-eval's own output to run_dir/lm_eval_results/<time>_<k>shot_<limit>_<tasks>.json
        (one file per call, never overwritten) and merges the metrics into record.json under
        ``evaluation``, keyed by ``evaluation_key``: the task name at 0 shots, ``<task>@<k>shot``
        at k > 0, so one record keeps a task's zero- and few-shot results side by side; the
        larger n of a key stays in ``evaluation``, the other results beside it in
        ``evaluation_kept_aside`` (``harness.evaluation.kept``)
    (a run's model is read by ``harness.runs.run_dir.load_run_model``, its file names live there too)
    default_tasks(data_kind)                      → probes (synthetic) or wikitext + lambada_openai (text)
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import harness.evaluation.probes as probes
from harness.evaluation.kept import KEPT_ASIDE_FIELD, lm_eval_results_name, merge_evaluations
from harness.evaluation.lm import DEFAULT_BATCH_SIZE, HarnessLM, parse_batch_size
from harness.evaluation.tasks import parse_task_names, task_manager, write_task_yamls
from harness.evaluation.text_tasks import is_text_task
from harness.io import write_text_atomic
from harness.paths import temporary_environ
from harness.progress import quiet_third_party
from harness.runs.records import load_record, write_record
from harness.runs.run_dir import checkpoint_step, load_run_model, resolve_run_dir, resume_rule

TEXT_TASKS = ("wikitext", "lambada_openai")
BOOTSTRAP_ITERS = 1000  # lm-eval's default (100000) takes minutes for perplexity metrics on a CPU


def default_tasks(data_kind: str) -> list[str]:
    """The tasks a run is evaluated on after training: every probe for synthetic data, else text tasks."""
    if data_kind == "synthetic":
        return probes.probe_task_names()
    if data_kind == "text":
        return list(TEXT_TASKS)
    raise ValueError(f"data kind must be 'synthetic' or 'text', got {data_kind!r}.")


def evaluation_key(task: str, num_fewshot: int) -> str:
    """Record key of a task's metrics: ``task`` at 0 shots, ``task@<k>shot`` at k > 0 shots."""
    return task if not num_fewshot else f"{task}@{int(num_fewshot)}shot"


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive whole number of documents per task, got {limit!r}.")


def evaluate(
    model: torch.nn.Module | HarnessLM,
    tokenizer: Any = None,
    tasks: str | list[str] = (),
    *,
    limit: int | None = None,
    num_fewshot: int = 0,
    task_data: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    generator: Any = None,
    bootstrap_iters: int = BOOTSTRAP_ITERS,
    verbose: bool | None = None,
) -> dict:
    """Run lm-eval on ``tasks`` and return its results dict (``results``, ``versions``, ``n-samples`` ...).

    ``model``: a model with its ``tokenizer``, or a ready ``HarnessLM``. ``generator``: the
    synthetic generator the model was trained on, needed by the probe tasks. ``verbose``: show
    lm-eval's progress bars and warnings (None: only when stderr is a terminal; ``harness.progress``).
    """
    import lm_eval

    names = parse_task_names(tasks)
    check_limit(limit)
    if num_fewshot is None or num_fewshot < 0:
        raise ValueError(f"num_fewshot must be 0 or more, got {num_fewshot!r}.")
    lm = model if isinstance(model, HarnessLM) else HarnessLM(model, tokenizer, batch_size=parse_batch_size(batch_size))
    probe_names = [n for n in names if probes.is_probe(n)]
    probe_files = {}
    if probe_names:
        if generator is None:
            raise ValueError(
                f"probe task(s) {', '.join(probe_names)} need the synthetic generator the model was trained on."
            )
        probe_files = probes.write_probe_files(probe_names, generator, lm.tokenizer)
    with tempfile.TemporaryDirectory(prefix="harness-tasks-") as include_dir:
        needs_builtins = write_task_yamls(names, include_dir, task_data=task_data, probe_files=probe_files)
        manager = task_manager(include_dir, include_defaults=needs_builtins)
        note = (f"evaluating {', '.join(names)} with lm-eval" + (f" (at most {limit} documents per task)" if limit else "")
                + "; --verbose shows its progress bars and warnings")
        with temporary_environ(DISABLE_MULTIPROC="1", TOKENIZERS_PARALLELISM="false"), quiet_third_party(verbose, note):
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=names,
                num_fewshot=num_fewshot,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=bootstrap_iters,
                batch_size=lm.batch_size,
            )
    return results


def summarize(results: dict, num_fewshot: int = 0) -> dict[str, dict[str, dict]]:
    """lm-eval results → {key: {metric: {value, stderr, n, version}}} (filter ``none`` dropped from names).

    ``key`` is ``evaluation_key(task, shots)``, shots as lm-eval reports them in ``n-shot``
    (else ``num_fewshot``, the number requested).
    """
    summary: dict[str, dict[str, dict]] = {}
    versions = results.get("versions", {})
    samples = results.get("n-samples", {})
    shots = results.get("n-shot", {})
    for task, metrics in results.get("results", {}).items():
        n = samples.get(task, {}).get("effective")
        entry = {}
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else key
            entry[name] = {
                "value": _number(value),
                "stderr": _number(metrics.get(f"{metric}_stderr,{filter_name}")),
                "n": n,
                "version": versions.get(task),
            }
        task_shots = shots.get(task)
        summary[evaluation_key(task, task_shots if isinstance(task_shots, int) else num_fewshot)] = entry
    return summary


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for a stderr it does not compute
    return value if math.isfinite(value) else None


def results_json(results: dict) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(results, indent=2, default=handle_non_serializable) + "\n"


def evaluate_run(
    run_dir: str | os.PathLike,
    tasks: str | list[str] | None = None,
    limit: int | None = None,
    num_fewshot: int = 0,
    task_data: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    allow_partial: bool = False,
    wait: bool = False,
    on_note=None,
    verbose: bool | None = None,
) -> dict[str, dict[str, dict]]:
    """Evaluate a trained run; write lm-eval's results file and merge ``evaluation`` into its record.

    ``tasks`` defaults to ``default_tasks`` of the run's data kind. Returns the merged metrics
    of this evaluation, {task: {metric: {value, stderr, n, version}}}. The run directory is
    locked meanwhile (``harness.runs.lock``; ``wait``: wait for a process holding it). A run
    whose record is not ``ok`` (interrupted, failed) is refused unless ``allow_partial``:
    then its last checkpoint is scored and the record's ``evaluation_step`` says at which step.
    ``on_note`` gets one sentence per result kept aside (a smaller n than the one recorded, or
    displaced by a larger one; default: printed to stderr). ``verbose``: as for ``evaluate``.
    """
    from harness.runs.lock import claim_run

    run_dir = resolve_run_dir(run_dir)
    check_limit(limit)
    with claim_run(run_dir, purpose="eval", wait=wait):
        check_finished(run_dir, allow_partial)
        return _evaluate_locked(run_dir, tasks, limit, num_fewshot, task_data, batch_size, device,
                                on_note or (lambda note: print(f"note: {note}", file=sys.stderr)), verbose)


def check_finished(run_dir: Path, allow_partial: bool) -> None:
    """Refuse to score a run that did not finish (``ValueError``), unless ``allow_partial``."""
    record = load_record(run_dir)
    status = record.get("status")
    if status == "ok" or allow_partial:
        return
    if status == "running":  # we hold the lock, so nobody is running it any more
        status = "interrupted (its process died)"
    raise ValueError(
        f"run {run_dir.name} is {status} at step {record.get('steps', '?')} of {record.get('planned_steps', '?')}; "
        f"finish it first ({resume_rule('`harness run` command')}), or pass --allow-partial to score "
        f"its last checkpoint anyway."
    )


def _evaluate_locked(run_dir, tasks, limit, num_fewshot, task_data, batch_size, device,
                     on_note, verbose) -> dict[str, dict[str, dict]]:
    model, tokenizer, record = load_run_model(run_dir)
    data_kind = (record.get("data") or {}).get("kind", "text")
    names = parse_task_names(tasks if tasks is not None else default_tasks(data_kind))
    text_tasks = [n for n in names if not probes.is_probe(n) and not is_text_task(n)]
    if data_kind == "synthetic" and text_tasks:
        raise ValueError(
            f"{', '.join(text_tasks)} need(s) a model of text, but {run_dir.name} was trained on synthetic data; "
            f"evaluate it on the probes ({probes.PROBES_ALIAS})."
        )
    generator = probes.generator_for_record(record) if any(probes.is_probe(n) for n in names) else None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm = HarnessLM(model.to(device), tokenizer, batch_size=batch_size)
    results = evaluate(
        lm, tasks=names, limit=limit, num_fewshot=num_fewshot, task_data=task_data, generator=generator,
        verbose=verbose,
    )
    results.setdefault("config", {})["run_dir"] = str(run_dir)
    results_path = run_dir / lm_eval_results_name(names, num_fewshot, limit)
    results_path.parent.mkdir(exist_ok=True)
    write_text_atomic(results_path, results_json(results))
    summary = summarize(results, num_fewshot)
    extra = {"lm_eval_version": results.get("lm_eval_version")}  # the scorer of every metric (BLEU, ROUGE ...)
    if record.get("status") != "ok":  # scored with --allow-partial: say what was scored
        extra["evaluation_step"] = checkpoint_step(run_dir)
    record = load_record(run_dir)  # as on disk now, under the run lock
    merged = merge_evaluations(record.get("evaluation"), record.get(KEPT_ASIDE_FIELD), summary)
    record.update(evaluation=merged.evaluation, **extra)
    record.pop(KEPT_ASIDE_FIELD, None)
    if merged.kept_aside:
        record[KEPT_ASIDE_FIELD] = merged.kept_aside
    write_record(run_dir, record)
    for note in merged.notes:
        on_note(note)
    return summary


def latest_results_file(run_dir: str | os.PathLike) -> Path | None:
    """The newest lm-eval output file of a run (``lm_eval_results/``), None when it has none."""
    from harness.evaluation.kept import LM_EVAL_RESULTS_DIR

    files = sorted((Path(run_dir) / LM_EVAL_RESULTS_DIR).glob("*.json"))
    return files[-1] if files else None
