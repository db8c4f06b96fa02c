"""Measured FLOP counts that cross-check the analytic count (``harness.flops.analytic``).

Three independent counts of one forward pass, all in FLOPs = 2 per multiply-add:

(a) **fvcore** (``harness.flops.fvcore_counts.fvcore_count``): ``FlopCountAnalysis`` traces
    the model with the JIT and sums the per-operator handles of ``harness.flops.fvcore_handles``
    (SDPA at full T×S, the banded kernel's and the MoE experts' matmuls as executed); its
    MACs are doubled and its ``by_module`` counts mapped onto the analytic breakdown keys.

(b) **analytic**: ``harness.flops.analytic.forward_breakdown`` from the config alone, in the
    ``full`` attention convention (dense at all T keys, banded at its executed w + b): the
    measured counts see executed kernels, which compute that much whatever the mask admits.
    The ``causal`` convention budgets use is a count of admitted score entries, not of
    executed work, so it is checked against a brute-force count of mask entries instead
    (tests/test_flops.py).

(c) **torch.utils.flop_counter.FlopCounterMode** (``flop_counter_count``, here): counts at the
    dispatcher, in FLOPs (2 per multiply-add) already, forward and — unlike fvcore —
    backward too. Where it differs from (a)/(b):

    - SDPA on the CPU dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu``,
      for which torch has no formula, so **dense attention scores count 0 on the CPU**
      (gpt1/gpt2 nano forward read ~4 % low, gpt3/gpt4 ~2 %). With ``cpu_sdpa=True`` we add
      torch's own SDPA formula for that kernel and its backward (full T×S, as torch counts
      SDPA on CUDA) and the counts agree. With dropout in training (gpt1) SDPA takes the
      math path, which decomposes into ``bmm`` and is counted anyway.
    - It sees what the dispatcher runs, so the banded kernel and the MoE experts are counted
      as executed, like fvcore.
    - With ``backward=True`` it counts forward + backward, which for matmuls is exactly 3×
      forward (the analytic training convention); SDPA's backward is counted as 2× its
      forward (torch's formula, no flash recompute).
    - It never counts element-wise ops either, so no ignore list is needed.

``cross_check`` puts all three side by side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from harness.flops.analytic import forward_breakdown
from harness.flops.fvcore_counts import fvcore_count
from harness.threads import torch_threads

# Counting runs small shapes op by op (the dispatcher) on one thread: thread start-up and
# barriers would dominate on a CPU shared with other processes. The counts do not depend on it.


# ---- (c) torch.utils.flop_counter ------------------------------------------------------


def _cpu_sdpa_mapping() -> dict:
    """FlopCounterMode formulas for the CPU flash-attention kernels (torch ships none)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping = {}
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:

        def sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query, key, value)

        mapping[forward] = sdpa_cpu
    if backward is not None:

        def sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[backward] = sdpa_cpu_backward
    return mapping


@dataclass
class FlopCounterCount:
    """``FlopCounterMode``'s count (FLOPs), forward only or forward + backward."""

    tokens: int
    flops: float
    flops_per_token: float
    backward: bool
    cpu_sdpa: bool
    by_operator: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


@torch_threads(1)
def flop_counter_count(
    model: nn.Module, idx: torch.Tensor, *, backward: bool = False, cpu_sdpa: bool = False
) -> FlopCounterCount:
    """``torch.utils.flop_counter.FlopCounterMode`` over ``model(idx)`` (+ backward), eval mode.

    ``cpu_sdpa=False`` is torch as shipped (dense attention scores count 0 on the CPU);
    ``cpu_sdpa=True`` adds torch's SDPA formula for the CPU flash kernel and its backward.
    With ``backward`` the loss is the LM loss on ``idx`` shifted by one (any targets do).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        mapping = _cpu_sdpa_mapping() if cpu_sdpa else {}
        with torch.set_grad_enabled(backward), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            out = model(idx, targets=torch.roll(idx, -1, dims=1) if backward else None)
            if backward:
                out.loss.backward()
        if backward:
            model.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    total = float(counter.get_total_flops())
    by_operator = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCounterCount(idx.numel(), total, total / idx.numel(), backward, cpu_sdpa, by_operator)


# ---- all three side by side ------------------------------------------------------------


def relative_difference(value: float, reference: float) -> float:
    """|value - reference| / reference (0 when both are 0)."""
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - reference) / abs(reference)


def cross_check(
    model: nn.Module, seq_len: int | None = None, batch_size: int = 1, *, seed: int = 0
) -> dict[str, Any]:
    """Analytic vs fvcore vs FlopCounterMode forward FLOPs per token on random token ids.

    Returns per-token figures (FLOPs), each count's breakdown where it has one, and the
    relative differences from the analytic count. The model must be on a real device
    (the JIT tracer and the MoE dispatch read values).
    """
    config = model.config
    T = config.check_seq_len(seq_len)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, config.vocab_size, (batch_size, T), generator=generator).to(device)
    analytic = forward_breakdown(config, T, "full")
    analytic_total = sum(analytic.values())
    fv = fvcore_count(model, idx)
    shipped = flop_counter_count(model, idx)
    patched = flop_counter_count(model, idx, cpu_sdpa=True)
    return {
        "seq_len": T,
        "batch_size": batch_size,
        "analytic_attention_flops": "full",
        "analytic_forward_flops_per_token": analytic_total,
        "analytic_breakdown": analytic,
        "fvcore_forward_flops_per_token": fv.forward_flops_per_token,
        "fvcore_breakdown": fv.breakdown,
        "fvcore_unsupported_ops": fv.unsupported_ops,
        "flop_counter_forward_flops_per_token": shipped.flops_per_token,
        "flop_counter_cpu_sdpa_forward_flops_per_token": patched.flops_per_token,
        "fvcore_vs_analytic": relative_difference(fv.forward_flops_per_token, analytic_total),
        "flop_counter_vs_analytic": relative_difference(shipped.flops_per_token, analytic_total),
        "flop_counter_cpu_sdpa_vs_analytic": relative_difference(patched.flops_per_token, analytic_total),
    }

