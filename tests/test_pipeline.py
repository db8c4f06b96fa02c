"""The train-then-evaluate pipeline (harness/runs/pipeline.py): which runs it evaluates, and what a failed evaluation leaves."""

from __future__ import annotations

import pytest

import harness.evaluation
from harness.runs.pipeline import EvalOptions, run
from harness.runs.records import load_record
from harness.runs.spec import RunSpec
from harness.threads import torch_threads

SPEC = dict(arch="gpt2", size="nano", budget_flops=1e10, dtype="fp32", device="cpu")


def test_eval_options_are_checked_when_made():
    with pytest.raises(ValueError, match="--eval-limit must be a positive whole number, got 0"):
        EvalOptions(limit=0)
    with pytest.raises(ValueError, match="--tasks is empty"):
        EvalOptions(tasks=(" ",))
    assert EvalOptions(tasks=["a", " b"]).tasks == ("a", "b")


def test_which_records_are_evaluated():
    fresh, done = {"status": "ok"}, {"status": "ok", "evaluation": {"a": {}}}
    assert EvalOptions().wanted(fresh)
    assert not EvalOptions(enabled=False).wanted(fresh)
    assert not EvalOptions().wanted({"status": "interrupted"})
    assert not EvalOptions().wanted(done)  # default tasks, already evaluated
    assert not EvalOptions(tasks=("a",)).wanted(done)  # a sweep skips tasks the record holds
    assert EvalOptions(tasks=("a",), redo_done=True).wanted(done)  # `harness run --tasks` evaluates again
    assert EvalOptions(tasks=("a", "b")).wanted(done)  # a task the record lacks


def test_run_trains_evaluates_and_reuses(results_tmp, monkeypatch):
    calls = []

    def fake_evaluate(run_dir, tasks, limit, task_data, verbose=None):
        calls.append((tasks, limit, task_data))
        return {task: {"acc": {"value": 0.5}} for task in tasks}

    monkeypatch.setattr(harness.evaluation, "evaluate_run", fake_evaluate)
    with torch_threads(1):
        first = run(RunSpec(**SPEC), EvalOptions(tasks=("t1",), limit=7), results_tmp, progress=False)
        again = run(RunSpec(**SPEC), EvalOptions(enabled=False), results_tmp, progress=False)
    assert first.status == "ok" and not first.reused and first.run_id == RunSpec(**SPEC).run_id()
    assert first.evaluation == {"t1": {"acc": {"value": 0.5}}} and calls == [(["t1"], 7, None)]
    assert first.train_s > 0 and first.eval_s >= 0 and load_record(first.run_dir)["status"] == "ok"
    assert again.reused and again.evaluation is None and len(calls) == 1


@pytest.mark.parametrize("eval_errors", ["raise", "record"])
def test_a_failed_evaluation_keeps_the_trained_run(results_tmp, monkeypatch, capsys, eval_errors):
    def failing_evaluate(run_dir, tasks, limit, task_data, verbose=None):
        print("lm-eval notice", file=__import__("sys").stderr)
        raise ValueError("unknown task 'nope'")

    monkeypatch.setattr(harness.evaluation, "evaluate_run", failing_evaluate)
    options = EvalOptions(tasks=("nope",), quiet=True)
    with torch_threads(1):
        if eval_errors == "raise":
            with pytest.raises(ValueError, match="unknown task 'nope'"):
                run(RunSpec(**SPEC), options, results_tmp, progress=False)
        else:
            outcome = run(RunSpec(**SPEC), options, results_tmp, progress=False, eval_errors="record")
            assert outcome.evaluation is None and outcome.evaluation_error == "unknown task 'nope'"
    assert load_record(results_tmp / RunSpec(**SPEC).run_id())["status"] == "ok"
    assert "lm-eval notice" in capsys.readouterr().err  # held back by quiet, shown because it failed
