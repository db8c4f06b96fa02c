"""Data parallelism under the real ``torchrun`` CLI (gloo on the CPU).

Two ranks with one micro-step each must give the run one rank gives with two micro-steps of
the same size (same global batch, same rows — ``get_batch``'s global row rule): the same
steps, FLOPs, train losses and validation loss within fp32 round-off. gpt4 is used because it
exercises everything DDP can trip on: MoE auxiliary terms (all-reduced for the metrics),
banded attention, and an image-prefix stub that text batches never give a gradient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.cli import main as cli_main
from harness.runs.records import load_record
from harness.runs.spec import Recipe, RunSpec
from harness.training.placement import micro_batch_per_rank
from harness.threads import torch_threads
from harness.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--size", "nano", "--budget", "1.5e10", "--micro-batch", "8", "--dtype", "fp32", "--no-eval"]
TIMEOUT_S = 240

# A torchrun worker that injects one fault on one rank, then runs the CLI unchanged:
# HARNESS_TEST_FAULT=raise:RANK:CALL raises in that rank's CALL-th training forward;
# sigint:RANK:CALL sends that rank (only) a SIGINT, as a Ctrl-C reaching one process would.
# After the CLI returns, each rank reports whether its process group is still initialised.
WORKER = textwrap.dedent(
    """
    import os, signal, sys
    import architectures.model as model_module
    from harness.cli import main

    kind, rank, call = os.environ.get("HARNESS_TEST_FAULT", "none:0:0").split(":")
    original, calls = model_module.GPT.forward, {"n": 0}

    def faulty(self, idx, targets=None, **kwargs):
        if targets is not None and self.training and int(os.environ.get("RANK", "0")) == int(rank):
            calls["n"] += 1
            if calls["n"] == int(call):
                if kind == "raise":
                    raise RuntimeError("injected failure")
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, idx, targets=targets, **kwargs)

    model_module.GPT.forward = faulty
    code = main(sys.argv[1:])
    import torch.distributed as dist
    print(f"rank {os.environ['RANK']}: process group initialised after the command: {dist.is_initialized()}",
          file=sys.stderr)
    sys.exit(code)
    """
)


def torchrun(results: Path, argv: list[str], *, nproc: int = 2, fault: str | None = None, script: Path | None = None):
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m harness ...`` (the real CLI)."""
    env = {
        **os.environ,
        "HARNESS_RESULTS_DIR": str(results),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "TORCHELASTIC_ERROR_FILE": "",
    }
    env.pop("HARNESS_TEST_FAULT", None)
    if fault:
        env["HARNESS_TEST_FAULT"] = fault
    target = [str(script)] if script else ["-m", "harness"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target, *argv]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def only_run(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir()]
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """gpt4 nano on 2 ranks × micro-batch 8 (one micro-step each), stopped by a Ctrl-C to rank 1 only, resumed.

    Two torchrun launches (the expensive part of these tests): the first is interrupted at step 6,
    the second continues with ``--resume`` at the same world size and finishes the run.
    """
    tmp = tmp_path_factory.mktemp("two_ranks")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    results = tmp / "results"
    stopped = torchrun(results, ["run", "--arch", "gpt4", *ARGS], fault="sigint:1:6", script=script)
    run_dir = only_run(results)
    interrupted = {
        "returncode": stopped.returncode,
        "stderr": stopped.stderr,
        "record": load_record(run_dir),
        "checkpoint_step": torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"],
        "metrics_steps": [m["step"] for m in metrics(run_dir)],
    }
    resumed = torchrun(results, ["run", "--arch", "gpt4", *ARGS, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"interrupted": interrupted, "stdout": resumed.stdout, "run_dir": run_dir, "record": load_record(run_dir)}


def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(two_ranks):
    stopped = two_ranks["interrupted"]
    assert stopped["returncode"] != 0, stopped["stderr"][-3000:]
    record = stopped["record"]
    assert record["status"] == "interrupted" and record["steps"] == 6, record["error"]
    assert record["error"] == "interrupted by a signal to another rank after step 6"  # rank 0 got none
    assert stopped["checkpoint_step"] == 6 and stopped["metrics_steps"] == list(range(1, 7))
    for rank in (0, 1):  # every rank destroyed its process group before exiting
        assert f"rank {rank}: process group initialised after the command: False" in stopped["stderr"]


def test_two_ranks_resumed_equal_one_rank_with_the_same_global_batch(two_ranks, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS_DIR", str(tmp_path))
    with torch_threads(1):  # 1 rank × 2 micro-steps of 8 = the same 16 rows per step, uninterrupted
        spec = RunSpec(arch="gpt4", size="nano", budget_flops=1.5e10, dtype="fp32", recipe=Recipe(micro_batch_size=8))
        one = train(spec, tmp_path, progress=False)
    two = two_ranks["record"]
    assert two["status"] == one.record["status"] == "ok"
    assert two["run_id"] == one.record["run_id"]  # the world size is not part of a run's identity
    assert (two["recipe"]["world_size"], two["recipe"]["grad_accum"]) == (2, 1)
    assert (one.record["recipe"]["world_size"], one.record["recipe"]["grad_accum"]) == (1, 2)
    for key in ("steps", "tokens", "flops_used", "tokens_per_step", "budget_flops"):
        assert two[key] == one.record[key], key  # FLOPs and tokens count the global batch
    assert two["final_val_loss"] == pytest.approx(one.record["final_val_loss"], abs=1e-5)
    a, b = metrics(one.run_dir), metrics(two_ranks["run_dir"])
    assert [m["step"] for m in b] == list(range(1, two["steps"] + 1))
    for name in ("train_loss", "moe_balance", "moe_z", "moe_dropped_fraction", "grad_norm"):
        assert [m[name] for m in b] == pytest.approx([m[name] for m in a], abs=1e-5), name
    assert [m.get("val_loss") for m in b] == pytest.approx([m.get("val_loss") for m in a], abs=1e-5)
    # rank 0 alone prints the summary; the checkpoint holds the unwrapped model and both RNG streams
    assert two_ranks["stdout"].count("gpt4 nano (seed 0): ok") == 1
    checkpoint = torch.load(two_ranks["run_dir"] / "checkpoint.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng_by_rank"]) == 2
    assert two["mfu"] is not None and two["world_size"] == 2


def test_a_crashing_rank_ends_the_job_and_marks_the_record_failed(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    results = tmp_path / "results"
    done = torchrun(results, ["run", "--arch", "gpt2", *ARGS], fault="raise:1:4", script=script)
    assert done.returncode != 0
    record = load_record(only_run(results))  # valid JSON, schema intact
    assert record["status"] == "failed"
    assert record["error"].startswith("rank 1 of 2: RuntimeError: injected failure (at step 3)")
    assert record["steps"] == 3 and "injected failure" in done.stderr


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_more_ranks_than_sequences_is_one_sentence_from_rank_0(results_tmp, capsys, monkeypatch, rank, printed):
    # what torchrun --nproc_per_node=2 sets; the batch is checked before the ranks rendezvous.
    # nano: seq_len 64, so --batch-tokens 64 is one sequence per step: it cannot be sharded over 2 ranks
    for name, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["run", "--arch", "gpt2", *ARGS, "--batch-tokens", "64"]) == 2
    err = capsys.readouterr().err.strip()
    expected = (
        "error: --nproc_per_node=2 is more ranks than the 1 sequence in a step (64 tokens / seq_len 64); "
        "use at most 1 rank or a larger --batch-tokens."
    )
    assert err == (expected if printed else "")
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("rank, own_error, printed", [("1", True, True), ("1", False, False), ("0", False, True)])
def test_the_rank_whose_own_error_ended_the_run_reports_it(results_tmp, capsys, monkeypatch, rank, own_error, printed):
    # train() raises TrainingFailed(raised_here=True) when this rank's own exception ended the run; rank 0
    # reports every failure. The messages carry no "rank N of" label: who prints is decided by that typed
    # signal, not by the text.
    import harness.training.trainer
    from harness.training.trainer import TrainingFailed

    def failing_train(*args, **kwargs):
        if own_error:
            raise TrainingFailed("run x failed: injected failure", raised_here=True)
        raise TrainingFailed("run x failed: training loss became nan at step 3")

    for name, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(harness.training.trainer, "train", failing_train)
    assert cli_main(["run", "--arch", "gpt2", *ARGS]) == 1
    assert capsys.readouterr().err.startswith("error: run x failed") == printed


def test_batch_split_over_ranks():
    assert micro_batch_per_rank(16, 8, 64, 1024, 2) == 8
    assert micro_batch_per_rank(16, 16, 64, 1024, 2) == 8  # a micro-batch above a rank's share shrinks to it
    assert micro_batch_per_rank(16, 4, 64, 1024, 2) == 4  # 2 micro-steps per rank
    with pytest.raises(ValueError, match="does not split evenly over 2 ranks; choose --batch-tokens as a multiple of 128"):
        micro_batch_per_rank(3, 8, 64, 192, 2)
    with pytest.raises(ValueError, match="not a multiple of micro-batch 3 x 2 rank"):
        micro_batch_per_rank(16, 3, 64, 1024, 2)
    with pytest.raises(ValueError, match="not a multiple of micro-batch 32 x 1 rank"):
        micro_batch_per_rank(16, 32, 64, 1024, 1)  # one process: unchanged rule


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_flag_on_a_cpu_machine_is_one_sentence(results_tmp, capsys):
    assert cli_main(["run", "--arch", "gpt2", "--size", "nano", "--device", "cuda", "--no-eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda was asked for but no CUDA device is available; use --device cpu."
