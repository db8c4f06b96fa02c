"""FLOP accounting: analytic counts, budget planning, and measured cross-checks (counters.py).

FLOPs = 2 per multiply-add everywhere; see ``analytic.CONVENTION``.
"""

from harness.flops.analytic import (
    BREAKDOWN_KEYS,
    CONVENTION,
    forward_breakdown,
    forward_flops_per_token,
    image_prefix_flops_per_image,
    six_n_d,
    train_flops_per_token,
)
from harness.flops.counters import (
    IGNORED_OPS,
    MATRIX_OPS,
    FlopCounterCount,
    FvcoreCount,
    cross_check,
    flop_counter_count,
    fvcore_count,
)
from harness.flops.planner import BudgetPlan, plan_budget

__all__ = [
    "BREAKDOWN_KEYS",
    "CONVENTION",
    "BudgetPlan",
    "FlopCounterCount",
    "FvcoreCount",
    "IGNORED_OPS",
    "MATRIX_OPS",
    "cross_check",
    "flop_counter_count",
    "fvcore_count",
    "forward_breakdown",
    "forward_flops_per_token",
    "image_prefix_flops_per_image",
    "plan_budget",
    "six_n_d",
    "train_flops_per_token",
]
