"""Training methods through the one engine: top:N trains what it names at the FLOPs it states, and
every method (pretrain, full, lora, top:N) resumes after SIGKILL to the uninterrupted result;
fine-tuning holds the run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from architectures import build
from harness.flops import forward_flops_per_token
from harness.flops.cross_checks import flop_counter_count
from harness.runs.lock import RunLocked
from harness.runs.records import load_record
from harness.runs.run_dir import load_checkpoint, load_run_model
from harness.runs.spec import RunSpec
from harness.threads import torch_threads
from harness.training.finetune import FinetuneSpec, finetune, flops_per_token
from harness.training.methods import get_method
from harness.training.methods.base import trainable_names
from harness.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic?n_train=200000&n_val=20000"
PRETRAIN_BUDGET = 1.1e10  # gpt2 nano: 12 steps of 16 x 64 tokens
STEPS = 12
TIMEOUT_S = 300

# The CLI with one fault (HARNESS_TEST_FAULT): kill:N SIGKILLs the process in its N-th training
# forward pass; pause:N:DIR creates DIR/paused in the N-th and waits until DIR/go exists.
WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import architectures.model as model_module
    from harness.cli import main

    kind, n, *rest = os.environ.get("HARNESS_TEST_FAULT", "none:0").split(":", 2)
    original, calls = model_module.GPT.forward, [0]

    def forward(self, idx, targets=None, **kwargs):
        if targets is not None and self.training:
            calls[0] += 1
            if calls[0] == int(n) and kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if calls[0] == int(n) and kind == "pause":
                folder = Path(rest[0])
                (folder / "paused").write_text(str(os.getpid()))
                while not (folder / "go").exists():
                    time.sleep(0.05)
        return original(self, idx, targets=targets, **kwargs)

    model_module.GPT.forward = forward
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A briefly pre-trained gpt2 nano on a small synthetic corpus."""
    root = tmp_path_factory.mktemp("parent")
    return train(RunSpec(arch="gpt2", size="nano", data=DATA, budget_flops=1e10, dtype="fp32"), root,
                 progress=False).run_dir


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("worker") / "worker.py"
    path.write_text(WORKER)
    return path


def finetune_budget(parent: Path, method: str, steps: int = STEPS) -> float:
    """The fine-tuning budget that buys exactly ``steps`` steps of ``method`` on task:facts."""
    model, _, record = load_run_model(parent)
    spec = FinetuneSpec(parent=str(parent), data="task:facts", method=method, dtype="fp32").resolve(record, model.config)
    return (steps + 0.5) * flops_per_token(model.config, spec)["total"] * spec.recipe.batch_tokens


# ---- top:N: what trains, what it costs, that it learns ----------------------------------------


def test_top_n_trains_exactly_the_top_blocks_and_final_norm(parent, tmp_path):
    model = build("gpt2", size="nano")  # 2 blocks
    get_method("top:1").prepare(model)
    names = set(trainable_names(model))
    expected = {name for name, _ in model.named_parameters() if name.startswith(("blocks.1.", "ln_f."))}
    assert names == expected and "ln_f.weight" in names and "blocks.1.attn.qkv.weight" in names
    assert not any(name.startswith(("embed.", "lm_head.", "blocks.0.")) for name in names)

    spec = FinetuneSpec(parent=str(parent), data="task:facts", method="top:1", budget_flops=1e10, dtype="fp32")
    result = finetune(spec, tmp_path, progress=False)
    record, before = result.record, load_checkpoint(parent / "checkpoint.pt")["model"]
    after = load_checkpoint(result.run_dir / "checkpoint.pt")["model"]
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    assert changed == {name for name in expected if name in after}  # the tied head is stored as the embedding
    assert record["trainable_params"] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert 0 < record["fraction_trainable"] < 0.5 and record["finetune"]["method"] == "top:1"
    assert result.run_dir.name.startswith("ft-top1-")


@pytest.mark.parametrize("arch, blocks", [("gpt1", 1), ("gpt2", 1), ("gpt2", 2), ("gpt4", 1)])
def test_top_n_flops_match_torch_flop_counter(arch, blocks):
    """FlopCounterMode over the forward and the backward that runs equals the stated count, up to torch's
    SDPA backward (2.5 x forward where the convention says 2 x) in the trained dense blocks: gpt1/gpt2
    layers are all dense (the full model's surplus × N / n_layer); gpt4's top layer is banded (no SDPA)."""
    torch.manual_seed(0)
    model = build(arch, size="nano")
    idx = torch.randint(0, model.config.vocab_size, (2, 64))
    tokens = idx.numel()
    surplus_all = flop_counter_count(model, idx, backward=True, cpu_sdpa=True).flops - \
        3 * tokens * forward_flops_per_token(model.config, 64, "full")  # measured = executed work
    method = get_method(f"top:{blocks}")
    method.prepare(model)
    measured = flop_counter_count(model, idx, backward=True, cpu_sdpa=True).flops
    stated = method.flops_per_token(model.config, 64, tokens, "full")
    expected_surplus = 0.0 if arch == "gpt4" else surplus_all * blocks / model.config.n_layer
    assert measured - tokens * stated["total"] == pytest.approx(expected_surplus, abs=1)
    assert stated["total"] < 3 * forward_flops_per_token(model.config, 64, "full")
    assert stated["total"] == pytest.approx(sum(v for k, v in stated.items() if k != "total"))


def test_top_n_lowers_the_validation_loss(parent, tmp_path):
    spec = FinetuneSpec(parent=str(parent), data="task:facts", method="top:1", budget_flops=2e10)
    record = finetune(spec, tmp_path, progress=False).record
    assert record["status"] == "ok"
    assert record["val_loss_after"] < record["val_loss_before"] - 0.1
    assert record["flops_used"] <= record["budget_flops"]
    assert record["flops_used"] == pytest.approx(record["steps"] * record["tokens_per_step"]
                                                 * record["train_flops_per_token"])
    assert "top:N" in record["flop_convention"]


@pytest.mark.parametrize("method", ["top:0", "top:3", "topx", "bogus"])
def test_bad_method_is_one_sentence(parent, method):
    with pytest.raises(ValueError, match=r"--method"):
        finetune(FinetuneSpec(parent=str(parent), data="task:facts", method=method), progress=False)


# ---- every method resumes after SIGKILL ------------------------------------------------------


def command(method: str, parent: Path) -> list[str]:
    if method == "pretrain":
        return ["run", "--arch", "gpt2", "--size", "nano", "--data", DATA, "--budget", str(PRETRAIN_BUDGET),
                "--dtype", "fp32", "--checkpoint-interval", "3", "--no-eval"]
    return ["finetune", "--parent", str(parent), "--data", "task:facts", "--method", method, "--dtype", "fp32",
            "--budget", repr(finetune_budget(parent, method)), "--checkpoint-interval", "3"]


def in_process(method: str, parent: Path, root: Path):
    with torch_threads(1):
        if method == "pretrain":
            return train(RunSpec(arch="gpt2", size="nano", data=DATA, budget_flops=PRETRAIN_BUDGET, dtype="fp32"),
                         root, progress=False)
        return finetune(FinetuneSpec(parent=str(parent), data="task:facts", method=method, dtype="fp32",
                                     budget_flops=finetune_budget(parent, method)), root, progress=False)


def cli(worker: Path, argv: list[str], results: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(results), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("HARNESS_TEST_FAULT", None)
    if fault:
        env["HARNESS_TEST_FAULT"] = fault
    return subprocess.run([sys.executable, str(worker), *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["pretrain", "full", "lora", "top:1"])
def test_every_method_resumes_after_sigkill_to_the_uninterrupted_result(method, parent, worker, tmp_path):
    killed = cli(worker, command(method, parent), tmp_path / "killed", fault="kill:8")  # in step 8; checkpoint at 6
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = next(path for path in (tmp_path / "killed").iterdir() if path.is_dir())
    assert load_record(run_dir)["status"] == "running" and load_checkpoint(run_dir / "checkpoint.pt")["step"] == 6
    finished = cli(worker, command(method, parent), tmp_path / "killed")
    assert finished.returncode == 0, finished.stderr[-2000:]
    straight = in_process(method, parent, tmp_path / "straight")
    resumed = load_record(run_dir)
    assert resumed["run_id"] == straight.record["run_id"] == run_dir.name
    assert resumed["status"] == "ok" and resumed["steps"] == straight.record["steps"] == STEPS
    assert resumed["final_val_loss"] == pytest.approx(straight.record["final_val_loss"], rel=1e-6)
    assert losses(run_dir) == pytest.approx(losses(straight.run_dir), rel=1e-6) and len(losses(run_dir)) == STEPS
    a, b = (load_checkpoint(d / "checkpoint.pt") for d in (run_dir, straight.run_dir))
    assert all(torch.allclose(a["model"][key], b["model"][key], atol=1e-6) for key in b["model"])
    assert ("adapter" in a) == (method == "lora")


# ---- the run lock --------------------------------------------------------------------------


def test_finetuning_holds_the_run_lock(parent, worker, tmp_path):
    """While one process fine-tunes a run, a second fine-tune of the same spec is refused (RunLocked)."""
    argv = command("top:1", parent)
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "HARNESS_TEST_FAULT":
           f"pause:2:{tmp_path}", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(worker), *argv], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + TIMEOUT_S
        while not (tmp_path / "paused").exists():
            assert process.poll() is None and time.time() < deadline, "the fine-tune never reached its second step"
            time.sleep(0.05)
        spec = FinetuneSpec(parent=str(parent), data="task:facts", method="top:1", dtype="fp32",
                            budget_flops=finetune_budget(parent, "top:1"))
        with pytest.raises(RunLocked, match=f"PID {process.pid}"):
            finetune(spec, tmp_path, progress=False)
    finally:
        (tmp_path / "go").write_text("")
        process.wait(timeout=TIMEOUT_S)
    assert process.returncode == 0, process.stderr.read()[-2000:]
    assert finetune(spec, tmp_path).reused


# ---- compare's adaptation stage ----------------------------------------------------------------


def test_compare_adaptation_stage_runs_top_n(results_tmp):
    from harness.cli import main as cli_main

    argv = ["compare", "--archs", "gpt2", "--size", "nano", "--budget", "6e9", "--seeds", "1", "--no-eval",
            "--data", DATA, "--finetune-data", "task:facts", "--finetune-budget", "4e9",
            "--finetune-methods", "top:1,full", "--name", "adapt-top"]
    assert cli_main(argv) == 0
    report_dir = results_tmp.parent / "reports" / "adapt-top"
    runs = json.loads((report_dir / "runs.json").read_text())
    assert runs["finetune"]["methods"] == ["top:1", "full"]
    records = [load_record(results_tmp / run_id) for run_id in runs["finetune"]["run_ids"]]
    assert [r["finetune"]["method"] for r in records] == ["top:1", "full"]
    assert records[0]["fraction_trainable"] < records[1]["fraction_trainable"] == 1.0
    assert records[0]["steps"] > records[1]["steps"]  # top:1's cheaper steps buy more tokens at one budget
    text = (report_dir / "report.md").read_text().split("## Adaptation")[1]
    rows = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| gpt2")]
    assert rows == ["full", "top:1"] and "**top:N**" in text


# ---- data parallelism ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["top:1", "lora"])
def test_two_ranks_finetune_like_one_with_the_same_global_batch(method, parent, tmp_path):
    """torchrun with 2 gloo ranks (8 rows each) equals one process (16 rows): same run id, losses, result."""
    argv = command(method, parent)
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(tmp_path / "ddp"), "OMP_NUM_THREADS": "1",
           "TORCHELASTIC_ERROR_FILE": "", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("HARNESS_TEST_FAULT", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "harness", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = in_process(method, parent, tmp_path / "one")
    ddp_dir = tmp_path / "ddp" / straight.run_dir.name
    record = load_record(ddp_dir)
    assert record["status"] == "ok" and record["world_size"] == 2 and record["recipe"]["micro_batch_per_rank"] == 8
    assert record["steps"] == straight.record["steps"] == STEPS
    assert losses(ddp_dir) == pytest.approx(losses(straight.run_dir), rel=1e-5)
    assert record["val_loss_after"] == pytest.approx(straight.record["val_loss_after"], rel=1e-5)
