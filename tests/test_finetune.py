"""Fine-tuning (full and LoRA through peft): trainable share, learning, FLOP convention, masking,
merged export, resume after SIGKILL, and the adaptation stage of compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.pairs import encode_pairs, load_pairs
from harness.data.tokenizer import SyntheticTokenizer
from harness.training.finetune import FinetuneSpec, finetune, flops_per_token
from harness.training.lora import LoraSettings, adapter_param_count, apply_lora, load_adapter_state, lora_flops_per_token
from harness.runs.spec import RunSpec
from harness.runs.run_dir import load_checkpoint, load_run_model
from harness.training.trainer import train

REPO = Path(__file__).resolve().parents[1]
DATA = "synthetic?n_train=200000&n_val=20000"


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> dict[str, Path]:
    """Briefly pre-trained nano parents (gpt2 dense, gpt4 MoE) on a small synthetic corpus."""
    root = tmp_path_factory.mktemp("parents")
    out = {}
    for arch, budget in (("gpt2", 1e10), ("gpt4", 1e10)):
        out[arch] = train(RunSpec(arch=arch, size="nano", data=DATA, budget_flops=budget), root, progress=False).run_dir
    return out


def test_lora_trains_few_parameters_and_lowers_validation_loss(parents, tmp_path):
    spec = FinetuneSpec(parent=str(parents["gpt2"]), data="task:facts", method="lora", budget_flops=2e10)
    record = finetune(spec, tmp_path, progress=False).record
    model, _, _ = load_run_model(parents["gpt2"])
    assert record["status"] == "ok" and record["parent_run"] == parents["gpt2"].name
    assert record["trainable_params"] == adapter_param_count(model.config, spec.rank)
    peft_model = apply_lora(model, LoraSettings(spec.rank, spec.alpha))
    assert record["trainable_params"] == peft_model.get_nb_trainable_parameters()[0]  # peft's own count
    assert record["fraction_trainable"] < 0.05
    assert record["val_loss_after"] < record["val_loss_before"] - 0.5
    assert record["flops_used"] <= record["budget_flops"]
    assert record["flops_used"] == pytest.approx(record["steps"] * record["tokens_per_step"] * record["train_flops_per_token"])
    assert "3 x adapter FLOPs" in record["flop_convention"]
    again = finetune(FinetuneSpec(parent=str(parents["gpt2"]), data="task:facts", method="lora", budget_flops=2e10), tmp_path)
    assert again.reused and again.run_dir.name == record["run_id"]


def test_full_finetune_costs_three_forwards_and_trains_everything(parents, tmp_path):
    spec = FinetuneSpec(parent=str(parents["gpt2"]), data="task:facts", method="full", budget_flops=1e10)
    record = finetune(spec, tmp_path, progress=False).record
    assert record["fraction_trainable"] == 1.0
    assert record["train_flops_per_token"] == 3 * record["forward_flops_per_token"]
    assert record["val_loss_after"] < record["val_loss_before"]


@pytest.mark.parametrize("arch", ["gpt2", "gpt4"])
def test_lora_flops_match_torch_flop_counter(arch):
    """FlopCounterMode over forward + backward equals the stated convention, up to torch's SDPA backward
    (2.5 x forward, flash recompute; the convention says 2 x), the same surplus as in a full fine-tune."""
    from architectures import build
    from harness.flops import forward_flops_per_token
    from harness.flops.cross_checks import flop_counter_count

    torch.manual_seed(0)
    model = build(arch, size="nano")
    idx = torch.randint(0, model.config.vocab_size, (2, 64))
    sdpa_surplus = flop_counter_count(model, idx, backward=True, cpu_sdpa=True).flops - 3 * 128 * forward_flops_per_token(model.config, 64, "full")
    adapted = apply_lora(model, LoraSettings(rank=4, alpha=8))
    measured = flop_counter_count(adapted, idx, backward=True, cpu_sdpa=True).flops
    stated = lora_flops_per_token(model.config, 64, rank=4, tokens_per_forward=128, attention_flops="full")
    assert measured - 128 * stated["total"] == pytest.approx(sdpa_surplus, abs=1)
    assert stated["total"] < 3 * forward_flops_per_token(model.config, 64, "full")


def test_merged_checkpoint_equals_adapted_model_logits(parents, tmp_path):
    """The run directory's plain (merged) model gives the adapted model's logits; so does peft
    loading the saved adapter folder onto the parent. gpt4 covers the MoE expert adapters."""
    from peft import PeftModel

    spec = FinetuneSpec(parent=str(parents["gpt4"]), data="task:facts", method="lora", budget_flops=1e10)
    result = finetune(spec, tmp_path, progress=False)
    merged, _, record = load_run_model(result.run_dir)
    assert record["trainable_params"] == adapter_param_count(merged.config, spec.rank)
    base, _, _ = load_run_model(parents["gpt4"])
    adapted = apply_lora(base, LoraSettings(spec.rank, spec.alpha))
    load_adapter_state(adapted, load_checkpoint(result.run_dir / "checkpoint.pt")["adapter"])
    adapted.eval()
    idx = torch.randint(0, merged.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = adapted(idx).logits
        assert (reference - load_run_model(parents["gpt4"])[0](idx).logits).abs().max() > 1e-3  # the adapter matters
        assert torch.allclose(merged(idx).logits, reference, atol=1e-5, rtol=0)
        from_folder = PeftModel.from_pretrained(load_run_model(parents["gpt4"])[0], result.run_dir / "adapter").eval()
        assert torch.allclose(from_folder(idx).logits, reference, atol=1e-5, rtol=0)


def test_completion_only_loss_masks_the_prompt():
    tokenizer = SyntheticTokenizer(512)
    pairs = [("w8 w9 w10", "w11 w12"), ("w20", "w21"), ("w30 w31", "w32")]
    packed = encode_pairs(pairs, tokenizer, seq_len=16)
    x, y = packed.rows(np.arange(packed.n_rows))
    targets = y[y != -100].tolist()
    assert targets == [11, 12, 0, 21, 0, 32, 0]  # completions and their closing EOT, never a prompt token
    torch.manual_seed(0)
    from architectures import build

    model = build("gpt2", size="nano", vocab_size=512).eval()
    with torch.no_grad():
        loss = model(x, targets=y).lm_loss
        logp = torch.log_softmax(model(x).logits, -1)
    picked = [logp[r, t, y[r, t]] for r in range(y.shape[0]) for t in range(y.shape[1]) if y[r, t] != -100]
    assert float(loss) == pytest.approx(-float(torch.stack(picked).mean()), rel=1e-6)
    everything = -logp[:, :-1].gather(-1, x[:, 1:, None]).mean()  # what counting the prompt would give
    assert abs(float(loss) - float(everything)) > 1e-3


def test_generated_tasks_have_known_answers():
    train_pairs, val_pairs, info = load_pairs("task:reverse_recall?pairs=3&n_train=50&n_val=20")
    assert len(train_pairs) == 50 and len(val_pairs) == 20 and info["entropy_floor"] == 0.0
    for prompt, completion in val_pairs:
        words = prompt.split()
        body, query = words[1:-2], words[-1]
        keys, values = body[0::2], body[1::2]
        assert completion == keys[values.index(query)]
    assert set(train_pairs).isdisjoint(val_pairs)
    facts, facts_val, _ = load_pairs("task:facts?n_train=300")
    table = dict(facts_val)
    assert len(table) == 128 and all(table[p] == c for p, c in facts)  # one object per subject


def test_sigkill_then_resume_equals_uninterrupted(parents, tmp_path):
    parent = parents["gpt2"]
    spec = FinetuneSpec(parent=str(parent), data="task:facts", method="lora")
    _, _, parent_record = load_run_model(parent)
    model, _, _ = load_run_model(parent)
    spec.resolve(parent_record, model.config)
    budget = 40 * flops_per_token(model.config, spec)["total"] * spec.recipe.batch_tokens
    env = {**os.environ, "HARNESS_RESULTS_DIR": str(tmp_path / "killed"), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "harness", "finetune", "--run", str(parent), "--data", "task:facts",
               "--budget", repr(budget), "--checkpoint-interval", "1"]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = list((tmp_path / "killed").glob("*/metrics.jsonl"))
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        metrics = list((tmp_path / "killed").glob("*/metrics.jsonl"))
        if metrics and len(metrics[0].read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    run_dir = metrics[0].parent
    assert json.loads((run_dir / "record.json").read_text())["status"] == "running"  # killed mid-run
    torch.set_num_threads(1)
    resumed = finetune(FinetuneSpec(parent=str(parent), data="task:facts", method="lora", budget_flops=budget),
                       tmp_path / "killed").record
    straight = finetune(FinetuneSpec(parent=str(parent), data="task:facts", method="lora", budget_flops=budget),
                        tmp_path / "straight").record
    assert resumed["run_id"] == straight["run_id"] == run_dir.name
    assert resumed["status"] == "ok" and resumed["steps"] == straight["steps"] == 40
    assert resumed["val_loss_after"] == pytest.approx(straight["val_loss_after"], rel=1e-5)
    losses = [[json.loads(line)["train_loss"] for line in (root / run_dir.name / "metrics.jsonl").read_text().splitlines()]
              for root in (tmp_path / "killed", tmp_path / "straight")]
    assert len(losses[0]) == 40 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    a = load_checkpoint(tmp_path / "killed" / run_dir.name / "checkpoint.pt")["adapter"]
    b = load_checkpoint(tmp_path / "straight" / run_dir.name / "checkpoint.pt")["adapter"]
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in b)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "lora", "--rank", "0"], "--rank must be a positive integer"),
        (["--data", "task:nope"], "unknown task 'nope'"),
        (["--budget", "1"], "smaller than one training step"),
    ],
)
def test_bad_input_is_one_clear_sentence(parents, results_tmp, capsys, argv, message):
    from harness.cli import main as cli_main

    args = ["finetune", "--run", str(parents["gpt2"]), "--data", "task:facts", *argv]
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err


def test_compare_with_adaptation_stage_writes_the_report_section(results_tmp):
    from harness.cli import main as cli_main

    argv = ["compare", "--archs", "gpt2,gpt4", "--size", "nano", "--budget", "6e9", "--seeds", "2", "--no-eval",
            "--data", DATA, "--finetune-data", "task:facts", "--finetune-budget", "4e9", "--name", "adapt"]
    assert cli_main(argv) == 0
    report_dir = results_tmp.parent / "reports" / "adapt"
    runs = json.loads((report_dir / "runs.json").read_text())
    assert runs["finetune"]["methods"] == ["full", "lora"] and len(runs["finetune"]["run_ids"]) == 8
    assert "--finetune-data task:facts --finetune-budget 4000000000.0" in runs["command"]
    records = [json.loads((results_tmp / run_id / "record.json").read_text()) for run_id in runs["finetune"]["run_ids"]]
    assert {r["parent_run"] for r in records} == set(runs["run_ids"])
    assert all(r["flops_used"] <= 4e9 and r["status"] == "ok" for r in records)
    text = (report_dir / "report.md").read_text()
    assert "## Adaptation: fine-tuning at matched FLOPs" in text
    rows = [line for line in text.split("## Adaptation")[1].splitlines() if line.startswith("| gpt")]
    assert [row.split("|")[1:3] for row in rows] == [[" gpt2 ", " full "], [" gpt2 ", " lora r=2 "],
                                                      [" gpt4 ", " full "], [" gpt4 ", " lora r=2 "]]
    assert all(" ± " in row.split("|")[8] for row in rows)  # loss after: mean ± 95 % CI over 2 seeds
    assert len((report_dir / "adaptation.csv").read_text().splitlines()) == 1 + 8
    assert (report_dir / "figures" / "adaptation.png").exists()
    os.remove(report_dir / "report.md")
    assert cli_main(["report", "adapt"]) == 0  # regenerated from the records alone
    assert "## Adaptation" in (report_dir / "report.md").read_text()


def test_text_is_tokenized_with_the_parent_tokenizer_not_a_new_one(tmp_path):
    from harness.data.downstream import prepare_downstream
    from harness.data.tokenizer import train_bpe

    parent_tokenizer = train_bpe(["the parent's own text, about ships and the sea. " * 40], 300, cache_dir=tmp_path)
    corpus = tmp_path / "downstream.txt"
    corpus.write_text("".join(f"Speech {i}: fellow citizens, the union is strong.\n\n" for i in range(400)))
    data = prepare_downstream(f"{corpus}?doc_chars=800", parent_tokenizer, seq_len=32)
    assert data.data.tokenizer is parent_tokenizer and data.describe()["tokenizer"] == parent_tokenizer.name
    text_ids = [t for t in np.asarray(data.data.val_tokens).tolist() if t != parent_tokenizer.eot_id]
    assert "fellow citizens" in parent_tokenizer.decode(text_ids)
    with pytest.raises(ValueError, match="synthetic data .* cannot encode the text"):
        prepare_downstream(str(corpus), SyntheticTokenizer(512), seq_len=32)


def test_resolving_copies_the_recipe_and_hashes_the_dtype_this_machine_would_use(monkeypatch):
    """As for pre-training runs: the caller's Recipe is left alone, and a default-dtype fine-tune on
    a CPU with native bf16 and one without are different runs."""
    from architectures import build
    from harness import device as device_module
    from harness.runs.spec import Recipe

    config = build("gpt2", size="nano").config
    parent = {"size": "nano", "seq_len": 64, "recipe": {"micro_batch_size": 8, "batch_tokens": 1024}}
    recipe = Recipe()
    ids = {}
    for native_bf16 in (True, False):
        monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda native_bf16=native_bf16: native_bf16)
        spec = FinetuneSpec(parent="p", data="task:facts", recipe=recipe, device="cpu").resolve(parent, config)
        assert spec.dtype == ("bf16" if native_bf16 else "fp32") and spec.recipe.seq_len == 64
        ids[native_bf16] = spec.run_id("parent-run")
    assert recipe == Recipe() and ids[True] != ids[False]
    with pytest.raises(ValueError, match="seq_len 65 is longer than the context of 64"):
        FinetuneSpec(parent="p", data="task:facts", recipe=Recipe(seq_len=65)).resolve(parent, config)


def test_finetune_report_says_what_ran_alone_and_beside_its_parent(parents, results_tmp, assert_no_fill_ins):
    """A fine-tune's report names the method, parent, trainable share, FLOP convention and before → after."""
    import shutil

    from harness.evaluation import evaluate_run
    from harness.reporting.report import build_report

    results_tmp.mkdir(parents=True, exist_ok=True)
    parent = shutil.copytree(parents["gpt2"], results_tmp / parents["gpt2"].name)
    evaluate_run(parent, tasks="harness_facts", limit=3)
    record = finetune(FinetuneSpec(parent=str(parent), data="task:facts", method="lora", budget_flops=5e9),
                      results_tmp, progress=False).record
    for targets in ([record["run_id"]], [parent.name, record["run_id"]]):
        text = build_report(targets, name=f"ft-{len(targets)}").path.read_text()
        assert_no_fill_ins(text)
        assert "matched-compute comparison of pre-trained" in text and "3 × forward" not in text
        assert f"LoRA r = {record['finetune']['rank']}" in text and f"`{parent.name}`" in text
        assert f"({100 * record['fraction_trainable']:.2f} % of" in text
        assert record["flop_convention"] in text
        assert f"{record['val_loss_before']:.4f} → {record['val_loss_after']:.4f}" in text
    assert "| harness_facts | acc |" in text and "(n = 3) | not evaluated |" in text  # parent's, with n
    with pytest.raises(ValueError, match="neither fine-tunes nor their parents"):
        other = shutil.copytree(parents["gpt4"], results_tmp / parents["gpt4"].name)
        build_report([record["run_id"], other.name], name="ft-mixed")
