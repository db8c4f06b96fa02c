"""Hugging Face weights in and out, checked against ``transformers`` and lm-eval's ``hf`` backend.

Tiny random HF models (2 layers, d_model 32, every parameter with its own random values,
made by tools/make_tiny_hf_model.py) of GPT-2, OpenAI GPT and GPT-Neo (global + local
layers, window 4 < the 64-token inputs) are imported and must give transformers' logits
to 1e-4 (fp32) and lm-eval's log-likelihoods to 1e-3; exports must load back with
``from_pretrained`` to the same logits; a wrong mapping must fail the same comparison.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

if os.environ.get("CI") != "true":  # CI installs the dev extra: a missing transformers fails there
    pytest.importorskip("transformers")

from architectures import build, build_from_config  # noqa: E402
from harness.data.tokenizer import ImportedTokenizer, load_tokenizer, train_bpe  # noqa: E402
from harness.evaluation import HarnessLM  # noqa: E402
from harness.runs.run_dir import load_run_model  # noqa: E402
from harness.hf import config_from_hf, export_run, import_checkpoint, resolve_checkpoint  # noqa: E402
from harness.hf.parity import load_hf_model, logits_max_difference, random_ids  # noqa: E402
from harness.hf.source import sha256_file  # noqa: E402
from harness.hf.weights import state_from_hf  # noqa: E402
from harness.io import torch_save_atomic, write_json_atomic  # noqa: E402
from harness.runs.records import load_record, write_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("gpt2", "openai-gpt", "gpt-neo")
ARCH = {"gpt2": "gpt2", "openai-gpt": "gpt1", "gpt-neo": "gpt3"}
LOGIT_TOL = 1e-4
LOGLIK_TOL = 1e-3
WRONG = 1e-2  # a wrong mapping must move some logit by more than this


def _tool():
    spec = importlib.util.spec_from_file_location("make_tiny_hf_model", ROOT / "tools" / "make_tiny_hf_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """kind → (HF checkpoint folder, imported run folder)."""
    root = tmp_path_factory.mktemp("hf")
    make = _tool().make_tiny_model
    out = {}
    for seed, kind in enumerate(KINDS):
        source = make(kind, root / f"tiny-{kind}", seed=seed, window=4)
        out[kind] = (source, import_checkpoint(source, root / "results" / f"imported-{kind}"))
    return out


def _ids(model) -> torch.Tensor:
    return random_ids(model.config.vocab_size, model.config.context, seed=1)


# ----------------------------------------------------------------------------- import


@pytest.mark.parametrize("kind", KINDS)
def test_imported_run_gives_transformers_logits(tiny, kind):
    source, run = tiny[kind]
    model, tokenizer, record = load_run_model(run)  # the loader eval, bench and finetune use
    hf_model = load_hf_model(source)
    ids = _ids(model)
    assert float(model(ids).logits.detach().std()) > 0.3  # logits that can tell mappings apart
    assert logits_max_difference(hf_model, model, ids) <= LOGIT_TOL
    assert record["status"] == "ok" and record["arch"] == ARCH[kind]
    assert record["budget_flops"] is None and record["flops_used"] is None and record["data"]["kind"] == "text"
    imported = record["imported"]
    assert imported["weights"] == [{"file": "model.safetensors", "sha256": sha256_file(source / "model.safetensors")}]
    assert imported["transformers_config"] == json.loads((source / "config.json").read_text())
    zero_qkv_biases = 3 * model.config.d_attn * model.config.n_layer if kind == "gpt-neo" else 0  # GPT-Neo has none
    assert imported["source_params"] == sum(p.numel() for p in hf_model.parameters())
    assert record["params"] == imported["source_params"] + zero_qkv_biases
    assert bool(imported["notes"]) == (kind == "gpt-neo")


def test_gpt_neo_layers_and_window_map_to_gpt3(tiny):
    model, _, _ = load_run_model(tiny["gpt-neo"][1])
    assert model.config.attention_pattern == ("dense", "banded") and model.config.window == 4
    assert [block.attn.window for block in model.blocks] == [None, 4]


def test_imported_tokenizer_encodes_like_transformers(tiny):
    from transformers import AutoTokenizer

    source, run = tiny["gpt2"]
    ours = load_tokenizer(run / "tokenizer")
    theirs = AutoTokenizer.from_pretrained(str(source))
    assert isinstance(ours, ImportedTokenizer) and ours.eot_id == theirs.eos_token_id
    for text in ["The quick brown fox.", " leading space", "a<|endoftext|>b", "naïve café ✓", ""]:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ours.encode(text)) == text


# ----------------------------------------------------------------------------- lm-eval


def _requests():
    from lm_eval.api.instance import Instance

    pairs = [("The quick brown", " fox jumps"), ("A language model", " assigns a probability"),
             ("Robert Boulter is", " an English actor."), ("", "Tiny models")]
    long_text = " ".join(["Pre-training once and adapting many times is the defining move."] * 6)  # > 64 tokens
    loglik = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    rolling = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(["Short text here.", long_text])]
    return loglik, rolling


@pytest.mark.parametrize("kind", KINDS)
def test_lm_eval_loglikelihoods_match_hf_backend(tiny, kind):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    source, run = tiny[kind]
    model, tokenizer, _ = load_run_model(run)
    hf = HFLM(pretrained=load_hf_model(source), tokenizer=AutoTokenizer.from_pretrained(str(source)),
              backend="causal", device="cpu", batch_size=2, max_length=model.config.context)
    ours = HarnessLM(model, tokenizer, batch_size=2)
    loglik, rolling = _requests()
    theirs_ll, ours_ll = hf.loglikelihood(loglik, disable_tqdm=True), ours.loglikelihood(loglik, disable_tqdm=True)
    for (a, greedy_a), (b, greedy_b) in zip(theirs_ll, ours_ll):
        assert abs(a - b) <= LOGLIK_TOL and greedy_a == greedy_b
    for a, b in zip(hf.loglikelihood_rolling(rolling, disable_tqdm=True), ours.loglikelihood_rolling(rolling, disable_tqdm=True)):
        assert abs(a - b) <= LOGLIK_TOL and a < -10  # a real sum over many tokens, not an empty one


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("kind", KINDS)
def test_export_loads_back_with_from_pretrained(tiny, kind, tmp_path):
    from transformers import AutoTokenizer

    source, run = tiny[kind]
    export = export_run(run, tmp_path / "exported")
    model, tokenizer, _ = load_run_model(run)
    assert json.loads((export.path / "config.json").read_text())["model_type"] == json.loads((source / "config.json").read_text())["model_type"]
    assert logits_max_difference(load_hf_model(export.path), model, _ids(model)) <= LOGIT_TOL
    text = "a<|endoftext|>b quick"
    assert AutoTokenizer.from_pretrained(str(export.path)).encode(text, add_special_tokens=False) == tokenizer.encode(text)


def _randomize(model: torch.nn.Module, seed: int, zero_query_bias: bool = False) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1 + 0.2 * noise if "ln" in name and name.endswith("weight") else 0.3 * noise)
        if zero_query_bias:
            for block in model.blocks:
                block.attn.qkv.bias[: model.config.d_attn] = 0


def _harness_run(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A minimal run directory around a live model (checkpoint, record, a BPE tokenizer)."""
    run = tmp_path / "run"
    tokenizer = train_bpe(["hello world, a tiny corpus for a tiny tokenizer"] * 4, vocab_size=300, cache_dir=tmp_path / "tok")
    tokenizer.save(run / "tokenizer")
    torch_save_atomic(run / "checkpoint.pt", {"model": model.state_dict(), "config": model.config.to_dict()})
    write_json_atomic(run / "config.json", {"run": None, "model": model.config.to_dict()})
    write_record(run, {"run_id": "run", "status": "ok", "arch": model.config.arch})
    return run


@pytest.mark.parametrize("arch, overrides, family", [
    ("gpt1", {}, "openai-gpt"), ("gpt2", {}, "gpt2"), ("gpt2", {"bias": False}, "gpt2"),
    ("gpt3", {"window": 8}, "gpt_neo"),
])
def test_harness_models_export_exactly(tmp_path, arch, overrides, family):
    """Trained-style harness weights (non-zero biases; gpt3 with key and value biases folded away)."""
    model = build(arch, size="nano", vocab_size=300, dropout=0.0, **overrides).eval()
    _randomize(model, seed=3, zero_query_bias=(arch == "gpt3"))
    export = export_run(_harness_run(tmp_path, model), tmp_path / "hf")
    assert export.model_type == family and export.notes  # the BPE's <|endoftext|> convention is stated
    assert logits_max_difference(load_hf_model(export.path), model, _ids(model)) <= LOGIT_TOL


@pytest.mark.parametrize("arch, overrides, refusal", [
    ("gpt4", {}, "mixture-of-experts"),
    ("gpt3", {}, "query bias"),
    ("gpt2", {"tie_embeddings": False}, "untied"),
    ("gpt1", {"d_ff": 96}, "4·d_model"),
])
def test_export_refuses_what_cannot_map(tmp_path, arch, overrides, refusal):
    model = build(arch, size="nano", vocab_size=300, **overrides).eval()
    _randomize(model, seed=4)
    with pytest.raises(ValueError, match=refusal):
        export_run(_harness_run(tmp_path, model), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ----------------------------------------------------------------------------- refusals and wrong mappings


@pytest.mark.parametrize("change, refusal", [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"tie_word_embeddings": False}, "untied"),
    ({"activation_function": "silu"}, "silu"),
    ({"add_cross_attention": True}, "cross-attention"),
    ({"model_type": "llama"}, "cannot be imported"),
])
def test_import_refuses_what_cannot_map(tiny, change, refusal):
    config = json.loads((tiny["gpt2"][0] / "config.json").read_text())
    with pytest.raises(ValueError, match=refusal):
        config_from_hf({**config, **change})


def test_import_refuses_leftover_and_untied_tensors(tiny):
    checkpoint = resolve_checkpoint(tiny["gpt2"][0])
    config = config_from_hf(checkpoint.config)
    state = checkpoint.load_state_dict()
    with pytest.raises(ValueError, match="no place"):
        state_from_hf("gpt2", config, {**state, "multiple_choice_head.summary.weight": torch.zeros(1, 32)})
    with pytest.raises(ValueError, match="untied"):
        state_from_hf("gpt2", config, {**state, "lm_head.weight": state["transformer.wte.weight"] + 1})


def _corrupt_swap_layernorms(state, config):
    for part in ("weight", "bias"):
        a, b = f"blocks.0.ln_1.{part}", f"blocks.0.ln_2.{part}"
        state[a], state[b] = state[b].clone(), state[a].clone()
    return state, config


def _corrupt_skip_transpose(state, config):
    state["blocks.0.attn.proj.weight"] = state["blocks.0.attn.proj.weight"].t().contiguous()
    return state, config


def _corrupt_skip_neo_scale(state, config):
    d = config.d_attn
    for i in range(config.n_layer):
        state[f"blocks.{i}.attn.qkv.weight"][:d] /= config.d_head**0.5
    return state, config


def _corrupt_swap_neo_layers(state, config):
    return state, config.replace(attention_pattern=("banded", "dense"))


@pytest.mark.parametrize("kind, corrupt", [
    ("gpt2", _corrupt_swap_layernorms), ("gpt2", _corrupt_skip_transpose), ("openai-gpt", _corrupt_swap_layernorms),
    ("gpt-neo", _corrupt_skip_neo_scale), ("gpt-neo", _corrupt_swap_neo_layers),
])
def test_a_wrong_mapping_fails_the_comparison(tiny, kind, corrupt):
    source, run = tiny[kind]
    model, _, _ = load_run_model(run)
    state, config = corrupt({k: v.clone() for k, v in model.state_dict().items()}, model.config)
    wrong = build_from_config(config).eval()
    wrong.load_state_dict(state)
    assert logits_max_difference(load_hf_model(source), wrong, _ids(model)) > WRONG


# ----------------------------------------------------------------------------- hub names, CLI


def _fake_hub_cache(cache: Path, repo: str, source: Path) -> str:
    """The layout huggingface_hub keeps: models--org--name/snapshots/<commit>/ and refs/main."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(source, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return commit


def test_hub_names_resolve_from_the_local_cache_offline(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        resolve_checkpoint("hf:tiny/gpt2", cache_dir=tmp_path / "empty")
    commit = _fake_hub_cache(tmp_path / "cache", "tiny/gpt2", tiny["gpt2"][0])
    run = import_checkpoint("hf:tiny/gpt2", tmp_path / "run", cache_dir=tmp_path / "cache")
    record = load_record(run)
    assert record["imported"]["hub"] == {"repo_id": "tiny/gpt2", "revision": "main", "commit": commit}
    assert record["size"] == "gpt2"


def test_cli_import_and_export(tiny, tmp_path, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = tiny["gpt-neo"][0]
    assert main(["import", str(source), "--out", str(tmp_path / "run"), "--verify"]) == 0
    assert "max |Δ logit| against transformers" in capsys.readouterr().out
    assert main(["import", str(source), "--out", str(tmp_path / "run")]) == 2  # exists: not overwritten
    assert "already exists" in capsys.readouterr().err
    assert main(["import", "hf:nobody/nothing", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not in the local Hugging Face cache" in err and len(err.splitlines()) == 1
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()


def test_eval_keeps_zero_and_few_shot_results_apart(tiny, tmp_path, shared_data):
    """`eval --num-fewshot k` reaches lm-eval, and the record holds the task at 0 and k shots side by side."""
    from harness.evaluation import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(tiny["gpt2"][1], run)
    task_data = shared_data / "lm_eval"
    zero = evaluate_run(run, tasks="arc_easy", limit=2, num_fewshot=0, task_data=task_data)
    few = evaluate_run(run, tasks="arc_easy", limit=2, num_fewshot=2, task_data=task_data)
    assert list(zero) == ["arc_easy"] and list(few) == ["arc_easy@2shot"]
    evaluation = load_record(run)["evaluation"]
    assert evaluation["arc_easy"]["acc"]["n"] == 2 and evaluation["arc_easy@2shot"]["acc"]["n"] == 2
    (zero_file,) = (run / "lm_eval_results").glob("*_0shot_limit2_arc_easy.json")
    (few_file,) = (run / "lm_eval_results").glob("*_2shot_limit2_arc_easy.json")
    assert json.loads(zero_file.read_text())["n-shot"] == {"arc_easy": 0}
    assert json.loads(few_file.read_text())["n-shot"] == {"arc_easy": 2}


def _eval_entry(value: float) -> dict:
    return {"value": value, "stderr": 0.05, "n": 20, "version": 1.0}


def test_report_shows_imported_runs_as_reference_rows(tiny, results_tmp, assert_no_fill_ins):
    from harness.runs.records import update_record
    from harness.reporting.report import build_report
    from test_results import make_run

    shutil.copytree(tiny["gpt2"][1], results_tmp / "tiny-gpt2")
    update_record(results_tmp / "tiny-gpt2", evaluation={"arc_easy": {"acc": _eval_entry(0.25)},
                                                        "arc_easy@2shot": {"acc": _eval_entry(0.375)}})
    alone = build_report(["tiny-gpt2"], name="refs").path.read_text()
    assert "## Reference models (imported, not trained here)" in alone
    assert "arc_easy acc" in alone and "arc_easy@2shot acc" in alone and "0.375 ± 0.05 (n = 20)" in alone
    assert_no_fill_ins(alone)
    assert build_report(["refs"]).path.read_text() == alone  # regenerated by name
    trained = make_run(results_tmp, "gpt2", 0, 3.0, data="text", evaluation={"arc_easy": {"acc": _eval_entry(0.3)}}).name
    mixed = build_report([trained, "tiny-gpt2"], name="mixed").path.read_text()
    summary = mixed.split("## Summary")[1].split("##")[0]
    references = mixed.split("## Reference models")[1].split("##")[0]
    assert_no_fill_ins(mixed)
    assert trained not in references and "tiny-gpt2" in references and "tiny-gpt2" not in summary


def test_bench_takes_an_imported_run(tiny):
    from harness.bench import bench

    run = tiny["gpt-neo"][1]
    result = bench(None, run=str(run), steps=1, warmup=0, prefill=False, batch_size=1, device="cpu", dtype="fp32")
    record = load_record(run)
    assert result["arch"] == "gpt3" and result["size"] == record["size"]
    from architectures.config import ModelConfig
    from harness.flops import train_flops_per_token

    # bench counts FLOPs for MFU as PaLM does (attention_flops=full); the record in the budgets' convention
    config = ModelConfig.from_dict(json.loads((run / "config.json").read_text())["model"])
    assert result["train_flops_per_token"] == train_flops_per_token(config, result["seq_len"], "full")
    assert record["train_flops_per_token"] == train_flops_per_token(config, record["seq_len"], record["attention_flops"])


def test_hub_style_gpt2_layout_imports(tiny, tmp_path):
    """The hub's gpt2: GPT2Model keys (no ``transformer.``), causal-mask buffers, pytorch_model.bin weights."""
    from safetensors.torch import load_file

    source = tiny["gpt2"][0]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, legacy / name)
    state = {k.removeprefix("transformer."): v for k, v in load_file(str(source / "model.safetensors")).items()}
    state["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, legacy / "pytorch_model.bin")
    run = import_checkpoint(legacy, tmp_path / "run")
    model, _, record = load_run_model(run)
    assert record["imported"]["weights"][0]["file"] == "pytorch_model.bin"
    assert logits_max_difference(load_hf_model(source), model, _ids(model)) <= LOGIT_TOL


def test_sharded_checkpoints_and_bad_files(tiny, tmp_path):
    from harness.cli import main

    sharded = tmp_path / "sharded"
    load_hf_model(tiny["gpt2"][0]).save_pretrained(str(sharded), max_shard_size="40KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny["gpt2"][0] / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file()
    run = import_checkpoint(sharded, tmp_path / "run")
    assert len(load_record(run)["imported"]["weights"]) > 1
    model, _, _ = load_run_model(run)
    assert logits_max_difference(load_hf_model(tiny["gpt2"][0]), model, _ids(model)) <= LOGIT_TOL
    broken = tmp_path / "broken"
    shutil.copytree(tiny["gpt2"][0], broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert main(["import", str(broken), "--out", str(tmp_path / "x")]) == 2
    config = json.loads((broken / "config.json").read_text())
    del config["n_embd"]
    with pytest.raises(ValueError, match="lacks or garbles"):
        config_from_hf(config)
    assert not (tmp_path / "x").exists()
