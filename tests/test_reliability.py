"""Fault injection: nothing lost, nothing doubled (docs/reliability.md lists these cases).

Kills and concurrent runs use real processes (the CLI under a small worker that injects the
fault); disk-full faults are injected in-process at ``harness.io._open_file``, the one place
the harness opens a file for writing. Every case ends by checking that the run can be
finished and then equals an uninterrupted run to fp32 round-off.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import harness.io
from harness.cli import main as cli_main
from harness.runs.records import load_record
from harness.reporting.results import STALE_STATUS, load_results
from harness.runs.lock import hold_run_lock, is_held
from harness.runs.spec import RunSpec
from harness.threads import torch_threads
from harness.training.trainer import TrainingFailed, train

REPO = Path(__file__).resolve().parents[1]
BUDGET = 1.1e10  # gpt2 nano: 12 steps of 16 x 64 tokens
ARGS = ["run", "--arch", "gpt2", "--size", "nano", "--budget", str(BUDGET), "--dtype", "fp32",
        "--checkpoint-interval", "3", "--no-eval"]
TIMEOUT_S = 300

# The CLI with one fault, chosen by HARNESS_TEST_FAULT:
#   kill:N             SIGKILL this process in its N-th training forward pass
#   kill_in_save:N     SIGKILL in the middle of its N-th checkpoint write (half the bytes written)
#   pause:N:DIR        in the N-th forward, create DIR/paused and wait until DIR/go exists
WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import torch
    import architectures.model as model_module
    from harness.cli import main

    kind, n, *rest = os.environ.get("HARNESS_TEST_FAULT", "none:0").split(":", 2)
    original_forward, original_save, calls = model_module.GPT.forward, torch.save, {"forward": 0, "save": 0}

    def forward(self, idx, targets=None, **kwargs):
        if targets is not None and self.training:
            calls["forward"] += 1
            if calls["forward"] == int(n) and kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if calls["forward"] == int(n) and kind == "pause":
                folder = Path(rest[0])
                (folder / "paused").write_text(str(os.getpid()))
                while not (folder / "go").exists():
                    time.sleep(0.05)
        return original_forward(self, idx, targets=targets, **kwargs)

    def save(obj, handle, *args, **kwargs):
        calls["save"] += 1
        if kind == "kill_in_save" and calls["save"] == int(n):
            handle.write(b"PK" + b"\\0" * 4096)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original_save(obj, handle, *args, **kwargs)

    model_module.GPT.forward = forward
    torch.save = save
    sys.exit(main(sys.argv[1:]))
    """
)


def spec(**overrides) -> RunSpec:
    return RunSpec(arch="gpt2", size="nano", budget_flops=BUDGET, dtype="fp32", checkpoint_interval=3,
                   overrides=overrides)


def env_for(results: Path, fault: str | None = None) -> dict:
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("HARNESS_TEST_FAULT", None)
    if fault:
        env["HARNESS_TEST_FAULT"] = fault
    return env


def cli(worker: Path, results: Path, fault: str | None = None, extra: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(worker), *ARGS, *extra], cwd=REPO, env=env_for(results, fault),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def debris(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or p.is_dir()]


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("worker") / "worker.py"
    path.write_text(WORKER)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run, one thread (as in the worker processes)."""
    with torch_threads(1):
        result = train(spec(), tmp_path_factory.mktemp("reference"), progress=False)
    losses = [json.loads(line)["train_loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {**result.record, "train_losses": losses}


def assert_equals_reference(run_dir: Path, reference: dict) -> None:
    record = load_record(run_dir)
    assert record["status"] == "ok" and record["steps"] == reference["steps"] == 12
    assert record["final_val_loss"] == pytest.approx(reference["final_val_loss"], rel=1e-6)
    assert metric_steps(run_dir) == list(range(1, 13))  # each step exactly once
    losses = [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(reference["train_losses"], rel=1e-6)
    assert not debris(run_dir), debris(run_dir)


# ---- SIGKILL at random steps -----------------------------------------------------------------


def test_sigkill_at_random_steps_then_resume_equals_uninterrupted(worker, reference, tmp_path):
    results = tmp_path / "results"
    run_dir = results / spec().run_id()
    rng = random.Random(20261201)
    faults = [f"kill:{rng.randint(2, 5)}", "kill_in_save:2", f"kill:{rng.randint(1, 4)}"]
    for fault in faults:
        done = cli(worker, results, fault)
        assert done.returncode == -signal.SIGKILL, (fault, done.stderr[-2000:])
        assert load_record(run_dir)["status"] == "running"  # what the dead process left
        if fault.startswith("kill_in_save"):  # a half-written temporary checkpoint, removed at the next start
            assert list(run_dir.glob(".checkpoint.pt.*.tmp"))
        frame = load_results(results)
        assert list(frame["status"]) == [STALE_STATUS]  # `harness results` does not call it running
    finished = cli(worker, results)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "taking it over" in finished.stderr
    assert_equals_reference(run_dir, reference)


# ---- two identical runs at once --------------------------------------------------------------


def test_two_identical_runs_at_once_only_one_trains(worker, reference, tmp_path, monkeypatch, capsys):
    results, sync = tmp_path / "results", tmp_path / "sync"
    sync.mkdir()
    first = subprocess.Popen([sys.executable, str(worker), *ARGS], cwd=REPO, env=env_for(results, f"pause:4:{sync}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiter_log = tmp_path / "waiter.err"
    waiter = None
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (sync / "paused").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.1)
        # a second identical run while the first trains: one line naming the first's PID, exit 2
        monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
        assert cli_main(ARGS[:]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by PID {first.pid}" in err and "--wait" in err
        # a third with --wait blocks until the first is done, then reuses its finished run
        with open(waiter_log, "w") as log:
            waiter = subprocess.Popen([sys.executable, "-m", "harness", *ARGS, "--wait"], cwd=REPO,
                                      env=env_for(results), stdout=subprocess.DEVNULL, stderr=log)
        while "waiting for it to finish" not in waiter_log.read_text():
            assert waiter.poll() is None and time.monotonic() < deadline, waiter_log.read_text()[-2000:]
            time.sleep(0.1)
        (sync / "go").write_text("")
        assert first.wait(TIMEOUT_S) == 0, first.stderr.read()[-2000:]
        assert waiter.wait(TIMEOUT_S) == 0, waiter_log.read_text()[-2000:]
    finally:
        for process in (first, waiter):
            if process is not None and process.poll() is None:
                process.kill()
    assert "reusing it" in waiter_log.read_text()
    assert_equals_reference(results / spec().run_id(), reference)


def test_lock_is_reentrant_and_results_tell_running_from_stale(tmp_path):
    run_dir = tmp_path / "results" / spec().run_id()
    with hold_run_lock(run_dir, purpose="test"):
        with hold_run_lock(run_dir):  # the same process: re-entrant, no self-deadlock
            assert is_held(run_dir)
        assert is_held(run_dir)
    assert not is_held(run_dir) and not run_dir.exists()  # nothing but the lock was written: removed


# ---- disk full at each write site ------------------------------------------------------------


class FullDisk:
    """A file whose ``fail_at``-th write raises ENOSPC (after the earlier ones went through)."""

    def __init__(self, handle, fail_at: int):
        self.handle, self.fail_at, self.writes = handle, fail_at, 0

    def write(self, data):
        self.writes += 1
        if self.writes >= self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def inject_enospc(monkeypatch, match: str, nth_open: int = 1, fail_at_write: int = 1) -> dict:
    """The ``nth_open``-th opening of a file whose path contains ``match`` fails at write ``fail_at_write``."""
    real, seen = harness.io._open_file, {"opens": 0}

    def opener(path, mode, buffering=-1):
        handle = real(path, mode, buffering)
        if match in str(path):
            seen["opens"] += 1
            if seen["opens"] == nth_open:
                return FullDisk(handle, fail_at_write)
        return handle

    monkeypatch.setattr(harness.io, "_open_file", opener)
    return seen


# (site, path contains, n-th opening, n-th write): every file a training run writes
WRITE_SITES = [
    ("config", "config.json", 1, 1),
    ("tokenizer", "tokenizer", 1, 1),
    ("record at start", "record.json", 1, 1),
    ("checkpoint mid-run", "checkpoint.pt", 2, 1),
    ("final checkpoint", "checkpoint.pt", 5, 1),  # saves at steps 3, 6, 9, 12, then the closing one
    ("metrics line", "metrics.jsonl", 1, 5),
    ("record at the end", "record.json", 2, 1),
]


@pytest.mark.parametrize("site, match, nth_open, fail_at_write", WRITE_SITES, ids=[s[0] for s in WRITE_SITES])
def test_disk_full_at_each_write_site_fails_cleanly_and_resumes(reference, tmp_path, monkeypatch, site, match,
                                                                nth_open, fail_at_write):
    results = tmp_path / "results"
    run_dir = results / spec().run_id()
    real_open_file = harness.io._open_file
    seen = inject_enospc(monkeypatch, match, nth_open, fail_at_write)
    with torch_threads(1):
        with pytest.raises(TrainingFailed) as failure:
            train(spec(), results, progress=False)
        assert seen["opens"] >= nth_open
        message = str(failure.value)
        assert "\n" not in message and "no space left on device" in message and "free there" in message
        assert match in message  # names the file
        record = load_record(run_dir)
        assert record["status"] == "failed" and "no space left on device" in record["error"]
        assert not debris(run_dir), debris(run_dir)
        if (run_dir / "metrics.jsonl").exists():  # whole lines only, each step once
            steps = metric_steps(run_dir)
            assert steps == list(range(1, len(steps) + 1))
        if site == "metrics line":
            assert record["steps"] == 5 and record["last_metrics"]["step"] == 5
        if site == "final checkpoint":  # the last good checkpoint (step 12, periodic) is intact
            assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 12
        monkeypatch.setattr(harness.io, "_open_file", real_open_file)  # the disk has room again
        again = train(spec(), results, progress=False)  # the same command resumes (or restarts)
    assert again.record["status"] == "ok"
    assert_equals_reference(run_dir, reference)


def test_metrics_file_that_cannot_be_opened_fails_the_record_and_restores_signal_handlers(tmp_path, monkeypatch):
    """The loop's set-up (signal handlers, metrics.jsonl) is inside its failure handling: the record says why."""
    real_open_file = harness.io._open_file

    def opener(path, mode, buffering=-1):
        if "metrics.jsonl" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open_file(path, mode, buffering)

    monkeypatch.setattr(harness.io, "_open_file", opener)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingFailed, match="metrics.jsonl"):
        train(spec(), tmp_path / "results", progress=False)
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer's handler is gone again
    record = load_record(tmp_path / "results" / spec().run_id())
    assert record["status"] == "failed" and record["steps"] == 0
    assert "metrics.jsonl" in record["error"] and "no space left on device" in record["error"]


def test_disk_full_in_the_token_cache_is_one_line_and_leaves_no_debris(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    inject_enospc(monkeypatch, ".npy")
    assert cli_main([*ARGS, "--data", "synthetic?n_train=20000&n_val=2000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and err.count("\n") == 1 and "free there" in err
    assert not [p for p in cache.rglob(".*")], list(cache.rglob("*"))  # no half-built cache folder


def test_unwritable_results_folder_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(blocker / "results"))
    assert cli_main(ARGS[:]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a part of the path is a file, not a folder" in err


def test_compare_checks_the_report_folder_before_training(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(blocker))
    code = cli_main(["compare", "--archs", "gpt2", "--size", "nano", "--budget", "2e10", "--no-eval"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and str(blocker) in err
    assert not any((tmp_path / "results").glob("*/record.json"))  # nothing trained


def test_study_checks_the_report_folder_before_training(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(blocker))
    study = tmp_path / "tiny.yaml"
    study.write_text("name: tiny\nsweeps:\n  - name: syn\n    role: synthetic\n    archs: [gpt2]\n    size: nano\n"
                     "    budget: 2e10\n    eval: false\n")
    assert cli_main(["study", str(study)]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and str(blocker) in err
    assert not any((tmp_path / "results").glob("*/record.json"))  # nothing trained


# ---- corrupt or foreign checkpoints, partial runs --------------------------------------------


@pytest.fixture
def interrupted_run(tmp_path, monkeypatch) -> Path:
    results = tmp_path / "results"
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(results))
    result = train(spec(), results, stop_after_steps=3, progress=False)
    assert result.record["status"] == "interrupted"
    return result.run_dir


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_the_same_command_resumes_and_says_from_which_step(interrupted_run, capsys):
    """One resume rule: the same command (no --resume) continues an interrupted run and says so first."""
    capsys.readouterr()
    assert cli_main(ARGS) == 0
    captured = capsys.readouterr()
    assert f"resuming {interrupted_run.name} from step 3 of 12 (its last checkpoint)" in captured.err
    assert load_record(interrupted_run)["status"] == "ok" and load_record(interrupted_run)["steps"] == 12


def test_interrupted_run_says_the_one_resume_rule(tmp_path, monkeypatch, capsys):
    import harness.training.trainer as trainer

    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path / "results"))
    original = trainer.train
    monkeypatch.setattr(trainer, "train", lambda *a, **k: original(*a, **{**k, "stop_after_steps": 2}))
    assert cli_main(ARGS) == 130
    out = capsys.readouterr().out
    assert "interrupted after step 2: checkpoint saved in" in out
    assert "running the same command again continues it from its last checkpoint (no --resume needed)" in out


def test_corrupt_checkpoint_under_resume_is_one_line(interrupted_run, capsys):
    (interrupted_run / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    assert cli_main([*ARGS, "--resume"]) == 2
    assert "cannot be loaded" in one_error_line(capsys)
    assert load_record(interrupted_run)["status"] == "interrupted"  # untouched


def test_foreign_checkpoint_under_resume_is_one_line(interrupted_run, tmp_path, capsys):
    other = train(spec(d_model=32), tmp_path / "other", stop_after_steps=1, progress=False).run_dir
    foreign = torch.load(other / "checkpoint.pt", weights_only=True)
    torch.save(foreign, interrupted_run / "checkpoint.pt")
    assert cli_main([*ARGS, "--resume"]) == 2
    assert f"belongs to run {other.name}" in one_error_line(capsys)
    foreign["run_id"] = interrupted_run.name  # claims to be ours, but its shapes are not
    torch.save(foreign, interrupted_run / "checkpoint.pt")
    assert cli_main([*ARGS, "--resume"]) == 2
    assert "does not fit this model" in one_error_line(capsys)


def test_eval_refuses_an_interrupted_run(interrupted_run, capsys):
    assert cli_main(["eval", "--run", str(interrupted_run), "--limit", "5"]) == 2
    err = one_error_line(capsys)
    assert "is interrupted at step 3 of 12" in err and "--allow-partial" in err
    assert "running the same `harness run` command again continues it from its last checkpoint" in err
    assert "evaluation" not in load_record(interrupted_run)


# ---- numbers at the edge ---------------------------------------------------------------------

NANO = ["run", "--arch", "gpt2", "--size", "nano", "--no-eval"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr", "0"], "--lr (lr) must be a positive finite learning rate"),
        (["--lr", "nan"], "--lr (lr) must be a positive finite learning rate"),
        (["--seq-len", "0"], "--seq-len (seq_len) must be a positive whole number"),
        (["--micro-batch", "0"], "--micro-batch (micro_batch_size) must be a positive whole number"),
        (["--batch-tokens", "-64"], "--batch-tokens (batch_tokens) must be a positive whole number"),
        (["--batch-tokens", "32"], "must hold at least one sequence"),
        (["--budget", "inf"], "--budget must be a positive finite number"),
        (["--vocab-size", "10"], "--vocab-size must be a whole number ≥ 258"),
        (["--seed", "-1"], "--seed must be a whole number ≥ 0"),
        (["--checkpoint-interval", "0"], "--checkpoint-interval must be a positive whole number"),
        (["--eval-limit", "0"], "--eval-limit must be a positive whole number"),
        (["--set", "init_std=-1"], "init_std must be a positive finite number"),
        (["--set", "layer_norm_eps=0"], "layer_norm_eps must be a positive finite number"),
        (["--set", "moe_z_weight=-1"], "moe_z_weight must be a finite number ≥ 0"),
        (["--budget", "1e40"], "plans 1.17e+31 optimizer steps, more than 1e+07"),
    ],
)
def test_bad_numbers_are_one_line_and_exit_2(results_tmp, capsys, extra, message):
    assert cli_main(NANO + extra) == 2
    err = one_error_line(capsys)
    assert message in err and "Traceback" not in err
    assert not any(results_tmp.glob("*/record.json"))


def test_a_diverged_run_is_ok_with_a_warning(reference, tmp_path):
    from harness.runs.spec import Recipe

    assert reference["warnings"] == []
    diverged = RunSpec(arch="gpt2", size="nano", budget_flops=BUDGET, dtype="fp32", recipe=Recipe(lr=30.0))
    record = train(diverged, tmp_path, progress=False).record
    assert record["status"] == "ok" and record["final_val_loss"] > record["unigram_val_loss"]
    assert len(record["warnings"]) == 1 and "above the unigram baseline" in record["warnings"][0]
    assert load_record(tmp_path / diverged.run_id())["warnings"] == record["warnings"]


def test_quality_warning_when_the_final_loss_is_above_unigram():
    from harness.cli.run import warning_lines
    from harness.reporting.inputs import warning_notes
    from harness.runs.validation import quality_warnings

    record = {"run_id": "r", "final_val_loss": 6.5, "unigram_val_loss": 5.9}
    warnings = quality_warnings(record)
    assert len(warnings) == 1 and "above the unigram baseline 5.900" in warnings[0]
    assert quality_warnings({"final_val_loss": 4.0, "unigram_val_loss": 5.9}) == []
    record["warnings"] = warnings
    assert warning_lines(record) == [f"warning: {warnings[0]}"]
    assert warning_notes([record]) == [f"Run `r`: warning: {warnings[0]}."]


def test_dry_runs_say_what_training_would_do_with_each_run_directory(tmp_path):
    from harness.runs.run_dir import planned_action

    def run(name: str, status: str | None, checkpoint: bool) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        if status:
            (run_dir / "record.json").write_text(json.dumps({"schema_version": 1, "status": status}))
        if checkpoint:
            (run_dir / "checkpoint.pt").write_bytes(b"")
        return run_dir

    assert planned_action(tmp_path / "absent") == "train"
    assert planned_action(run("done", "ok", True)) == "reuse"
    assert planned_action(run("killed", "interrupted", True)) == "resume"
    assert planned_action(run("failed-early", "failed", False)) == "train"
    assert planned_action(run("no-record", None, True)) == "train"  # train() starts over without a record
