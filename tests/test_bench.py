"""Throughput benchmark and device defaults: JSON keys, 0 < MFU ≤ 1, the measured and cached
peak, CPU defaults, bad input, and the nanoGPT reference (runs; timings never asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

import architectures
from harness import device as device_module
from harness.bench import bench
from harness.cli import main as cli_main
from harness.device import configure_device, cpu_has_native_bf16, measured_peak_flops_per_s
from harness.threads import torch_threads

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["gpt1", "gpt2", "gpt3", "gpt4"]
BENCH_KEYS = (
    "train_tokens_per_s",
    "prefill_tokens_per_s",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "peak_memory_bytes",
    "peak_memory_kind",
    "device",
    "dtype",
    "defaults",
    "settings",
    "train_flops_per_token",
    "batch_size",
    "seq_len",
)


@pytest.fixture(scope="session")
def peak_cache(tmp_path_factory):
    """One cache folder for the session, its peaks measured once on a small matmul (fast;
    a low ceiling only raises MFU, and bench re-measures if MFU would pass 1)."""
    path = tmp_path_factory.mktemp("harness-cache")
    previous = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(path)
    try:
        for dtype in ("fp32", "bf16"):
            measured_peak_flops_per_s("cpu", dtype, size=512, repeats=3)
    finally:
        if previous is None:
            del os.environ["HARNESS_CACHE_DIR"]
        else:
            os.environ["HARNESS_CACHE_DIR"] = previous
    return path


@pytest.fixture
def cache_env(peak_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(peak_cache))
    return peak_cache


@pytest.fixture(autouse=True)
def one_thread():
    """Functional tests on one thread: fast and immune to other processes' load (timings are
    never asserted). The peak cache key names the thread count, so peaks stay consistent."""
    with torch_threads(1):
        yield


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_bench_reports_every_key_and_a_sane_mfu(arch, cache_env):
    result = bench(arch, "nano", batch_size=2, seq_len=32, steps=2, warmup=1, device="cpu")
    for key in BENCH_KEYS:
        assert key in result, key
    for key in ("train_tokens_per_s", "prefill_tokens_per_s", "achieved_flops_per_s", "peak_flops_per_s", "peak_memory_bytes"):
        assert positive_finite(result[key]), (key, result[key])
    assert 0 < result["mfu"] <= 1
    assert result["mfu"] == pytest.approx(result["achieved_flops_per_s"] / result["peak_flops_per_s"])
    assert result["achieved_flops_per_s"] == pytest.approx(result["train_flops_per_token"] * result["train_tokens_per_s"])
    assert result["device"] == "cpu" and result["tokens_per_step"] == 64
    assert result["defaults"]["batch_size"] == {"value": 2, "source": "given"}
    assert result["defaults"]["dtype"]["source"] == "default"
    assert result["defaults"]["steps"] == {"value": 2, "source": "given"}
    assert "ru_maxrss" in result["peak_memory_kind"]
    assert math.isfinite(result["final_loss"])
    json.dumps(result)  # JSON-ready


def test_bench_says_default_for_steps_left_at_their_default(cache_env):
    result = bench("gpt2", "nano", batch_size=1, seq_len=8, device="cpu", prefill=False)
    assert result["defaults"]["steps"] == {"value": 10, "source": "default"}
    assert result["defaults"]["warmup"] == {"value": 3, "source": "default"}


def test_bench_command_json(capsys, cache_env):
    code = cli_main(
        ["bench", "--arch", "gpt3", "--size", "nano", "--batch-size", "2", "--seq-len", "16", "--set", "window=8",
         "--dtype", "fp32", "--device", "cpu", "--steps", "2", "--warmup", "1", "--format", "json"]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["dtype"] == "fp32" and result["overrides"] == {"window": 8} and result["seq_len"] == 16
    assert result["settings"]["autocast_dtype"] is None
    assert 0 < result["mfu"] <= 1


def test_bench_command_table_states_units(capsys, cache_env):
    code = cli_main(["bench", "--arch", "gpt2", "--size", "nano", "--batch-size", "1", "--seq-len", "16", "--steps", "1", "--warmup", "0"])
    out, _ = capsys.readouterr()
    assert code == 0
    for text in ("tokens/s", "FLOP/s", "MFU", "MiB", "convention:", "defaults:", "measured"):
        assert text in out, text


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--arch", "gpt2", "--size", "nano", "--seq-len", "65"], "longer than"),
        (["--arch", "gpt2", "--size", "nano", "--batch-size", "0"], "--batch-size"),
        (["--arch", "gpt2", "--size", "nano", "--steps", "0"], "--steps"),
        (["--arch", "gpt2", "--size", "tiny"], "unknown size"),
        (["--arch", "gpt2", "--size", "nano", "--set", "dropout=lots"], "needs a value of type float"),
    ],
)
def test_bench_bad_input_is_one_sentence(capsys, argv, fragment):
    code = cli_main(["bench", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_bench_cuda_without_cuda_is_one_sentence(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code = cli_main(["bench", "--arch", "gpt2", "--size", "nano", "--device", "cuda"])
    _, err = capsys.readouterr()
    assert code == 2 and "no CUDA device" in err


# ---- device defaults --------------------------------------------------------------------


def test_cpu_defaults():
    settings = configure_device("cpu")
    assert settings.device == "cpu"
    assert settings.flush_denormal == torch.set_flush_denormal(True)  # True wherever the CPU supports it
    assert settings.dtype == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert settings.dtype_name == settings.dtype
    assert settings.compile is False and settings.tf32 is False
    assert settings.notes and all(isinstance(note, str) for note in settings.notes)
    if settings.flush_denormal:  # a denormal input reads as zero
        assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
    json.dumps(settings.to_dict())
    fp32 = configure_device("cpu", "fp32")
    assert fp32.autocast_dtype is None
    with fp32.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    bf16 = configure_device("cpu", "bf16", compile=True)
    assert bf16.autocast_dtype == torch.bfloat16 and bf16.compile
    with bf16.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_configure_device_bad_input():
    with pytest.raises(ValueError, match="dtype must be one of"):
        configure_device("cpu", "fp8")
    with pytest.raises(ValueError, match="device must be cpu or cuda"):
        configure_device("tpu")


def test_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    calls = []
    rates = iter([5.0e9, 3.0e9, 8.0e9])

    def fake_measure(device, dtype, size, repeats):
        calls.append((device, dtype, size))
        return next(rates)

    monkeypatch.setattr(device_module, "_measure_matmul", fake_measure)
    assert measured_peak_flops_per_s("cpu", "fp32") == 5.0e9
    assert measured_peak_flops_per_s("cpu", "fp32") == 5.0e9  # cached
    assert len(calls) == 1 and calls[0][2] == 2048
    cache = json.loads((tmp_path / "peak_flops.json").read_text())
    (key,) = cache
    assert "cpu" in key and "fp32" in key and torch.__version__ in key
    assert measured_peak_flops_per_s("cpu", "fp32", refresh=True) == 5.0e9  # keeps the best seen
    assert measured_peak_flops_per_s("cpu", "fp32", refresh=True) == 8.0e9
    assert len(calls) == 3


def test_real_peak_measurement_is_positive(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert positive_finite(measured_peak_flops_per_s("cpu", "fp32", size=256, repeats=2))


# ---- the nanoGPT reference --------------------------------------------------------------


def load_reference():
    """benchmarks/nanogpt_reference.py as a module (benchmarks/ is no package)."""
    if "nanogpt_reference" in sys.modules:
        return sys.modules["nanogpt_reference"]
    spec = importlib.util.spec_from_file_location("nanogpt_reference", ROOT / "benchmarks" / "nanogpt_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", ["nano", "micro"])
def test_nanogpt_reference_matches_our_gpt2_shape(size):
    reference = load_reference()
    config = architectures.get("gpt2").config(size)
    ref = reference.GPT(
        reference.GPTConfig(block_size=config.context, vocab_size=config.vocab_size, n_layer=config.n_layer,
                            n_head=config.n_head, n_embd=config.d_model, dropout=0.0, bias=True)
    )
    ours = architectures.build("gpt2", size)
    assert sum(p.numel() for p in ref.parameters()) == ours.param_counts()["params"]


@pytest.mark.parametrize("cpu_defaults", [False, True])
def test_nanogpt_compare_runs(cache_env, cpu_defaults):
    reference = load_reference()
    result = reference.compare(steps=2, warmup=1, batch_size=2, seq_len=32, size="nano", device="cpu",
                               nanogpt_cpu_defaults=cpu_defaults)
    assert positive_finite(result["ratio_ours_over_nanogpt"])
    assert result["params"]["ours"] == result["params"]["nanogpt"]
    assert len(result["step_s"]["ours"]) == len(result["step_s"]["nanogpt"]) == 2
    # the reference's per-step flush switch leaves the harness's process setting in place
    if result["settings"]["flush_denormal"]:
        assert (torch.tensor([1e-39]) * 1.0).item() == 0.0


def test_nanogpt_reference_command_line_runs(cache_env, capsys):
    """The README's benchmark command parses its options (``--set`` included) and prints a ratio."""
    module = load_reference()
    argv = ["--size", "nano", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--seq-len", "16",
            "--threads", "1", "--set", "activation=gelu", "--format", "json"]
    assert module.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert positive_finite(result["ratio_ours_over_nanogpt"])
