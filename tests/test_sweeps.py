"""Sweeps: typed study entries, executors (inline, local workers, submitit), resume after SIGKILL,
retries, submitit requeue, Slurm parameters, and the status view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.runs.pipeline import EvalOptions
from harness.runs.spec import RunSpec
from cli_run import run_cli as _cli  # noqa: E402  (tests/ is on sys.path)

NANO = ["--archs", "gpt2,gpt3", "--size", "nano", "--no-eval"]




def _runs_file(results: Path, name: str) -> dict:
    return json.loads((results.parent / "reports" / name / "runs.json").read_text())


def _record(results: Path, run_id: str) -> dict:
    return json.loads((results / run_id / "record.json").read_text())


def _steps(results: Path, run_id: str) -> list[int]:
    lines = (results / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


# ----------------------------------------------------------------------------- study entries


STUDY_RUN_IDS = {  # the run ids the study's `harness compare` argument strings planned before they became typed
    # entries (synthetic); the text sweeps' ids since text runs name the content-hash split (harness data prepare)
    "synthetic": ["gpt1-mini-f6c637689c-s0", "gpt2-mini-eeff7c840d-s0", "gpt3-mini-4b5e6c80ea-s0"],
    "text": ["gpt1-mini-09d7e48e8c-s0", "gpt2-mini-e17096eb1a-s0", "gpt3-mini-362ff34b73-s0"],
    "text-lr-low": ["gpt1-mini-90eb96aea6-s0", "gpt2-mini-a71161bf59-s0", "gpt1-mini-101f999e60-s1"],
}


STUDY_V1_ENTRIES = {  # version 1 of studies/gpt-family-cpu.yaml (full attention convention, one shared rate)
    "synthetic": {"archs": ["gpt1", "gpt2", "gpt3", "gpt4"], "size": "mini", "data": "synthetic", "budget": 4e12,
                  "seeds": 3, "attention_flops": "full"},
    "text": {"archs": ["gpt1", "gpt2", "gpt3", "gpt4"], "size": "mini", "budget": 4e12, "seeds": 3,
             "data": "../shared/data/corpora/tinyshakespeare.txt", "vocab_size": 2048, "attention_flops": "full"},
    "text-lr-low": {"archs": ["gpt1", "gpt2"], "size": "mini", "budget": 4e12, "seeds": 3, "recipe": {"lr": 6e-4},
                    "data": "../shared/data/corpora/tinyshakespeare.txt", "vocab_size": 2048, "attention_flops": "full"},
}


def test_typed_study_entries_keep_their_run_ids():
    from harness.sweeps.compare import plan_sweep
    from harness.sweeps.entries import options_from_entry

    for name, expected in STUDY_RUN_IDS.items():
        options = options_from_entry({"name": name, "role": "x", **STUDY_V1_ENTRIES[name]})
        assert plan_sweep(options).run_ids[:len(expected)] == expected


def test_the_committed_study_file_is_typed_tuned_and_token_matched():
    from harness.sweeps.study import load_study

    spec = load_study(Path(__file__).parents[1] / "studies" / "gpt-family-cpu.yaml")
    sweeps = {sweep.name: sweep for sweep in spec.sweeps}
    assert spec.tune is not None and len(spec.tune.lrs) >= 5 and set(spec.tune.sweeps) == {"synthetic", "text"}
    comparison_seeds = {s for sweep in spec.sweeps for s in range(sweep.options.first_seed,
                                                                   sweep.options.first_seed + sweep.options.seeds)}
    assert not set(spec.tune.seed_range) & comparison_seeds
    tokens = sweeps["synthetic-tokens"]
    assert tokens.role == "tokens" and tokens.options.match == "tokens" and tokens.lr_from == "synthetic"
    assert all(sweep.options.attention_flops == "causal" and sweep.options.seeds >= 5 for sweep in spec.sweeps)
    assert spec.probes is not None and set(spec.probes.distances) <= set(sweeps["synthetic"].options.train_probes)


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "role": "synthetic", "args": "--archs gpt2"}, "uses `args` (a command line)"),
    ({"name": "a", "role": "synthetic", "budgets": "lots"}, "budget must be a number"),
    ({"name": "a", "role": "synthetic", "seed": 3}, "unknown key(s) seed"),
    ({"name": "a", "role": "synthetic", "recipe": {"learning_rate": 1}}, "unknown recipe field(s) learning_rate"),
    ({"name": "a", "role": "synthetic", "eval": {"task": "x"}}, "unknown eval key(s) task"),
])
def test_bad_study_entries_are_one_sentence(entry, message):
    from harness.sweeps.study import StudySpec

    with pytest.raises(ValueError) as error:
        StudySpec.from_dict({"name": "s", "sweeps": [entry]}, "s.yaml")
    assert message in str(error.value)


def test_budget_is_checked_once_by_the_plan():
    from harness.sweeps.compare import SweepOptions, parse_budgets, plan_sweep

    assert parse_budgets("-5") == [-5.0]  # the parser reads numbers; the plan checks them
    with pytest.raises(ValueError, match="every budget must be a positive number of FLOPs, got -5.0."):
        plan_sweep(SweepOptions(archs=("gpt2",), sizes=("nano",), budgets=(-5.0,)))


# ----------------------------------------------------------------------------- executors


def _sweep(results_root: Path, name: str, executor: list[str], budget: str = "3e9", seeds: int = 1):
    argv = ["compare", *NANO, "--budget", budget, "--seeds", str(seeds), "--name", name, *executor]
    return _cli(argv)


@pytest.mark.slow
def test_local_and_submitit_executors_match_inline(tmp_path, monkeypatch):
    """The same sweep on three executors: the same final losses (one torch thread each), records name the executor."""
    losses = {}
    for kind, extra in (("inline", []), ("local", ["--jobs", "2"]), ("submitit-local", ["--jobs", "2"])):
        results = tmp_path / kind / "results"
        monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
        monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / kind / "reports"))
        # each sweep in its own process, as a user runs it: worker processes and submitit's jobs never share
        # this test process's captured stderr or its torch state
        done = subprocess.run([sys.executable, "-m", "harness", "compare", *NANO, "--budget", "3e9", "--seeds", "1",
                               "--name", "x", "--executor", kind, "--threads", "1", *extra],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
        assert done.returncode == 0, done.stderr
        runs = _runs_file(results, "x")
        assert runs["complete"] and runs["executor"] == kind
        losses[kind] = {}
        for run_id in runs["run_ids"]:
            record = _record(results, run_id)
            launcher = record["launcher"]
            assert launcher["kind"] == kind and launcher["host"] and launcher["job_id"] == runs["runs"][run_id]["job_id"]
            assert runs["runs"][run_id]["state"] == "ok"
            losses[kind][run_id] = record["final_val_loss"]
        if kind != "inline":
            assert len({runs["runs"][r]["job_id"] for r in runs["run_ids"]}) == 2  # two jobs
    assert losses["local"] == losses["inline"] == losses["submitit-local"]  # one thread each: bit for bit


@pytest.mark.slow
def test_sigkill_of_the_driver_then_the_same_command_resumes(results_tmp):
    """Kill -9 the sweep mid-way: its workers checkpoint and stop; the rerun reuses finished runs and resumes the rest."""
    argv = [sys.executable, "-m", "harness", "compare", *NANO, "--budget", "4e10", "--seeds", "2", "--name", "k",
            "--executor", "local", "--jobs", "2"]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_ids = [spec.run_id() for spec in _planned(["gpt2", "gpt3"], 2, 4e10)]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and driver.poll() is None:
        statuses = {r: _status(results_tmp / r) for r in run_ids}
        mid_run = [r for r in run_ids if statuses[r] == "running" and (results_tmp / r / "checkpoint.pt").exists()]
        if "ok" in statuses.values() and mid_run:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the sweep finished before it could be killed mid-way; raise the budget"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    _wait_unlocked(results_tmp, run_ids)
    # a worker stopped in its loop says interrupted; one killed while closing the run (after its loop) left running
    before = {r: {"running": "interrupted"}.get(_status(results_tmp / r), _status(results_tmp / r)) for r in run_ids}
    assert "interrupted" in before.values() and "ok" in before.values(), before
    kept = {r: (results_tmp / r / "metrics.jsonl").read_text() for r in run_ids if before[r] == "ok"}
    resumed = {r: _checkpoint_lines(results_tmp / r) for r in run_ids
               if before[r] == "interrupted" and (results_tmp / r / "checkpoint.pt").exists()}
    assert resumed

    code, out, err = _cli(argv[3:])
    assert code == 0, err
    runs = _runs_file(results_tmp, "k")
    assert runs["complete"] and (results_tmp.parent / "reports" / "k" / "report.md").exists()
    for run_id in run_ids:
        steps = _steps(results_tmp, run_id)
        assert steps == list(range(1, len(steps) + 1)), f"{run_id}: duplicated or missing metric lines"
        assert _record(results_tmp, run_id)["status"] == "ok"
    for run_id, text in kept.items():  # finished before the kill: reused, not retrained
        assert (results_tmp / run_id / "metrics.jsonl").read_text() == text and runs["runs"][run_id]["reused"]
    for run_id, lines in resumed.items():  # resumed: the lines up to the checkpoint are the first process's
        assert lines and (results_tmp / run_id / "metrics.jsonl").read_text().startswith(lines)


def _planned(archs, seeds, budget):
    from harness.sweeps.compare import SweepOptions, plan_sweep

    return plan_sweep(SweepOptions(archs=tuple(archs), seeds=seeds, sizes=("nano",), budgets=(budget,))).specs


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "record.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _checkpoint_lines(run_dir: Path) -> str:
    """The metric lines up to the checkpoint's step (what a resumed run keeps)."""
    from harness.runs.run_dir import checkpoint_step

    step = checkpoint_step(run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return "".join(line + "\n" for line in lines if json.loads(line)["step"] <= step)


def _wait_unlocked(results: Path, run_ids, timeout: float = 120) -> None:
    from harness.runs.lock import is_held

    deadline = time.monotonic() + timeout
    while any(is_held(results / r) for r in run_ids if (results / r).is_dir()):
        assert time.monotonic() < deadline, "the workers did not stop after the sweep was killed"
        time.sleep(0.1)


# ----------------------------------------------------------------------------- retries


@pytest.fixture
def failing_gpt3(monkeypatch):
    """gpt3 runs fail ``times`` times (then train normally); every attempt is counted."""
    from harness.runs import pipeline
    from harness.training.trainer import TrainingFailed

    original, attempts = pipeline.run, []

    def run(spec, *args, **kwargs):
        if spec.arch == "gpt3":
            attempts.append(spec.run_id())
            if len(attempts) <= failing_gpt3.times:
                raise TrainingFailed(f"injected failure {len(attempts)}")
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run", run)
    failing_gpt3.attempts = attempts
    return failing_gpt3


def test_a_run_that_fails_once_is_retried_and_succeeds(results_tmp, failing_gpt3):
    failing_gpt3.times = 1
    code, _, err = _sweep(results_tmp, "r1", [], budget="2e9")
    assert code == 0, err
    assert "FAILED" in err and "retrying (attempt 2 of 2)" in err and len(failing_gpt3.attempts) == 2
    runs = _runs_file(results_tmp, "r1")
    gpt3 = next(r for r in runs["run_ids"] if r.startswith("gpt3"))
    assert runs["complete"] and runs["runs"][gpt3]["state"] == "ok" and runs["runs"][gpt3]["attempts"] == 2


def test_a_run_that_always_fails_is_reported_failed_after_its_retries(results_tmp, failing_gpt3):
    failing_gpt3.times = 99
    code, out, err = _sweep(results_tmp, "r2", ["--retries", "2"], budget="2e9")
    assert code == 1, err
    assert len(failing_gpt3.attempts) == 3  # the first attempt and two retries
    runs = _runs_file(results_tmp, "r2")
    gpt3 = next(r for r in runs["run_ids"] if r.startswith("gpt3"))
    assert runs["runs"][gpt3]["state"] == "failed" and "injected failure 3" in runs["runs"][gpt3]["error"]
    assert "injected failure 3" in runs["failed"][gpt3]
    report = Path(out.strip()).read_text()  # the report is still written, naming the failed run
    assert gpt3 in report


def test_an_interrupted_run_stops_the_sweep_without_a_report_and_the_same_command_finishes_it(results_tmp, monkeypatch):
    from harness.runs import pipeline

    original = pipeline.run

    def interrupted_gpt3(spec, *args, **kwargs):
        if spec.arch == "gpt3":
            return pipeline.RunOutcome(results_tmp / spec.run_id(), {"status": "interrupted", "error": "by SIGINT"},
                                       False, 0.0)
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run", interrupted_gpt3)
    code, _, err = _sweep(results_tmp, "i", [], budget="2e9", seeds=2)
    assert code == 130 and "interrupted at gpt3-nano-" in err, err
    runs = _runs_file(results_tmp, "i")
    assert not runs["complete"] and [runs["runs"][r]["state"] for r in runs["run_ids"]] == [
        "ok", "interrupted", "planned", "planned"]
    assert not (results_tmp.parent / "reports" / "i" / "report.md").exists()
    monkeypatch.setattr(pipeline, "run", original)
    code, out, err = _sweep(results_tmp, "i", [], budget="2e9", seeds=2)
    assert code == 0 and "3 trained, 1 reused" in err, err
    assert _runs_file(results_tmp, "i")["complete"] and Path(out.strip()).exists()


def test_runs_whose_committed_data_say_ok_are_done_and_are_not_trained_again(results_tmp):
    """A study's compact data committed as its runs landed: on a machine without results/, the same sweep
    trains only what is missing (here: the run whose committed record failed)."""
    import shutil

    code, _, err = _sweep(results_tmp, "c", [], budget="2e9")
    assert code == 0 and "2 trained" in err, err
    run_ids = _runs_file(results_tmp, "c")["run_ids"]
    data = results_tmp.parent / "reports" / "c" / "data" / "runs"
    assert sorted(p.name for p in data.iterdir()) == sorted(run_ids)
    failed = data / run_ids[1] / "record.json"
    failed.write_text(json.dumps({**json.loads(failed.read_text()), "status": "failed"}))
    shutil.rmtree(results_tmp)  # a fresh clone: only the committed data
    code, _, err = _sweep(results_tmp, "c", [], budget="2e9")
    assert code == 0 and "1 trained, 1 reused" in err and "reused (committed data)" in err, err
    assert not (results_tmp / run_ids[0]).exists() and (results_tmp / run_ids[1] / "record.json").exists()
    assert _runs_file(results_tmp, "c")["complete"]


# ----------------------------------------------------------------------------- submitit


@pytest.mark.slow
def test_a_requeued_submitit_job_resumes_to_the_uninterrupted_loss(results_tmp, tmp_path):
    """Preempt a running submitit-local job (its USR2 signal): it checkpoints, is requeued, and resumes."""
    from harness.sweeps.executors import ExecutorOptions
    from harness.sweeps.job import RunJob
    from harness.sweeps.submitit_executor import SubmititExecutor

    spec = RunSpec(arch="gpt2", size="nano", budget_flops=1.5e10, checkpoint_interval=5)
    reference = RunJob(spec.to_dict(), EvalOptions(enabled=False), str(tmp_path / "reference"), threads=1)()
    executor = SubmititExecutor(ExecutorOptions("submitit-local", threads=1), tmp_path / "jobs")
    handle = executor.submit([RunJob(spec.to_dict(), EvalOptions(enabled=False), str(results_tmp))])[0]
    run_dir = results_tmp / spec.run_id()
    deadline = time.monotonic() + 300
    while not (_status(run_dir) == "running" and (run_dir / "checkpoint.pt").exists()):
        assert time.monotonic() < deadline and not handle.done(), "the job never reached its first checkpoint"
        time.sleep(0.05)
    pid = json.loads((run_dir / "run.lock").read_text())["pid"]
    os.kill(pid, signal.SIGUSR2)  # what Slurm (and submitit's local controller) send before preemption / time-out
    while not handle.done():
        time.sleep(0.2)
    outcome = handle.outcome()
    assert outcome["status"] == "ok", outcome
    log = handle.job.stdout()  # submitit's own log: the job was requeued and started twice
    assert "Requeued job" in log and log.count("Starting with") == 2, log
    assert outcome["final_val_loss"] == reference["final_val_loss"]
    assert outcome["launcher"]["kind"] == "submitit-local" and outcome["launcher"]["job_id"] == handle.job_id
    steps = _steps(results_tmp, spec.run_id())
    assert steps == list(range(1, len(steps) + 1))


def test_slurm_parameters_come_from_the_study_file_and_the_command_line(tmp_path, monkeypatch):
    """Checked as data: submitit's sbatch script for an 8-run array, without a cluster."""
    import submitit

    from harness.cli.compare import add_executor_arguments, executor_options_from_args
    from harness.sweeps.submitit_executor import slurm_parameters

    import argparse

    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    args = parser.parse_args(["--executor", "slurm", "--slurm-time", "90", "--slurm-gpus", "2"])
    study = {"partition": "gpu", "time_min": 30, "account": "lab", "array_parallelism": 4}
    options = executor_options_from_args(args, study)
    assert options.slurm.partition == "gpu" and options.slurm.time_min == 90  # the command line wins
    parameters = slurm_parameters(options.slurm, "x")
    assert parameters == {"name": "x", "timeout_min": 90, "nodes": 1, "tasks_per_node": 2, "gpus_per_node": 2,
                          "slurm_array_parallelism": 4, "slurm_signal_delay_s": 120, "slurm_partition": "gpu",
                          "slurm_account": "lab"}
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    executor.update_parameters(**parameters)
    executor._executor.parameters["map_count"] = 8  # what an 8-run batch submission sets
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=90", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --array=0-7%4", "#SBATCH --signal=USR2@120"):
        assert line in script, line
    with pytest.raises(ValueError, match="slurm time_min must be a positive whole number"):
        executor_options_from_args(args, {"time_min": 0, "partition": "gpu"}).slurm.merged({"time_min": 0})
    with pytest.raises(ValueError, match="unknown key"):
        executor_options_from_args(args, {"queue": "gpu"})


def test_local_workers_split_gpus_and_use_torchrun_for_several():
    from harness.sweeps.executors import gpu_slots, worker_command

    assert gpu_slots(2, 1, []) is None and gpu_slots(2, 1, [0]) is None
    assert gpu_slots(4, 2, list(range(8))) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="needs 6 GPUs, this machine has 4; lower --jobs or --gpus-per-run."):
        gpu_slots(3, 2, [0, 1, 2, 3])
    assert worker_command(2)[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert worker_command(1)[1:] == ["-m", "harness.sweeps.worker"]


# ----------------------------------------------------------------------------- status


def test_status_view_rows_and_summary(results_tmp):
    code, _, err = _sweep(results_tmp, "st", [], budget="2e9")
    assert code == 0, err
    runs = _runs_file(results_tmp, "st")
    done = runs["run_ids"][0]
    record = _record(results_tmp, done)
    record["status"] = "running"  # as a killed process leaves it
    (results_tmp / done / "record.json").write_text(json.dumps(record))
    code, out, err = _cli(["sweep", "status", "st"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["run_id", "arch", "size", "seed", "state"]
    row = next(line.split() for line in lines if line.startswith(done))
    assert row[1:6] == ["gpt2", "nano", "0", "interrupted", "inline"] and row[6] == str(os.getpid())
    assert lines[-1].startswith("2 runs: 1 ok, 1 interrupted; ") and "training FLOPs done (2 per multiply-add)" in lines[-1]
    code, _, err = _cli(["sweep", "status", "nothing-here"])
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("argv, message", [
    (["--executor", "local", "--jobs", "0"], "--jobs must be a positive whole number, got 0."),
    (["--retries", "-1"], "--retries must be a whole number ≥ 0, got -1."),
    (["--executor", "slurm", "--slurm-time", "0"], "slurm time_min must be a positive whole number, got 0."),
])
def test_bad_executor_options_are_one_sentence(results_tmp, argv, message):
    code, _, err = _cli(["compare", *NANO, "--budget", "1e9", *argv])
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not results_tmp.exists()
