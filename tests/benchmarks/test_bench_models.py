"""Model speed (CPU): forward+backward per architecture, banded vs dense attention, MoE dispatch.

    python -m pytest tests/benchmarks/test_bench_models.py --benchmark-enable      # pytest-benchmark tables
    python -m pytest tests/benchmarks/test_bench_models.py -k ratio -s             # banded/dense ratio, one run

Under ``--benchmark-disable`` (the default in pyproject) each benchmark body runs once as
a plain test that checks the outputs (finite loss, gradients, same numbers as the dense
reference). Times are printed, never asserted.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

import architectures
from architectures.attention import CausalSelfAttention, banded_attention_blocked, banded_reference
from architectures.moe import MoE

ARCHS = ["gpt1", "gpt2", "gpt3", "gpt4"]


# tokens per forward+backward: nano 4 x 64, micro 2 x 256 (kept small: this runs as a test too)
SHAPES = {"nano": (4, 64), "micro": (2, 256)}
LAYER_T, LAYER_WINDOW = 1024, 128


def _forward_backward(model, x, y):
    loss = model(x, targets=y).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.detach()


@pytest.mark.parametrize("size", ["nano", "micro"])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward(benchmark, arch, size):
    torch.manual_seed(0)
    model = architectures.build(arch, size)
    B, T = SHAPES[size]
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, model.config.vocab_size, (B, T + 1), generator=generator)
    x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    benchmark.extra_info["tokens"] = B * T
    loss = benchmark(_forward_backward, model, x, y)
    assert torch.isfinite(loss)


def _attention_layer(window: int | None) -> CausalSelfAttention:
    config = architectures.get("gpt3").config("micro", context=LAYER_T, window=LAYER_WINDOW)
    torch.manual_seed(0)
    return CausalSelfAttention(config, window=window)


def _layer_step(layer, x):
    y = layer(x)
    y.sum().backward()
    return y.detach()


@pytest.mark.parametrize("kind", ["dense", "banded"])
def test_attention_layer(benchmark, kind):
    """One attention layer (d 256, 8 heads) forward+backward at T = 1024; banded w = 128."""
    layer = _attention_layer(None if kind == "dense" else LAYER_WINDOW)
    x = torch.randn(1, LAYER_T, layer.qkv.in_features, requires_grad=True)
    benchmark.extra_info.update(T=LAYER_T, window=LAYER_WINDOW if kind == "banded" else None)
    y = benchmark(_layer_step, layer, x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_banded_kernel_matches_the_dense_band_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, LAYER_T, 32) for _ in range(3))
    blocked = banded_attention_blocked(q, k, v, LAYER_WINDOW, 64)
    torch.testing.assert_close(blocked, banded_reference(q, k, v, LAYER_WINDOW), atol=1e-5, rtol=1e-4)


def test_banded_vs_dense_layer_ratio():
    """Prints the banded/dense time ratio of one layer's forward+backward (median of 5)."""
    x = torch.randn(1, LAYER_T, 256)
    medians = {}
    for kind, window in (("dense", None), ("banded", LAYER_WINDOW)):
        layer = _attention_layer(window)
        times = []
        for _ in range(6):
            start = time.perf_counter()
            _layer_step(layer, x.clone().requires_grad_(True))
            times.append(time.perf_counter() - start)
        medians[kind] = statistics.median(times[1:])
    print(f"\nattention layer fwd+bwd at T={LAYER_T}, {torch.get_num_threads()} thread(s): dense {medians['dense'] * 1e3:.1f} ms, "
          f"banded w={LAYER_WINDOW} {medians['banded'] * 1e3:.1f} ms, ratio {medians['banded'] / medians['dense']:.2f}")
    assert all(t > 0 for t in medians.values())


def _moe_step(moe, x):
    out, aux = moe(x)
    (out.sum() + aux["moe_balance"] + aux["moe_z"]).backward()
    return out.detach()


@pytest.mark.parametrize("training", [True, False], ids=["train-capacity", "eval-dropless"])
def test_moe_dispatch(benchmark, training):
    """The MoE block of gpt4 micro (8 experts, top-2) on 1 x 256 tokens, forward+backward."""
    config = architectures.get("gpt4").config("micro")
    torch.manual_seed(0)
    moe = MoE(config).train(training)
    moe.reset_parameters(0.02, 0.02)
    x = torch.randn(1, 256, config.d_model, requires_grad=True)
    out = benchmark(_moe_step, moe, x)
    assert out.shape == x.shape and torch.isfinite(out).all()
