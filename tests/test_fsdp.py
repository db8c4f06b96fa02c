"""FSDP2 (``--parallel fsdp2``) on the CPU with gloo: the same numbers as one process, sharded checkpoints.

- Two ranks equal one process on the same rows: gradients after the first backward, parameters
  after SGD with momentum (its update is proportional to the gradient, so an averaging error —
  a sum where a mean was asked — shows; AdamW's scale invariance would hide it) and after the
  real AdamW recipe; gpt2 and gpt4 (MoE, tied embeddings, an odd vocabulary and 3 experts, so
  shards are padded). See tests/fsdp_equivalence_worker.py.
- ``torchrun ... run --parallel fsdp2`` ends at the one-process run's validation loss and
  leaves the ordinary ``checkpoint.pt``; a SIGKILL mid-run, then the same command, resumes
  from the sharded checkpoint to the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.runs import run_dir as run_files
from harness.runs.records import load_record
from harness.runs.spec import Recipe, RunSpec
from harness.threads import torch_threads
from harness.training.optim import make_optimizer
from harness.training.parallel import check_parallel
from harness.training.trainer import TrainingFailed, train

REPO = Path(__file__).resolve().parents[1]
BUDGET = 1.1e10  # gpt2 nano: 12 steps of 16 x 64 tokens
ARGS = ["run", "--arch", "gpt2", "--size", "nano", "--budget", str(BUDGET), "--dtype", "fp32", "--micro-batch", "8",
        "--checkpoint-interval", "3", "--no-eval", "--parallel", "fsdp2"]
TIMEOUT_S = 300

# The CLI under torchrun; HARNESS_TEST_FAULT=kill:RANK:N SIGKILLs that rank in its N-th training forward.
WORKER = textwrap.dedent(
    """
    import os, signal, sys
    import architectures.model as model_module
    from harness.cli import main

    kind, rank, n = os.environ.get("HARNESS_TEST_FAULT", "none:0:0").split(":")
    original, calls = model_module.GPT.forward, {"n": 0}

    def forward(self, idx, targets=None, **kwargs):
        if targets is not None and self.training and os.environ.get("RANK") == rank:
            calls["n"] += 1
            if calls["n"] == int(n) and kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return original(self, idx, targets=targets, **kwargs)

    model_module.GPT.forward = forward
    sys.exit(main(sys.argv[1:]))
    """
)


def torchrun(target: list[str], results: Path | None = None, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHELASTIC_ERROR_FILE": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("HARNESS_TEST_FAULT", None)
    if results is not None:
        env["HARNESS_RESULTS_DIR"] = str(results)
    if fault:
        env["HARNESS_TEST_FAULT"] = fault
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@contextlib.contextmanager
def counting_training_forwards(monkeypatch):
    """``{"n": training forward passes}`` while the block runs (sharded models count too: same class)."""
    import architectures.model as model_module

    original, calls = model_module.GPT.forward, {"n": 0}

    def forward(self, idx, targets=None, **kwargs):
        if targets is not None and self.training:
            calls["n"] += 1
        return original(self, idx, targets=targets, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(model_module.GPT, "forward", forward)
        yield calls


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- two ranks equal one process ----------------------------------------------------------------

@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def equivalence(request, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp(request.param) / "results.json"
    done = torchrun([str(REPO / "tests" / "fsdp_equivalence_worker.py"), request.param, str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"arch": request.param, **json.loads(out.read_text())}


def test_gradients_after_the_first_backward_equal_one_process(equivalence):
    assert equivalence["grad_scale"] > 1e-2  # gradients that a factor of 2 would change visibly
    assert equivalence["grad_difference"] < 1e-6


def test_sgd_with_momentum_steps_equal_one_process(equivalence):
    # a summed instead of averaged gradient would double every update: ~sgd_moved apart
    assert equivalence["sgd_moved"] > 0.1
    assert equivalence["sgd_difference"] < 1e-5


def test_the_adamw_recipe_equals_one_process(equivalence):
    assert equivalence["adamw_moved"] > 1e-3
    assert equivalence["adamw_difference"] < 2e-5
    for sharded, reference in equivalence["adamw_grad_norms"]:  # the clip sees the global norm
        assert sharded == pytest.approx(reference, rel=1e-4)


def test_shards_are_padded_tied_weights_stay_in_the_root_and_experts_are_sharded(equivalence):
    shards = equivalence["shards"]
    assert shards["token"] == [2049, 64]  # rank 0's half of 4097 rows (rank 1's 2048 are padded)
    assert shards["tied"] and shards["root_holds_token"]
    if equivalence["arch"] == "gpt4":
        assert shards["w_in"] == [2, 64, 128] and shards["w_in_placement"] == "(Shard(dim=0),)"  # 3 experts: 2 + 1


# ---- the CLI under torchrun -----------------------------------------------------------------------

def one_process_spec(**fields) -> RunSpec:
    """The CLI's spec (``ARGS``) as one process runs it: 1 rank x 2 micro-steps of 8 rows."""
    return RunSpec(arch="gpt2", size="nano", budget_flops=BUDGET, dtype="fp32", checkpoint_interval=3,
                   recipe=Recipe(micro_batch_size=8), **fields)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    """The uninterrupted run in one process."""
    with torch_threads(1):
        result = train(one_process_spec(), tmp_path_factory.mktemp("one_process"), progress=False)
    return {"record": result.record, "metrics": metrics(result.run_dir)}


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("worker") / "worker.py"
    path.write_text(WORKER)
    return path


def assert_equals_one_process(run_dir: Path, one_process: dict) -> None:
    record, reference = load_record(run_dir), one_process["record"]
    assert record["status"] == "ok" and record["steps"] == reference["steps"] == 12
    assert record["run_id"] == reference["run_id"]  # the strategy is not part of the run's identity
    assert record["params"] == reference["params"]  # counted once, over the full (unsharded) shapes
    assert record["final_val_loss"] == pytest.approx(reference["final_val_loss"], abs=1e-4)
    lines = metrics(run_dir)
    assert [m["step"] for m in lines] == list(range(1, 13))  # each step exactly once
    for name in ("train_loss", "grad_norm"):  # the clip sees the global norm of the sharded gradients
        assert [m[name] for m in lines] == pytest.approx([m[name] for m in one_process["metrics"]], abs=1e-4), name


def test_fsdp2_run_equals_one_process_and_leaves_an_ordinary_checkpoint(one_process, tmp_path):
    done = torchrun(["-m", "harness", *ARGS], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert_equals_one_process(run_dir, one_process)
    record = load_record(run_dir)
    assert record["parallel"]["strategy"] == "fsdp2" and record["parallel"]["mesh"] == [2]
    assert json.loads((run_dir / "config.json").read_text())["run"]["parallel"] == "fsdp2"
    # converted once at the end: no shards left, one file that eval/export/finetune read unchanged
    assert not (run_dir / run_files.SHARDED_CHECKPOINT_NAME).exists() and not (run_dir / "checkpoint_shards").exists()
    model, _, _ = run_files.load_run_model(run_dir)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 12 and sorted(checkpoint["model"]) == sorted(model.state_dict())
    optimizer = make_optimizer(model, RunSpec(arch="gpt2", size="nano").recipe, fused=False)
    optimizer.load_state_dict(checkpoint["optimizer"])  # numbered as a one-process optimizer's
    assert all(int(state["step"]) == 12 for state in optimizer.state.values())


def test_sigkill_then_the_same_command_resumes_from_the_sharded_checkpoint(one_process, worker, tmp_path, monkeypatch):
    killed = torchrun([str(worker), *ARGS], tmp_path, fault="kill:1:8")  # rank 1, step 8: after the step-6 shards
    assert killed.returncode != 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    pointer = torch.load(run_dir / run_files.SHARDED_CHECKPOINT_NAME, weights_only=True)
    assert pointer["step"] == 6 and pointer["world_size"] == 2
    shard_files = sorted(p.name for p in (run_dir / pointer["shards"]).iterdir())
    assert shard_files == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    assert not (run_dir / "checkpoint.pt").exists()
    assert run_files.planned_action(run_dir) == "resume"
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy)
    # the same command, the same fault: resumed at step 6, rank 1 makes only 6 more forwards and is not killed
    resumed = torchrun([str(worker), *ARGS], tmp_path, fault="kill:1:8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_equals_one_process(run_dir, one_process)
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "checkpoint_shards").exists()
    # the same shards resume in one process without FSDP too (loaded unsharded, no process group)
    with torch_threads(1), counting_training_forwards(monkeypatch) as forwards:
        train(one_process_spec(), copy.parent, progress=False)
    assert forwards["n"] == 6 * 2  # steps 7..12, 2 micro-steps each
    assert_equals_one_process(copy, one_process)


def test_fsdp2_resumes_from_an_ordinary_checkpoint(one_process, tmp_path, monkeypatch):
    """A run interrupted under --parallel single continues under fsdp2 (a mesh of one process)."""
    import torch.distributed as dist

    with torch_threads(1):
        stopped = train(one_process_spec(), tmp_path, progress=False, stop_after_steps=5)
        assert stopped.record["status"] == "interrupted"
        try:
            with counting_training_forwards(monkeypatch) as forwards:
                finished = train(one_process_spec(parallel="fsdp2"), tmp_path, progress=False)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    assert finished.record["parallel"]["strategy"] == "fsdp2"
    assert forwards["n"] == 7 * 2  # resumed: steps 6..12, 2 micro-steps each
    assert_equals_one_process(finished.run_dir, one_process)


def test_a_corrupt_shard_is_one_sentence(tmp_path):
    import torch.distributed as dist

    with torch_threads(1):
        try:  # fsdp2 in one process (a mesh of one), interrupted after 4 steps: sharded checkpoint at step 4
            stopped = train(one_process_spec(parallel="fsdp2"), tmp_path, progress=False, stop_after_steps=4)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        shard = stopped.run_dir / "checkpoint_shards" / "step-00000004" / "__0_0.distcp"
        shard.write_bytes(shard.read_bytes()[:100])
        with pytest.raises(ValueError, match=r"^sharded checkpoint .*step-00000004 cannot be loaded into this model "
                                             r"\(rank 0: EOFError\); move it away"):
            train(one_process_spec(), tmp_path, progress=False)


def test_a_shard_that_cannot_be_written_fails_the_record_with_one_line(tmp_path):
    import torch.distributed as dist

    spec = one_process_spec(parallel="fsdp2")
    run_dir = tmp_path / spec.run_id()
    run_dir.mkdir()
    (run_dir / "checkpoint_shards").write_text("a file where the shards folder goes")
    with torch_threads(1), pytest.raises(TrainingFailed):
        try:
            train(spec, tmp_path, progress=False)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    record = load_record(run_dir)
    assert record["status"] == "failed" and record["steps"] == 3
    assert record["error"] == (f"cannot write {run_dir}/checkpoint_shards/step-00000003: a part of the path is a file, "
                               f"not a folder (at step 3); the last good checkpoint is kept")


# ---- choosing a strategy --------------------------------------------------------------------------

def test_the_strategy_and_activation_checkpointing_do_not_change_the_run_id():
    base = RunSpec(arch="gpt2", size="nano")
    assert base.parallel == "single"  # one process, no torchrun
    for changed in (dict(parallel="fsdp2"), dict(parallel="ddp"), dict(activation_checkpointing=True)):
        assert RunSpec(arch="gpt2", size="nano", **changed).run_id() == base.run_id()
    with pytest.raises(ValueError, match="unknown parallel strategy 'zero3'"):
        RunSpec(arch="gpt2", size="nano", parallel="zero3")


@pytest.mark.parametrize("name, world_size, message", [
    ("single", 2, "--parallel single runs one process, but torchrun started 2"),
    ("ddp", 1, "--parallel ddp needs 2 or more processes"),
])
def test_a_strategy_that_cannot_run_on_this_many_processes_is_one_sentence(name, world_size, message):
    with pytest.raises(ValueError, match=message):
        check_parallel(name, world_size)
    check_parallel("fsdp2", world_size)  # fsdp2 runs on any number of processes (a mesh of one too)


def test_run_and_compare_take_parallel_and_activation_checkpointing(results_tmp, capsys):
    from harness.cli import main as cli_main
    from harness.sweeps.compare import SweepOptions, plan_sweep

    assert cli_main(["run", "--arch", "gpt2", "--size", "nano", "--no-eval", "--parallel", "ddp"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --parallel ddp needs 2 or more processes (torchrun "
                                               "--nproc_per_node=N); use --parallel single for one process.")
    plan = plan_sweep(SweepOptions(archs=("gpt2", "gpt4"), sizes=("nano",), parallel="fsdp2",
                                   activation_checkpointing=True))
    assert {(spec.parallel, spec.activation_checkpointing) for spec in plan.specs} == {("fsdp2", True)}


def test_activation_checkpointing_gives_the_same_gradients():
    from architectures import build_from_config, get
    from harness.training.activation_checkpointing import checkpoint_activations

    config = get("gpt3").config("nano", dropout=0.1)  # dropout: recomputation must replay the same mask
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = build_from_config(config)
        if recompute:
            checkpoint_activations(model)
        x = torch.randint(0, config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)
        model(x, targets=x).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=1e-6, msg=name)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsdp2_on_one_gpu_uses_bf16_mixed_precision_and_matches_single(tmp_path):
    """One process, a mesh of one GPU: bf16 parameters for compute, fp32 reduction, compiled blocks."""
    import torch.distributed as dist

    records = {}
    for parallel in ("single", "fsdp2"):
        spec = RunSpec(arch="gpt4", size="nano", budget_flops=5e9, dtype="bf16", parallel=parallel)
        records[parallel] = train(spec, tmp_path / parallel, progress=False).record
    if dist.is_initialized():
        dist.destroy_process_group()
    fsdp = records["fsdp2"]
    assert fsdp["status"] == "ok" and fsdp["parallel"]["mixed_precision"] == {"param_dtype": "bf16",
                                                                               "reduce_dtype": "fp32"}
    assert fsdp["final_val_loss"] == pytest.approx(records["single"]["final_val_loss"], abs=5e-2)  # bf16 weights
    model, _, _ = run_files.load_run_model(tmp_path / "fsdp2" / fsdp["run_id"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the master weights, gathered
