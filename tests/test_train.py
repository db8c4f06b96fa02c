"""Training at matched compute: budgets, records, resume, failures."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
import torch

from harness.cli import main as cli_main
from harness.flops import train_flops_per_token
from harness.training.heldout import token_losses
from harness.training.optim import lr_at
from harness.runs.records import load_record
from harness.runs.spec import Recipe, RunSpec
from harness.training.trainer import TrainingFailed, train

def nano_spec(arch: str = "gpt2", budget: float = 3e10, **kwargs) -> RunSpec:
    return RunSpec(arch=arch, size="nano", budget_flops=budget, **kwargs)


def test_same_budget_uses_matched_flops_never_above(results_tmp):
    budget = 3e10
    records = [train(nano_spec(arch, budget), results_tmp).record for arch in ("gpt2", "gpt4")]
    for record in records:
        assert record["status"] == "ok"
        step_flops = record["train_flops_per_token"] * record["tokens_per_step"]
        assert record["flops_used"] <= budget
        assert budget - record["flops_used"] < step_flops
        assert record["flops_used"] == pytest.approx(record["steps"] * step_flops)
    a, b = records
    assert abs(a["flops_used"] - b["flops_used"]) <= max(
        r["train_flops_per_token"] * r["tokens_per_step"] for r in records
    )
    # the record names the kernels that ran: gpt4 trains through the capacity buffer, evaluates dropless
    assert b["kernels"]["training"]["moe_dispatch"].startswith("capacity 1.25 x N*k/E per expert")
    assert b["kernels"]["evaluation"]["moe_dispatch"].startswith("dropless: sorted by expert")


def test_record_is_complete_and_run_is_reused(results_tmp):
    result = train(nano_spec(budget=2e10), results_tmp)
    record = load_record(result.run_dir)
    for key in (
        "schema_version", "status", "arch", "size", "params", "non_embedding_params", "active_params",
        "forward_flops_per_token", "train_flops_per_token", "budget_flops", "flops_used", "tokens", "steps",
        "final_val_loss", "entropy_floor", "excess_loss", "per_segment", "wall_s", "tokens_per_s", "mfu",
        "device", "dtype", "torch_version", "git_commit", "seed", "data", "recipe",
    ):
        assert key in record, key
    assert set(record["per_segment"]) == {"markov", "recall", "copy", "facts"}
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["run_id"] == record["run_id"] and config["model"]["arch"] == "gpt2"
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, record["steps"] + 1))
    assert {"tokens", "flops", "wall_s", "train_loss", "lr"} <= set(lines[0])
    assert any("val_loss" in line for line in lines)
    checkpoint = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == record["steps"]
    again = train(nano_spec(budget=2e10), results_tmp)
    assert again.reused and again.run_dir == result.run_dir


def test_default_synthetic_run_beats_unigram(results_tmp):
    record = train(nano_spec("gpt3", budget=1e11), results_tmp).record
    assert record["excess_loss"] < record["unigram_excess_loss"]
    assert record["final_val_loss"] > record["entropy_floor"] - 0.05  # cannot beat the floor (up to sampling noise)


def test_resume_matches_uninterrupted_run(tmp_path):
    spec = nano_spec("gpt1", budget=2.5e10)  # gpt1: dropout on, so RNG state must be restored too
    full = train(spec, tmp_path / "full").record
    partial = train(spec, tmp_path / "split", stop_after_steps=7)
    assert partial.record["status"] == "interrupted" and partial.record["steps"] == 7
    resumed = train(spec, tmp_path / "split", resume=True).record
    assert resumed["status"] == "ok" and resumed["steps"] == full["steps"]
    assert resumed["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-6)
    assert resumed["flops_used"] == full["flops_used"]
    full_lines = (tmp_path / "full" / full["run_id"] / "metrics.jsonl").read_text().splitlines()
    split_lines = (tmp_path / "split" / full["run_id"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["train_loss"] for l in split_lines] == pytest.approx(
        [json.loads(l)["train_loss"] for l in full_lines], rel=1e-6
    )


def test_non_finite_loss_marks_record_failed(results_tmp, monkeypatch):
    import architectures.model as model_module

    original = model_module.GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        out = original(self, idx, targets=targets, **kwargs)
        if targets is not None and self.training:
            calls["n"] += 1
            if calls["n"] > 3:
                out.loss = out.loss * float("nan")
                out.lm_loss = out.lm_loss * float("nan")
        return out

    monkeypatch.setattr(model_module.GPT, "forward", poisoned)
    spec = nano_spec(budget=2e10)
    with pytest.raises(TrainingFailed, match="nan at step 3"):
        train(spec, results_tmp)
    record = load_record(results_tmp / spec.run_id())
    assert record["status"] == "failed" and "nan" in record["error"]
    assert record["steps"] == 3 and math.isfinite(record["last_metrics"]["train_loss"])


def test_validation_restores_training_mode_when_the_forward_pass_raises():
    class Failing(torch.nn.Module):
        def forward(self, idx):
            raise RuntimeError("out of memory")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="out of memory"):
        token_losses(model, np.arange(100) % 7, seq_len=8, batch_size=2, device="cpu",
                     autocast=contextlib.nullcontext, max_tokens=64)
    assert model.training  # training goes on in train mode (dropout, MoE capacity) after a failed validation


def test_lr_schedule_warms_up_then_decays_to_floor():
    spec = nano_spec(recipe=Recipe(lr=1e-3, warmup_fraction=0.1))
    lrs = [lr_at(step, 100, spec.recipe) for step in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_text_run_bits_per_byte_beat_unigram(results_tmp, shared_data):
    corpus = shared_data / "corpora" / "tinyshakespeare.txt"
    spec = RunSpec(arch="gpt2", size="nano", data=str(corpus), vocab_size=512, budget_flops=1e11)
    record = train(spec, results_tmp).record
    assert record["data"]["kind"] == "text"
    assert record["val_bpb"] < record["unigram_val_bpb"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--arch", "gpt9", "--size", "nano"], "known architectures: gpt1, gpt2, gpt3, gpt4"),
        (["run", "--arch", "gpt2", "--size", "huge"], "known sizes"),
        (["run", "--arch", "gpt2", "--size", "nano", "--budget", "1e3"], "smaller than one training step"),
        (["run", "--arch", "gpt2", "--size", "nano", "--seq-len", "65"], "longer than the context"),
        (["run", "--arch", "gpt2", "--size", "nano", "--data", "/nonexistent.txt"], "nonexistent"),
        (["run", "--arch", "gpt2", "--size", "nano", "--set", "d_model=big"], "d_model"),
    ],
)
def test_bad_input_is_one_clear_sentence(results_tmp, capsys, argv, message):
    assert cli_main(argv + ["--no-eval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_planned_flops_match_analytic_count(results_tmp):
    spec = nano_spec("gpt3", budget=2e10)
    record = train(spec, results_tmp).record
    config = spec.model_config(record["data"]["vocab_size"])
    assert record["train_flops_per_token"] == train_flops_per_token(config, 64)
