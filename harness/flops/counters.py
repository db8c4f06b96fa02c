"""Measured FLOP counts that cross-check the analytic count (``harness.flops.analytic``).

Three independent counts of one forward pass, all in FLOPs = 2 per multiply-add:

(a) **fvcore** (``fvcore_count``): ``FlopCountAnalysis`` traces the model with the JIT and
    sums per-operator handles. fvcore counts one multiply-add as one "flop" (its numbers
    are MACs), so everything here is multiplied by 2. We register handles for every
    matrix-like operator our models run (``MATRIX_OPS``, ``matrix_op_handles``):

    - ``aten::scaled_dot_product_attention`` (fvcore has none): QKᵀ and AV over the
      full T×S score matrix — the project's convention for dense causal attention (PaLM,
      no causal halving), and also what a masked dense call (``banded_reference``) executes.
    - the blocked banded kernel is traced as plain ``aten::matmul`` over
      [B, H, n_blocks, b, w + b] blocks, so its scores are counted at the executed
      ceil(T/b)·b·(w + b) entries per head, not T². Our broadcast-aware matmul handle
      counts the broadcast batch dimensions too (fvcore's own assumes the left operand
      carries the whole batch).
    - the MoE dispatch runs each expert as ``x[rows] @ w_in[e]``: the trace records the
      matmuls with their actual row counts (in eval mode every token reaches its k experts,
      so the rows sum to N·k); the index, sort and ``index_add_`` ops are ignored.
    - ``linear``/``addmm``/``mm``/``bmm``/``baddbmm``/``einsum``/``_convolution``.

    Everything else is element-wise, indexing or normalisation work that the analytic
    convention deliberately leaves out (``IGNORED_OPS``); fvcore is told to skip those so
    it warns about nothing, and a test checks that no other operator goes unhandled.
    ``by_module`` counts are mapped onto the analytic breakdown keys (``BREAKDOWN_KEYS``).

(b) **analytic**: ``harness.flops.analytic.forward_breakdown`` from the config alone.

(c) **torch.utils.flop_counter.FlopCounterMode** (``flop_counter_count``): counts at the
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
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from harness.flops.analytic import BREAKDOWN_KEYS, forward_breakdown
from harness.threads import torch_threads

# Counting runs small shapes op by op (the JIT tracer, the dispatcher) on one thread: thread
# start-up and barriers would dominate, and on a CPU shared with other processes a two-thread
# ``index_add_`` can take 100 ms instead of 10 µs. The counts do not depend on it.


# ---- (a) fvcore ------------------------------------------------------------------------

# Operators fvcore meets in our models that the analytic convention does not count:
# element-wise maths, activations, normalisation, softmax, masking, indexing, sorting,
# padding and the MoE scatter. None of them is a matrix multiply.
IGNORED_OPS: frozenset[str] = frozenset(
    {
        # element-wise arithmetic and comparisons
        "aten::add",
        "aten::add_",
        "aten::sub",
        "aten::rsub",
        "aten::mul",
        "aten::mul_",
        "aten::div",
        "aten::div_",
        "aten::neg",
        "aten::pow",
        "aten::sqrt",
        "aten::rsqrt",
        "aten::exp",
        "aten::log",
        "aten::tanh",
        "aten::abs",
        "aten::le",
        "aten::lt",
        "aten::ne",
        "aten::__or__",
        "aten::__invert__",
        "aten::logical_and",
        "aten::logical_not",
        "aten::where",
        "aten::masked_fill_",
        "aten::fill_",
        # activations
        "aten::gelu",
        "aten::silu",
        "aten::sigmoid",
        # normalisation and reductions (O(d) per token)
        "aten::layer_norm",
        "aten::group_norm",
        "aten::batch_norm",
        "aten::instance_norm",
        "aten::softmax",
        "aten::log_softmax",
        "aten::logsumexp",
        "aten::mean",
        "aten::sum",
        "aten::cross_entropy_loss",
        # lookups, routing bookkeeping, layout
        "aten::embedding",
        "aten::topk",
        "aten::argsort",
        "aten::sort",
        "aten::bincount",
        "aten::index_add_",
        "aten::index_select",
        "aten::scatter_add_",
        "aten::pad",
        "aten::unfold",
        "aten::clone",
        "aten::float",
        "aten::lift_fresh",
    }
)


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return list(get_shape(value))


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: MACs of QKᵀ and AV, full T×S.

    q [..., T, D], k [..., S, D], v [..., S, Dv] → prod(q[:-1])·S·(D + Dv) multiply-adds,
    whatever the mask (``is_causal`` or a band mask): dense kernels execute the whole square.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::matmul``/``mm``: MACs with broadcast batch dimensions.

    Unlike fvcore's own handle it counts the batch from the output, so ``[T, D] @ [B, D, S]``
    is B·T·D·S. 1-D operands are treated as torch does (a vector on the left or right).
    """
    a, b = _shape(inputs[0]), _shape(inputs[1])
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def baddbmm_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::baddbmm`` (input + batch1 @ batch2): the bmm's MACs."""
    n, c, t = _shape(inputs[1])
    return n * c * t * _shape(inputs[2])[-1]


# Matrix-like operators and the handle that counts each (fvcore imported only when used).
MATRIX_OPS: frozenset[str] = frozenset(
    {
        "aten::linear",
        "aten::addmm",
        "aten::mm",
        "aten::matmul",
        "aten::bmm",
        "aten::baddbmm",
        "aten::einsum",
        "aten::_convolution",
        "aten::scaled_dot_product_attention",
    }
)


def matrix_op_handles() -> dict[str, Any]:
    """fvcore handles (counting MACs) for every operator in ``MATRIX_OPS``."""
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        linear_flop_jit,
    )

    handles = {
        "aten::linear": linear_flop_jit,
        "aten::addmm": addmm_flop_jit,
        "aten::mm": matmul_flop_jit,
        "aten::matmul": matmul_flop_jit,
        "aten::bmm": bmm_flop_jit,
        "aten::baddbmm": baddbmm_flop_jit,
        "aten::einsum": einsum_flop_jit,
        "aten::_convolution": conv_flop_jit,
        "aten::scaled_dot_product_attention": sdpa_flop_jit,
    }
    assert set(handles) == MATRIX_OPS
    return handles


class _LogitsOnly(nn.Module):
    """Tracing wrapper: the JIT tracer needs tensor outputs, our models return a dataclass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx).logits


_PREFIX = "model."


def fvcore_analysis(model: nn.Module, idx: torch.Tensor, *, ignore: bool = True):
    """A configured ``fvcore.nn.FlopCountAnalysis`` of ``model(idx)`` (counts are MACs).

    Matrix-like operators get ``matrix_op_handles()``; fvcore's default handles (norms,
    pooling, upsampling) are dropped (the analytic convention counts matmuls only), and
    fvcore's own list of layout ops it always skips (view, permute, ...) stays. With ``ignore`` the operators in
    ``IGNORED_OPS`` are skipped silently; without it they show up in ``unsupported_ops()``,
    which is how the tests check the ignore list hides no matrix-like operator.
    Module names in ``by_module()`` carry a ``model.`` prefix (the tracing wrapper).
    """
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(_LogitsOnly(model), (idx,))
    analysis.clear_op_handles()  # drop fvcore's defaults (norms, pooling): keep what we vouch for
    analysis.set_op_handle(**matrix_op_handles())
    if ignore:
        for name in IGNORED_OPS:
            analysis.set_op_handle(name, None)
    # with the ignore list nothing is left to warn about: a warning means a new operator
    analysis.unsupported_ops_warnings(ignore)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


@dataclass
class FvcoreCount:
    """fvcore's count of one forward pass, converted to FLOPs (2 × its MACs)."""

    tokens: int
    forward_flops: float
    forward_flops_per_token: float
    breakdown: dict[str, float]  # per token, analytic keys + "other"
    by_operator: dict[str, float]  # FLOPs over the batch
    unsupported_ops: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def component_breakdown(
    model: nn.Module,
    by_module: dict[str, float],
    prefix: str = "",
    by_module_and_operator: dict[str, dict[str, float]] | None = None,
) -> dict[str, float]:
    """Map per-module counts onto ``BREAKDOWN_KEYS`` (+ ``other`` for whatever is left).

    attention_projections = qkv + proj; attention_scores = the rest of the attention module
    (SDPA or the banded kernel's matmuls); mlp = the dense FFN; moe_router = the router;
    moe_experts = the rest of the MoE module (the router is told apart by operator:
    ``linear`` inside the MoE module); lm_head = the head.
    """
    from architectures.attention import CausalSelfAttention
    from architectures.mlp import MLP
    from architectures.moe import MoE

    def count(name: str) -> float:
        return float(by_module.get(prefix + name if name else prefix.rstrip("."), 0))

    out = dict.fromkeys(BREAKDOWN_KEYS, 0.0)
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention):
            projections = count(f"{name}.qkv") + count(f"{name}.proj")
            out["attention_projections"] += projections
            out["attention_scores"] += count(name) - projections
        elif isinstance(module, MLP):
            out["mlp"] += count(name)
        elif isinstance(module, MoE):
            # the router runs as F.linear on the router's weight inside MoE.route (no module
            # call of its own), the experts as matmuls: split the MoE's count by operator.
            if by_module_and_operator is not None:
                router = float(by_module_and_operator.get(prefix + name, {}).get("linear", 0))
            else:
                router = count(f"{name}.router")
            out["moe_router"] += router
            out["moe_experts"] += count(name) - router
    if isinstance(getattr(model, "lm_head", None), nn.Module):
        out["lm_head"] += count("lm_head")
    out["other"] = count("") - sum(out.values())
    return out


@torch.no_grad()
@torch_threads(1)
def fvcore_count(model: nn.Module, idx: torch.Tensor) -> FvcoreCount:
    """fvcore's forward count of ``model(idx)`` in FLOPs, run in eval mode (dropless MoE).

    Eval mode matters for MoE: training applies the capacity limit, which drops rows and
    makes the executed expert FLOPs batch-dependent; eval routes every token to k experts.
    """
    was_training = model.training
    model.eval()
    try:
        analysis = fvcore_analysis(model, idx)
        total = 2.0 * analysis.total()
        by_module = {name: 2.0 * value for name, value in analysis.by_module().items()}
        by_operator = {name: 2.0 * value for name, value in analysis.by_operator().items()}
        by_module_and_operator = {
            name: {op: 2.0 * value for op, value in ops.items()}
            for name, ops in analysis.by_module_and_operator().items()
        }
        unsupported = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    tokens = idx.numel()
    components = component_breakdown(model, by_module, _PREFIX, by_module_and_operator)
    breakdown = {key: value / tokens for key, value in components.items()}
    return FvcoreCount(tokens, total, total / tokens, breakdown, by_operator, unsupported)


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
    analytic = forward_breakdown(config, T)
    analytic_total = sum(analytic.values())
    fv = fvcore_count(model, idx)
    shipped = flop_counter_count(model, idx)
    patched = flop_counter_count(model, idx, cpu_sdpa=True)
    return {
        "seq_len": T,
        "batch_size": batch_size,
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


@torch_threads(1)
def unsupported_operators(model: nn.Module, idx: torch.Tensor) -> Counter:
    """Operators fvcore has no handle for when nothing is ignored (for the ignore-list test)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analysis = fvcore_analysis(model, idx, ignore=False)
            analysis.total()
            return Counter(analysis.unsupported_ops())
    finally:
        model.train(was_training)
