"""The CUDA fast paths give the CPU path's results (within bf16 tolerance).

``@pytest.mark.cuda`` tests are skipped without a CUDA device; ``benchmarks/gpu_check.py``
runs them on a GPU (``pytest -m cuda``). They compare, on the same weights and inputs:

- banded attention: FlexAttention with the block mask (CUDA) against the blocked CPU kernel;
- dense attention: the model runs with SDPA restricted to the flash kernel;
- whole models (dense + banded, MoE) forward and backward: CUDA fp32 (TF32 off) tightly,
  CUDA bf16 autocast within bf16 tolerance, against CPU fp32;
- the MoE layer's routing, auxiliary terms and gradients;
- ``torch.compile`` of a model with banded layers and MoE against eager;
- the trainer's CUDA defaults (bf16 autocast, TF32, fused AdamW) and what the record reports.

The CPU tests check what can be checked without a GPU: FlexAttention runs on the CPU too
(eagerly, an unfused implementation that materialises the scores), so the CUDA kernel's
band ``mask_mod`` and block-mask construction are tested here against ``banded_reference``
(forward only: torch 2.13 raises ``NotImplementedError`` for FlexAttention's backward on the
CPU, and compiling its fused kernel on a 2-core CPU takes ~30 s per shape; the gradients are
checked by the CUDA test); and ``benchmarks/gpu_check.py --dry-run`` runs end to end with
tiny shapes.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures import attention
from architectures.attention import banded_attention_blocked, banded_reference

REPO = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def eager_flex_kernel() -> attention._FlexBandedKernel:
    """The CUDA banded kernel (same mask_mod, same block-mask construction) with eager flex_attention.

    Eager FlexAttention runs on any device; only the fused kernel needs torch.compile (and
    compiling it on a 2-core CPU takes ~30 s per shape, too slow for a unit test).
    """
    from torch.nn.attention.flex_attention import flex_attention

    kernel = attention._FlexBandedKernel()
    kernel._flex_attention = flex_attention
    return kernel


def qkv(B, H, T, D, *, device="cpu", dtype=torch.float32, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(B, H, T, D, generator=generator).to(device=device, dtype=dtype) for _ in range(3)]
    return [t.requires_grad_(requires_grad) for t in tensors]


# ---- CPU: the FlexAttention band mask ---------------------------------------------------------


@pytest.mark.parametrize("T, window", [(64, 16), (200, 32), (256, 100), (300, 129)])
def test_flex_band_mask_matches_reference_on_cpu(T, window):
    q, k, v = qkv(2, 3, T, 16, seed=T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "flex_attention called without torch.compile()"
        out = eager_flex_kernel()(q, k, v, window)
    reference = banded_reference(q, k, v, window)
    torch.testing.assert_close(out, reference, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(banded_attention_blocked(q, k, v, window, 64), reference, atol=2e-5, rtol=1e-4)


def test_flex_kernel_builds_one_block_mask_per_shape():
    kernel = eager_flex_kernel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for T, window in [(128, 32), (128, 32), (256, 32), (128, 64)]:
            kernel(*qkv(1, 1, T, 16), window)
    assert len(kernel._masks) == 3


def test_banded_layers_use_the_blocked_kernel_on_cpu(monkeypatch):
    """On the CPU banded layers never reach FlexAttention (no compile, no T² scores)."""
    monkeypatch.setattr(attention, "_FlexBandedKernel", None)  # would raise if constructed
    calls = []
    blocked = attention.banded_attention_blocked
    monkeypatch.setattr(attention, "banded_attention_blocked", lambda *a, **k: calls.append(a[0].shape) or blocked(*a, **k))
    model = architectures.build("gpt3", size="nano")
    x = torch.randint(0, model.config.vocab_size, (2, 64))
    loss = model(x, targets=x).loss
    loss.backward()
    banded = [block for block in model.blocks if block.attn.window is not None]
    assert banded and len(calls) == len(banded)  # every banded layer, once each
    assert all(shape[0] == 2 and shape[2] == 64 for shape in calls)
    assert torch.isfinite(loss) and all(block.attn.qkv.weight.grad is not None for block in banded)
    assert model.kernels(64, "cpu")["training"]["banded_attention"].startswith("blocked")


def test_gpu_check_dry_run_runs_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    table = (out / "gpu_check.md").read_text()
    assert result["dry_run"] is True and result["device"] == "cpu"
    sections = {section["name"]: section for section in result["sections"]}
    assert set(sections) == {"cuda_tests", "gpt2_mfu", "banded_vs_dense", "moe_vs_dense", "compare", "fsdp2"}
    assert all(section["status"] in ("ok", "skipped") for section in sections.values()), sections
    assert sections["gpt2_mfu"]["status"] == "ok" and sections["gpt2_mfu"]["train_tokens_per_s"] > 0
    assert sections["banded_vs_dense"]["layer_speedup"] > 0 and sections["moe_vs_dense"]["tokens_per_s_ratio"] > 0
    fsdp = sections["fsdp2"]  # on the CPU: 2 gloo ranks, ddp against fsdp2 at nano
    assert fsdp["status"] == "ok" and fsdp["val_loss_difference_nats"] < 1e-4, fsdp
    assert fsdp["runs"]["fsdp2"]["checkpoint_loads"] and fsdp["runs"]["fsdp2"]["parallel"]["strategy"] == "fsdp2"
    targets = {target["name"]: target for target in result["targets"]}
    assert len(targets) == 3 and all(target["met"] is None for target in targets.values())  # not judged on a CPU
    assert "| target |" in table and "not judged" in table


# ---- CUDA --------------------------------------------------------------------------------------


def small(arch: str, **overrides):
    """A CPU-sized model with the GPU paths exercised: T=256, banded window 64 (4 flex blocks of 64)."""
    return architectures.build(arch, size="nano", context=256, vocab_size=512, **overrides)


def grads_of(model) -> torch.Tensor:
    return torch.cat([p.grad.detach().float().reshape(-1).cpu() for p in model.parameters() if p.grad is not None])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


@pytest.fixture
def no_tf32():
    """fp32 on CUDA with TF32 off: the path differs from the CPU's only in summation order."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("T, window", [(256, 64), (2048, 256), (1000, 100)])
def test_flex_banded_on_cuda_matches_blocked_cpu_kernel_bf16(T, window):
    q, k, v = qkv(2, 4, T, 64, seed=T, requires_grad=True)
    reference = banded_attention_blocked(q, k, v, window, 64)
    ref_grads = torch.autograd.grad(reference.square().sum(), (q, k, v))
    qc, kc, vc = [t.detach().to("cuda", torch.bfloat16).requires_grad_(True) for t in (q, k, v)]
    out = attention.banded_attention(qc, kc, vc, window, 64)  # dispatches to FlexAttention on CUDA
    assert isinstance(attention._flex_kernel, attention._FlexBandedKernel)
    torch.testing.assert_close(out.float().cpu(), reference, atol=3e-2, rtol=3e-2)
    grads = torch.autograd.grad(out.float().square().sum(), (qc, kc, vc))
    for got, want in zip(grads, ref_grads):
        assert cosine(got.float().cpu().reshape(-1), want.reshape(-1)) > 0.999


@pytest.mark.cuda
@cuda
def test_dense_layers_run_on_the_flash_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = small("gpt2").cuda()
    x = torch.randint(0, 512, (4, 256), device="cuda")
    # restricted to flash, SDPA raises "No available kernel" if the layer's call could not use it
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", torch.bfloat16):
        loss = model(x, targets=x).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("arch", ["gpt1", "gpt2", "gpt3", "gpt4"])
def test_model_forward_backward_cuda_matches_cpu(arch, no_tf32):
    torch.manual_seed(0)
    cpu_model = small(arch, dropout=0.0).train()
    x = torch.randint(0, 512, (4, 256))
    cpu_out = cpu_model(x, targets=x)
    cpu_out.loss.backward()
    cpu_grads = grads_of(cpu_model)

    # fp32, TF32 off: the same numbers up to summation order (MoE routes identically)
    fp32_model = copy.deepcopy(cpu_model).cuda()
    fp32_model.zero_grad(set_to_none=True)
    out = fp32_model(x.cuda(), targets=x.cuda())
    out.loss.backward()
    torch.testing.assert_close(out.logits.cpu(), cpu_out.logits, atol=2e-4, rtol=1e-3)
    assert float(out.loss) == pytest.approx(float(cpu_out.loss), abs=1e-4)
    for name, value in cpu_out.aux.items():
        assert float(out.aux[name]) == pytest.approx(float(value), abs=1e-4), name
    torch.testing.assert_close(grads_of(fp32_model), cpu_grads, atol=1e-4, rtol=1e-3)

    # bf16 autocast (the CUDA default): within bf16 tolerance
    bf16_model = copy.deepcopy(cpu_model).cuda()
    bf16_model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", torch.bfloat16):
        out = bf16_model(x.cuda(), targets=x.cuda())
    out.loss.backward()
    assert float(out.lm_loss) == pytest.approx(float(cpu_out.lm_loss), abs=3e-2)
    assert cosine(grads_of(bf16_model), cpu_grads) > 0.99


@pytest.mark.cuda
@cuda
def test_moe_layer_cuda_matches_cpu(no_tf32):
    from architectures.moe import MoE

    torch.manual_seed(0)
    config = architectures.get("gpt4").config("nano", d_model=128, n_head=4, n_experts=8, top_k=2)
    layer = MoE(config)
    layer.reset_parameters(0.02, 0.02)
    x = torch.randn(4, 64, 128, requires_grad=True)
    out, aux = layer(x)
    out.square().sum().backward()
    cuda_layer = copy.deepcopy(layer).cuda()
    xc = x.detach().cuda().requires_grad_(True)
    out_c, aux_c = cuda_layer(xc)
    out_c.square().sum().backward()
    torch.testing.assert_close(out_c.cpu(), out, atol=1e-5, rtol=1e-4)
    for name in aux:
        assert float(aux_c[name]) == pytest.approx(float(aux[name]), abs=1e-6), name
    torch.testing.assert_close(xc.grad.cpu(), x.grad, atol=1e-5, rtol=1e-4)
    for p, pc in zip(layer.parameters(), cuda_layer.parameters()):
        torch.testing.assert_close(pc.grad.cpu(), p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@cuda
def test_compiled_model_matches_eager_on_cuda():
    """torch.compile over dense SDPA, FlexAttention banded layers and the MoE dispatch."""
    torch.manual_seed(0)
    model = small("gpt4", dropout=0.0).cuda()
    x = torch.randint(0, 512, (4, 256), device="cuda")
    with torch.autocast("cuda", torch.bfloat16):
        eager = model(x, targets=x)
    eager.loss.backward()
    eager_grads = grads_of(model)
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model)
    with torch.autocast("cuda", torch.bfloat16):
        out = compiled(x, targets=x)
    out.loss.backward()
    assert float(out.loss) == pytest.approx(float(eager.loss), abs=2e-2)
    assert cosine(grads_of(model), eager_grads) > 0.99


@pytest.mark.cuda
@cuda
def test_trainer_on_cuda_chooses_the_fast_paths_and_records_them(tmp_path):
    from harness.runs.spec import RunSpec
    from harness.training.trainer import train

    spec = RunSpec(arch="gpt3", size="nano", budget_flops=5e9, compile=False)
    record = train(spec, tmp_path, progress=False).record
    settings = record["device_settings"]
    assert record["status"] == "ok" and record["dtype"] == "bf16"
    assert settings["autocast_dtype"] == "bfloat16" and settings["tf32"] and settings["fused_adamw"]
    assert record["kernels"]["training"]["banded_attention"].startswith("flex_attention")
    assert record["kernels"]["evaluation"]["banded_attention"].startswith("flex_attention")
    assert record["mfu"] is not None and record["mfu"] > 0
