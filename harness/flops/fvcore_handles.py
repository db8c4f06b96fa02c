"""fvcore operator handles: which traced operators count, and how (MACs, 1 per multiply-add).

fvcore's ``FlopCountAnalysis`` traces the model with the JIT and sums per-operator handles.
fvcore counts one multiply-add as one "flop" (its numbers are MACs); ``harness.flops.fvcore_counts``
multiplies by 2. We register handles for every matrix-like operator our models run
(``MATRIX_OPS``, ``matrix_op_handles``):

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
"""

from __future__ import annotations

import math
from typing import Any

import torch

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
