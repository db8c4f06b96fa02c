"""fvcore's count of one forward pass in FLOPs (2 × its MACs), mapped onto the analytic breakdown.

``fvcore_analysis`` configures ``FlopCountAnalysis`` with the handles of
``harness.flops.fvcore_handles``; ``fvcore_count`` runs it in eval mode and maps its
``by_module`` counts onto the analytic breakdown keys (``BREAKDOWN_KEYS``,
``component_breakdown``); ``unsupported_operators`` lists what an unfiltered trace leaves
unhandled (for the ignore-list test).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from harness.flops.analytic import BREAKDOWN_KEYS
from harness.flops.fvcore_handles import IGNORED_OPS, matrix_op_handles
from harness.threads import torch_threads

# Counting runs small shapes op by op (the JIT tracer) on one thread: thread start-up and
# barriers would dominate, and on a CPU shared with other processes a two-thread
# ``index_add_`` can take 100 ms instead of 10 µs. The counts do not depend on it.


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
