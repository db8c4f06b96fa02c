"""FLOP accounting: analytic counts, budget planning, and measured cross-checks.

Modules: ``analytic`` (counts from the config), ``planner`` (budget → steps),
``fvcore_handles`` (which traced operators count, and how), ``fvcore_counts`` (fvcore's count
and its breakdown), ``cross_checks`` (FlopCounterMode's count; all three side by side).

FLOPs = 2 per multiply-add everywhere; see ``analytic.CONVENTION``.
"""

from harness.flops.analytic import (
    ATTENTION_FLOPS,
    BREAKDOWN_KEYS,
    CONVENTION,
    DEFAULT_ATTENTION_FLOPS,
    MFU_ATTENTION_FLOPS,
    attention_keys_per_query,
    check_attention_flops,
    convention,
    forward_breakdown,
    layer_forward_breakdown,
    forward_flops_per_token,
    image_prefix_flops_per_image,
    six_n_d,
    train_flops_per_token,
)
from harness.flops.cross_checks import FlopCounterCount, cross_check, flop_counter_count
from harness.flops.fvcore_counts import FvcoreCount, fvcore_count
from harness.flops.fvcore_handles import IGNORED_OPS, MATRIX_OPS
from harness.flops.planner import BudgetPlan, plan_budget, plan_tokens

__all__ = [
    "ATTENTION_FLOPS",
    "BREAKDOWN_KEYS",
    "CONVENTION",
    "DEFAULT_ATTENTION_FLOPS",
    "MFU_ATTENTION_FLOPS",
    "attention_keys_per_query",
    "check_attention_flops",
    "convention",
    "BudgetPlan",
    "FlopCounterCount",
    "FvcoreCount",
    "IGNORED_OPS",
    "MATRIX_OPS",
    "cross_check",
    "flop_counter_count",
    "fvcore_count",
    "forward_breakdown",
    "layer_forward_breakdown",
    "forward_flops_per_token",
    "image_prefix_flops_per_image",
    "plan_budget",
    "plan_tokens",
    "six_n_d",
    "train_flops_per_token",
]
