"""`harness bench --inference` (harness/serving/inference_bench.py): keys, units, the KV bytes
measured beside the analytic figure, a run's own weights, bad input. Timings are never asserted."""

from __future__ import annotations

import json
import math

import pytest
import torch

from architectures import build
from harness.cli import main as cli_main
from harness.serving.inference_bench import bench_inference, load_model, percentile
from harness.threads import torch_threads

KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s", "kv_bytes_per_token", "kv_bytes_per_token_analytic",
        "decode_latency_ms_p50", "decode_latency_ms_p90", "decode_latency_ms_p99", "peak_memory_bytes",
        "kv_cache_bytes", "batch_size", "prompt_tokens", "new_tokens", "device", "dtype", "convention")


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("arch", ["gpt1", "gpt2", "gpt3", "gpt4"])
def test_every_key_is_reported_and_kv_bytes_match_the_analytic_figure(arch):
    result = bench_inference(arch, "nano", batch_size=2, prompt_tokens=40, new_tokens=8, dtype="fp32", device="cpu",
                             warmup=0, repeats=2)
    for key in KEYS:
        assert key in result, key
    for key in KEYS[:8]:
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["decode_latency_ms_p50"] <= result["decode_latency_ms_p90"] <= result["decode_latency_ms_p99"]
    assert result["kv_bytes_per_token"] == result["kv_bytes_per_token_analytic"]
    assert result["kv_cache_bytes"] == result["kv_bytes_per_token"] * 2 * 48
    assert result["decode_tokens_per_s"] == pytest.approx(2 * 8 / result["decode_s_median"])
    assert result["prefill_tokens_per_s"] == pytest.approx(2 * 40 / result["prefill_s_median"])


def test_banded_layers_hold_fewer_kv_bytes_per_token():
    # nano: 2 layers, context 64; gpt3 bands one layer at 32 tokens
    dense = bench_inference("gpt2", "nano", prompt_tokens=48, new_tokens=16, dtype="fp32", device="cpu", warmup=0, repeats=1)
    banded = bench_inference("gpt3", "nano", prompt_tokens=48, new_tokens=16, dtype="fp32", device="cpu", warmup=0, repeats=1)
    assert banded["attention_layers"] == {"dense": 1, "banded": 1, "window": 32}
    assert banded["kv_bytes_per_token"] / dense["kv_bytes_per_token"] == pytest.approx((64 + 32) / (2 * 64))


def test_a_run_is_benchmarked_with_its_own_weights(tmp_path):
    torch.manual_seed(5)
    model = build("gpt2", "nano", vocab_size=300).eval()
    run_dir = tmp_path / "run-gpt2"
    run_dir.mkdir()
    torch.save({"model": model.state_dict(), "config": model.config.to_dict(), "step": 0}, run_dir / "checkpoint.pt")
    from harness.data import SyntheticTokenizer
    from harness.runs.records import write_record

    SyntheticTokenizer(300).save(run_dir / "tokenizer")
    write_record(run_dir, {"status": "ok", "run_id": run_dir.name, "arch": "gpt2", "size": "nano"})
    loaded, source = load_model(None, None, str(run_dir), None, seed=0)
    assert source.startswith("weights of run")
    for (name, value), (_, saved) in zip(loaded.state_dict().items(), model.state_dict().items()):
        assert torch.equal(value, saved), name
    result = bench_inference(run=str(run_dir), prompt_tokens=8, new_tokens=4, dtype="fp32", device="cpu", warmup=0, repeats=1)
    assert result["run"] == str(run_dir) and result["arch"] == "gpt2"


def test_percentiles_interpolate_like_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert [percentile(values, q) for q in (0, 50, 90, 100)] == pytest.approx([1.0, 3.0, 4.6, 5.0])


def test_command_json_and_table(capsys):
    argv = ["bench", "--inference", "--arch", "gpt4", "--size", "nano", "--prompt-tokens", "20", "--new-tokens", "4",
            "--dtype", "fp32", "--device", "cpu", "--steps", "1", "--warmup", "0"]
    assert cli_main([*argv, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch_size"] == 1 and result["prompt_tokens"] == 20 and result["new_tokens"] == 4
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    for text in ("tokens/s", "ms per step", "bytes/token measured", "analytic", "MiB", "convention:"):
        assert text in out, text


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--prompt-tokens", "60", "--new-tokens", "10"], "exceed the context of 64"),
        (["--prompt-tokens", "0"], "at least 1"),
        (["--seq-len", "16"], "--prompt-tokens"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_input_is_one_sentence(capsys, argv, fragment):
    code = cli_main(["bench", "--inference", "--arch", "gpt2", "--size", "nano", "--device", "cpu", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
