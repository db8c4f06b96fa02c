"""pytest-benchmark suites for the README's speed table (``benchmarks/speed.py`` prints the ratios).

    python -m pytest tests/benchmarks/test_bench_speed.py --benchmark-enable    # timed tables
    python benchmarks/speed.py                                                  # the ratios, one run

Under ``--benchmark-disable`` (the default) each body runs once as a test of what is timed:
the banded kernel equals the dense band-masked reference at the timed shape, our evaluation
equals lm-eval's HFLM on the same weights and requests. The compile benchmark (minutes of
compiling) runs only with ``--benchmark-enable``. Times are printed, never asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures.attention import banded_attention_blocked, banded_reference

ROOT = Path(__file__).resolve().parents[2]
T, WINDOW, BLOCK, HEADS, D_HEAD = 2048, 256, 64, 12, 64  # gpt3 125m's banded layer


def _benchmarks_module(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _timing(request) -> bool:
    config = request.config
    return config.getoption("benchmark_enable", default=False) or not config.getoption("benchmark_disable", default=False)


def _qkv(dtype, heads: int):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, T, D_HEAD, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def _fwd_bwd(kernel, q, k, v):
    out = kernel(q, k, v)
    out.float().sum().backward()
    return out.detach()


KERNELS = {
    "dense": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    "banded": lambda q, k, v: banded_attention_blocked(q, k, v, WINDOW, BLOCK),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["dense", "banded"])
def test_bench_attention_core_2048(benchmark, request, kind, dtype):
    """Attention core forward+backward at T = 2048 (12 heads x 64; 2 heads as a plain test); banded w = 256, block 64."""
    q, k, v = _qkv(dtype, HEADS if _timing(request) else 2)
    out = benchmark(_fwd_bwd, KERNELS[kind], q, k, v)
    if kind == "banded" and dtype is torch.float32:  # what is timed is the band, to 1e-5
        with torch.no_grad():
            torch.testing.assert_close(out, banded_reference(q, k, v, WINDOW), atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()


@pytest.fixture(scope="module")
def hflm_backends(shared_file):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    shared_file("lm_eval/hellaswag_validation.jsonl")  # a failure in CI when missing
    hflm = _benchmarks_module("eval_vs_hflm")
    by_task, backends = hflm.make_backends(limit=4)
    return hflm, [r for task in by_task.values() for r in task], backends


def test_exported_transformers_model_equals_ours():
    pytest.importorskip("transformers")
    hflm = _benchmarks_module("eval_vs_hflm")
    model = hflm.make_model(vocab_size=300, size="nano")
    idx = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hflm.to_transformers(model)(idx).logits, model(idx).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["ours", "ours_one_per_forward", "hflm"])
def test_bench_eval_backends(benchmark, hflm_backends, backend):
    """piqa + hellaswag + lambada (4 documents each here; benchmarks/eval_vs_hflm.py runs 200)."""
    hflm, requests, backends = hflm_backends
    if backend == "ours":
        assert hflm.check_equal(requests, backends) <= 1e-4 + 1e-6 * 2000
    results = benchmark(hflm.loglikelihoods, backends[backend], requests)
    assert len(results) == len(requests)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bench_compile_training_step(benchmark, request, compiled):
    """gpt2 nano fp32 training step (8 x 64), eager vs torch.compile (inductor); compile first, outside the timing."""
    if compiled and not _timing(request):
        pytest.skip("compiling takes minutes on a small CPU: run with --benchmark-enable")
    from harness.bench import TrainingStep
    from harness.device import configure_device

    settings = configure_device("cpu", "fp32", compile=compiled)
    torch.manual_seed(0)
    model = architectures.build("gpt2", "nano")
    step = TrainingStep(model, settings, 8, 64, model.config.vocab_size)
    step.step()
    benchmark(step.step)
    assert torch.isfinite(torch.tensor(step.last_loss))
