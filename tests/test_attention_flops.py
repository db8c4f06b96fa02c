"""One attention FLOP convention for dense and banded layers, chosen and recorded; token-matched arms."""

from __future__ import annotations

import json

import pytest
import torch

import architectures
from harness.cli import main as cli_main
from harness.flops import attention_keys_per_query, forward_breakdown, train_flops_per_token
from harness.runs.spec import Recipe, RunSpec
from harness.training.trainer import train


def mask_entries_per_query(seq_len: int, window: int | None) -> float:
    """Brute force: count the True entries of the layer's causal (banded: causal band) mask, per query."""
    position = torch.arange(seq_len)
    distance = position[:, None] - position[None, :]
    allowed = distance >= 0
    if window is not None:
        allowed &= distance < window
    return allowed.sum().item() / seq_len


@pytest.mark.parametrize("seq_len", [1, 7, 64, 256, 300])
@pytest.mark.parametrize("window", [None, 1, 16, 32, 64, 512])
@pytest.mark.parametrize("block", [8, 16, 64])
def test_causal_count_equals_a_brute_force_mask_count(seq_len, window, block):
    counted = attention_keys_per_query(seq_len, window, block, "causal")
    assert counted == pytest.approx(mask_entries_per_query(seq_len, window), rel=1e-12)


def test_full_convention_is_executed_keys_and_causal_is_about_half_for_dense():
    assert attention_keys_per_query(256, None, 16, "full") == 256
    assert attention_keys_per_query(256, 32, 16, "full") == 32 + 16
    assert attention_keys_per_query(256, None, 16, "causal") == (256 + 1) / 2


def test_banded_saving_is_smaller_under_the_causal_convention():
    """Counted one way for both, gpt3-mini's banded layers save ~3.5 % of training FLOPs, not ~6 %."""
    gpt2, gpt3 = (architectures.get(a).config("mini") for a in ("gpt2", "gpt3"))
    full = 1 - train_flops_per_token(gpt3, 256, "full") / train_flops_per_token(gpt2, 256, "full")
    causal = 1 - train_flops_per_token(gpt3, 256, "causal") / train_flops_per_token(gpt2, 256, "causal")
    assert 0.05 < full < 0.07 and 0.025 < causal < 0.045


def test_unknown_convention_is_one_sentence():
    config = architectures.get("gpt2").config("nano")
    with pytest.raises(ValueError, match="unknown attention FLOP convention 'half'; use one of: causal, full"):
        forward_breakdown(config, attention_flops="half")
    with pytest.raises(ValueError, match="causal, full"):
        RunSpec(arch="gpt2", size="nano", attention_flops="half")


def test_flops_command_and_run_record_agree_on_the_convention(tmp_path, capsys):
    spec = RunSpec(arch="gpt3", size="nano", budget_flops=3e10, seed=0, eval_interval=1000)
    record = train(spec, tmp_path, progress=False).record
    assert record["attention_flops"] == "causal" and "attention_flops=causal" in record["flop_convention"]
    assert record["match"] == "compute"
    assert cli_main(["flops", "--arch", "gpt3", "--size", "nano", "--set", f"vocab_size={record['data']['vocab_size']}",
                     "--attention-flops", "causal", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_flops_per_token"] == pytest.approx(record["train_flops_per_token"], rel=1e-12)
    assert summary["convention"] == record["flop_convention"]
    # MFU keeps PaLM's convention and says so
    assert "attention_flops=full" in record["mfu_convention"]


def test_full_convention_changes_the_plan_and_the_run_id():
    causal = RunSpec(arch="gpt2", size="nano", budget_flops=1e11)
    full = RunSpec(arch="gpt2", size="nano", budget_flops=1e11, attention_flops="full")
    assert causal.run_id() != full.run_id()


def test_compute_match_stays_within_one_step_of_the_budget(tmp_path):
    for arch in ("gpt2", "gpt3"):
        record = train(RunSpec(arch=arch, size="nano", budget_flops=5e10, eval_interval=1000), tmp_path,
                       progress=False).record
        flops_per_step = record["train_flops_per_token"] * record["tokens_per_step"]
        assert record["flops_used"] <= 5e10 < record["flops_used"] + flops_per_step


def test_token_match_gives_every_architecture_the_reference_tokens(tmp_path):
    from harness.sweeps.compare import SweepOptions, plan_sweep

    options = SweepOptions(archs=("gpt1", "gpt2", "gpt3", "gpt4"), sizes=("nano",), budgets=(5e10,), match="tokens")
    plan = plan_sweep(options)
    tokens = {spec.train_tokens for spec in plan.specs}
    assert len(tokens) == 1
    records = [train(spec, tmp_path, progress=False).record for spec in plan.specs]
    assert {r["tokens"] for r in records} == {r["train_tokens"] for r in records} == tokens
    assert {r["match"] for r in records} == {"tokens"}
    # the reference (gpt2) trains what its compute-matched twin trains; the others spend different FLOPs
    reference = next(r for r in records if r["arch"] == "gpt2")
    twin = train(RunSpec(arch="gpt2", size="nano", budget_flops=5e10, eval_interval=1000), tmp_path, progress=False).record
    assert reference["tokens"] == twin["tokens"]
    assert len({r["flops_used"] for r in records}) > 1


def test_token_count_must_be_positive():
    with pytest.raises(ValueError, match="--tokens must be a positive whole number"):
        RunSpec(arch="gpt2", size="nano", train_tokens=0)
    with pytest.raises(ValueError, match="fewer than one step"):
        from harness.flops import plan_tokens
        plan_tokens(10, 1e6, 1024)
